"""The SARE paper's comparison on real imagery: Nordland winter queries against the summer database.

    nice -n 10 .venv/bin/python benchmarks/nordland_table.py          # every row (about 1.5 h on 2 cores)
    nice -n 10 .venv/bin/python benchmarks/nordland_table.py --tiny   # the same commands at a tiny budget

Every row is run through the project's own commands, in sequence, and the exact command lines are recorded:

    manifest   .venv/bin/python benchmarks/nordland_manifest.py
    off-the-shelf rows   sare eval --manifest ... --model pretrained:efficientnet_lite0-{gem,netvlad}
               (the configs' model: cut, input size, clusters; NetVLAD centroids by k-means and PCA whitening
               fitted on the training range's database images)
    trained rows         sare train --config configs/nordland_<loss>.yaml      (timed: the training budget)
                         sare eval --manifest ... --model runs/nordland_<loss>/model.pt

Each model is scored on the validation range (frames [1550, 2382): 832 winter queries against 832 summer
images), Recall@1/5/10 with positives within +-2 frames. The configs fit no PCA whitening (it hurts here);
the last row retrains SARE-joint with 512-dim whitening and scores it with and without it
(`--set strip_whitening=true`). Results: results/nordland_table.json, and the table between the markers
in docs/RESULTS.md (not with --tiny). Rows run in order; --rows picks some (also the learning-rate check
rows, EXTRA_ROWS, which the default run leaves out), --reuse keeps finished runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SARE = ".venv/bin/sare"
PYTHON = ".venv/bin/python"
MANIFEST = "data/nordland/manifest.parquet"
BASE_CONFIG = "configs/nordland_triplet.yaml"  # the model section every config shares
NS = (1, 5, 10)
# (label, key, config, extra --set overrides); the last row is an ablation: the same SARE-joint run with PCA
# whitening (512 dims, fitted on the training range's summer database), scored with and without it.
LOSS_ROWS = [
    ("triplet", "triplet", "configs/nordland_triplet.yaml", []),
    ("SARE-ind gaussian", "sare_ind_gaussian", "configs/nordland_sare_ind_gaussian.yaml", []),
    ("SARE-joint gaussian", "sare_joint_gaussian", "configs/nordland_sare_joint_gaussian.yaml", []),
    ("SARE-ind cauchy", "sare_ind_cauchy", "configs/nordland_sare_ind_cauchy.yaml", []),
    ("SARE-ind exponential", "sare_ind_exponential", "configs/nordland_sare_ind_exponential.yaml", []),
    ("SARE-joint gaussian + PCA whitening 512 (ablation)", "sare_joint_gaussian_w512",
     "configs/nordland_sare_joint_gaussian.yaml", ["model.whitening_dim=512"]),
]
# Learning-rate check, not in the default run (--rows ...): SARE-ind sums one term per negative (10), so its
# gradients are about 10x SARE-joint's at the same learning rate.
EXTRA_ROWS = [
    ("SARE-ind gaussian, lr 1e-4", "sare_ind_gaussian_lr1e-4", "configs/nordland_sare_ind_gaussian.yaml",
     ["lr=0.0001"]),
    ("SARE-ind cauchy, lr 1e-4", "sare_ind_cauchy_lr1e-4", "configs/nordland_sare_ind_cauchy.yaml", ["lr=0.0001"]),
    ("SARE-ind exponential, lr 1e-4", "sare_ind_exponential_lr1e-4", "configs/nordland_sare_ind_exponential.yaml",
     ["lr=0.0001"]),
    ("triplet, lr 1e-4", "triplet_lr1e-4", "configs/nordland_triplet.yaml", ["lr=0.0001"]),
]
OFF_THE_SHELF_ROWS = [
    ("off-the-shelf GeM", "offtheshelf_gem", "pretrained:efficientnet_lite0-gem"),
    ("off-the-shelf NetVLAD (k-means)", "offtheshelf_netvlad", "pretrained:efficientnet_lite0-netvlad"),
]
TINY_TRAIN = ["epochs=1", "max_train_queries=16", "chunk_size=16", "negative_pool=100", "max_val_queries=50",
              "centroid_images=50"]
TABLE_START, TABLE_END = "<!-- nordland-table:start -->", "<!-- nordland-table:end -->"


def sh(command: list[str], log_path: str) -> float:
    """Run `command` in the repository, output to `log_path`; returns its wall seconds; raises on failure."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    print("$ " + " ".join(command), flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"exit status {code} after {seconds:.0f} s: {' '.join(command)} (log: {log_path})")
    return seconds


def eval_command(models: list[str], out_dir: str, strip: bool, extra: list[str]) -> list[str]:
    command = [SARE, "eval", "--manifest", MANIFEST, "--split", "val", "--ns", ",".join(map(str, NS)),
               "--out-dir", out_dir]
    for m in models:
        command += ["--model", m]
    command += extra
    if strip:
        command += ["--set", "strip_whitening=true"]
    return command


def read_recalls(out_dir: str) -> dict:
    with open(os.path.join(REPO, out_dir, "manifest_eval.json")) as f:
        record = json.load(f)
    (result,) = record["results"].values()
    return {str(n): 100 * float(result["recalls"][str(n)]) for n in NS}


def run_evals(name: str, model: str, out_base: str, extra: list[str], logs: str, raw_too: bool) -> dict:
    """The model's scores (with its whitening, if any; `raw_too`: also without it), with the command lines."""
    row: dict = {}
    for key, strip in (("recall", False), ("recall_without_whitening", True))[: 2 if raw_too else 1]:
        out_dir = f"{out_base}/{key}"
        command = eval_command([f"{name}={model}"], out_dir, strip, extra)
        row[f"{key}_seconds"] = sh(command, f"{logs}/{name}_eval_{key}.log")
        row[key] = read_recalls(out_dir)
        row[f"{key}_command"] = " ".join(command)
    return row


def format_table(rows: list[dict]) -> str:
    head = ("| model | R@1 | R@5 | R@10 | best epoch | training time | load average (1 min) before / after |\n"
            "| --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error'][:80]} | | | | | |")
            continue
        w = r["recall"]
        epoch = str(r.get("best_epoch", "-"))
        train = f"{r['train_seconds'] / 60:.1f} min" if "train_seconds" in r else "-"
        load = (f"{r['load_average_before'][0]:.1f} / {r['load_average_after'][0]:.1f}"
                if "load_average_before" in r else "-")
        lines.append(f"| {r['label']} | {w['1']:.1f} | {w['5']:.1f} | {w['10']:.1f} | {epoch} | {train} | {load} |")
        if "recall_without_whitening" in r:
            raw = r["recall_without_whitening"]
            lines.append(f"| same model without its whitening | {raw['1']:.1f} | {raw['5']:.1f} | {raw['10']:.1f} "
                         f"| | | |")
    return "\n".join(lines)


def update_results_md(table: str, rows: list[dict], path: str) -> None:
    commands = ["```bash", f"{PYTHON} benchmarks/nordland_manifest.py"]
    for r in rows:
        if "error" in r:
            continue
        commands.append(f"# {r['label']}")
        if "train_command" in r:
            commands.append(r["train_command"])
        commands.append(r["recall_command"])
        if "recall_without_whitening_command" in r:
            commands.append(r["recall_without_whitening_command"])
    commands.append("```")
    block = f"{TABLE_START}\n{table}\n\nThe commands, row by row:\n\n" + "\n".join(commands) + f"\n{TABLE_END}"
    text = open(path).read() if os.path.exists(path) else f"# Results\n\n{TABLE_START}\n{TABLE_END}\n"
    if TABLE_START not in text:
        text += f"\n{TABLE_START}\n{TABLE_END}\n"
    text = re.sub(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), lambda _: block, text, flags=re.S)
    with open(path, "w") as f:
        f.write(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny training budget (checks the plumbing)")
    parser.add_argument("--rows", help="comma-separated row keys (default: all), e.g. offtheshelf_gem,triplet")
    parser.add_argument("--reuse", action="store_true", help="keep a finished run whose history.json holds the "
                        "same config instead of retraining it (its recorded training time is kept)")
    parser.add_argument("--out", default=None, help="results JSON (default results/nordland_table[_tiny].json)")
    args = parser.parse_args(argv)
    suffix = "_tiny" if args.tiny else ""
    out_json = args.out or os.path.join(REPO, "results", f"nordland_table{suffix}.json")
    logs = os.path.join(REPO, "results", f"nordland_logs{suffix}")
    wanted = set(args.rows.split(",")) if args.rows else None
    previous = {}
    if os.path.exists(out_json):
        with open(out_json) as f:
            previous = {r["key"]: r for r in json.load(f).get("rows", []) if "recall" in r or "error" in r}

    manifest_command = [PYTHON, "benchmarks/nordland_manifest.py"]
    sh(manifest_command, f"{logs}/manifest.log")
    rows: list[dict] = []
    started = time.time()

    def save():
        os.makedirs(os.path.dirname(out_json), exist_ok=True)
        keep = {r["key"]: r for r in previous.values()}
        keep.update({r["key"]: r for r in rows})
        order = [k for _, k, _ in OFF_THE_SHELF_ROWS] + [k for _, k, _, _ in LOSS_ROWS + EXTRA_ROWS]
        with open(out_json, "w") as f:
            json.dump({"tiny": args.tiny, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                       "manifest_command": " ".join(manifest_command), "started": time.ctime(started),
                       "rows": [keep[k] for k in order if k in keep]}, f, indent=2)
        return [keep[k] for k in order if k in keep]

    eval_base = "runs/nordland_eval" + suffix
    for label, key, spec in OFF_THE_SHELF_ROWS:
        if wanted and key not in wanted:
            continue
        extra = ["--model-config", BASE_CONFIG, "--fit-split", "train"]
        try:
            row = {"label": label, "key": key, **run_evals(key, spec, f"{eval_base}/{key}", extra, logs, False)}
        except RuntimeError as exc:
            row = {"label": label, "key": key, "error": str(exc)}
        rows.append(row)
        print(f"{label}: {row.get('recall')}", flush=True)
        save()

    for label, key, config, overrides in LOSS_ROWS + EXTRA_ROWS:
        if (wanted and key not in wanted) or (not wanted and (label, key, config, overrides) in EXTRA_ROWS):
            continue
        name = f"nordland_{key}{suffix}"
        train_command = [SARE, "train", "--config", config]
        sets = overrides + (TINY_TRAIN if args.tiny else [])
        if sets or name != f"nordland_{os.path.basename(config)[len('nordland_'):-len('.yaml')]}":
            sets = [f"name={name}"] + sets
        train_command += [x for s in sets for x in ("--set", s)]
        run_dir = os.path.join(REPO, "runs", name)
        row = {"label": label, "key": key, "train_command": " ".join(train_command)}
        load_before = os.getloadavg()
        try:
            reused = False
            if args.reuse and key in previous and "train_seconds" in previous[key] \
                    and os.path.exists(os.path.join(run_dir, "model.pt")):
                row["train_seconds"] = previous[key]["train_seconds"]
                reused = True
            else:
                shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not a resumed one
                row["train_seconds"] = sh(train_command, f"{logs}/{key}_train.log")
            row["reused_training"] = reused
            row["load_average_before"] = load_before
            row["load_average_after"] = os.getloadavg()
            with open(os.path.join(run_dir, "history.json")) as f:
                history = json.load(f)
            row["best_epoch"] = history["best_epoch"]
            row["history"] = history["history"]
            row.update(run_evals(key, f"runs/{name}/model.pt", f"{eval_base}/{key}", [], logs,
                                  any(o.startswith("model.whitening_dim=") for o in overrides)))
        except RuntimeError as exc:
            row["error"] = str(exc)
        rows.append(row)
        print(f"{label}: trained in {row.get('train_seconds', 0) / 60:.1f} min; {row.get('recall')}"
              + (f" / without whitening {row['recall_without_whitening']}" if "recall_without_whitening" in row
                 else ""), flush=True)
        save()

    all_rows = save()
    # docs/RESULTS.md's main table holds the default rows; the learning-rate check rows (EXTRA_ROWS) stay in
    # the JSON and the printed table, and RESULTS.md describes them in their own section.
    extra_keys = {k for _, k, _, _ in EXTRA_ROWS}
    print(format_table(all_rows))
    if not args.tiny:
        main_rows = [r for r in all_rows if r["key"] not in extra_keys]
        update_results_md(format_table(main_rows), main_rows, os.path.join(REPO, "docs", "RESULTS.md"))
        print("updated docs/RESULTS.md")
    print(f"wrote {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SARE against triplet and contrastive on real images, measured fairly: Nordland winter queries against the
summer database, one `sare tune` sweep per loss, the winners retrained with three seeds, scored once on a
held-out test range.

    nice -n 10 .venv/bin/python benchmarks/nordland_study.py manifest     # three frame ranges (below)
    nice -n 10 .venv/bin/python benchmarks/nordland_study.py sweep        # every loss (or name some)
    nice -n 10 .venv/bin/python benchmarks/nordland_study.py export       # winners -> configs/nordland_<loss>.yaml
    nice -n 10 .venv/bin/python benchmarks/nordland_study.py final        # winners x seeds 0,1,2: train, test
    .venv/bin/python benchmarks/nordland_study.py table                   # results/nordland_study/summary.json
    nice -n 10 .venv/bin/python benchmarks/nordland_study.py screen sare_joint_gaussian --seeds 0 \
        --label clip7_lr4e-3 --set max_grad_norm=7 --set lr=0.004           # a follow-up, validation only

Protocol (`benchmarks/nordland_manifest.py`): frames [0, 1300) train, [1350, 1850) validation, [1900, 2382)
test; the 50-frame gaps exceed the negatives' radius (10 frames). Every choice is made on validation: the
sweeps rank trials by validation Recall@1 (`configs/sweep_nordland_<loss>.yaml`: random search, the same
number of trials and the same ASHA schedule for every loss, over the learning rate and the loss's own
parameter: the margin, or the temperature and for the non-gaussian sweeps the kernel), and `sare train`
keeps the epoch with the best validation Recall@1. The test range is scored once per final model
(`sare eval --manifest ... --split test`), and once for the off-the-shelf NetVLAD.

Every step runs the project's own commands and is resumable: a sweep resumes where Tune left it, a final
run or evaluation whose result file exists is not redone. Results land in results/nordland_study/ as they
finish: sweep_<loss>.json (every trial and epoch), final_<loss>_seed<S>.json (validation by epoch, the
test recalls, commands, timings), offtheshelf.json, summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SARE = [sys.executable, "-m", "pipelines.cli"]
MANIFEST = "data/nordland/manifest.parquet"
BASE_CONFIG = "configs/nordland_base.yaml"
RESULTS = "results/nordland_study"
NS = (1, 5, 10)
SEEDS = (0, 1, 2)
# The losses compared, in table order: key -> label.
LOSSES = {
    "triplet": "triplet (margin)",
    "contrastive": "contrastive (margin)",
    "sare_ind_gaussian": "SARE-ind, gaussian kernel",
    "sare_ind_other": "SARE-ind, best other kernel",
    "sare_joint_gaussian": "SARE-joint, gaussian kernel",
    "sare_joint_other": "SARE-joint, best other kernel",
}


def sh(command: list[str], log_path: str) -> float:
    """Run `command` in the repository with its output in `log_path`; its wall seconds; raises on failure."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    shown = ["sare"] + command[len(SARE):] if command[: len(SARE)] == SARE else command
    print("$ " + " ".join(shown), flush=True)
    started = time.perf_counter()
    with open(log_path, "a") as log:
        code = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"exit status {code} after {seconds:.0f} s: {' '.join(command)} (log: {log_path})")
    return seconds


def result_path(name: str) -> str:
    return os.path.join(REPO, RESULTS, f"{name}.json")


def write_result(name: str, record: dict) -> None:
    path = result_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {**record, "host": platform.node(), "python": platform.python_version(),
              "load_average_end": os.getloadavg(), "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(path, "w") as f:
        json.dump(record, f, indent=2, default=str)
    print(f"wrote {os.path.relpath(path, REPO)}", flush=True)


def read_result(name: str) -> dict | None:
    path = result_path(name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def sweep_config_path(loss: str) -> str:
    return f"configs/sweep_nordland_{loss}.yaml"


def sweep_dir(loss: str) -> str:
    config = yaml.safe_load(open(os.path.join(REPO, sweep_config_path(loss))))
    return os.path.join(REPO, config.get("storage_path", "runs"), config["name"])


def run_sweep(loss: str) -> None:
    """`sare tune` of one loss (resumes an interrupted sweep), then its trials and epochs as JSON."""
    import pyarrow.parquet as pq

    if read_result(f"sweep_{loss}") is not None:
        print(f"sweep {loss}: done")
        return
    command = SARE + ["tune", "--config", sweep_config_path(loss)]
    seconds = sh(command, os.path.join(REPO, "runs/nordland_study/logs", f"sweep_{loss}.log"))
    directory = sweep_dir(loss)
    trials = pq.read_table(os.path.join(directory, "results.parquet")).to_pylist()
    epochs = pq.read_table(os.path.join(directory, "epochs.parquet")).to_pylist()
    best = next((t for t in trials if t.get("value") is not None), None)
    write_result(f"sweep_{loss}", {
        "loss": loss, "command": " ".join(["sare"] + command[3:]), "config": sweep_config_path(loss),
        "seconds_this_call": seconds, "metric": "val_recall@1", "best": best, "trials": trials,
        "epochs": epochs})


def best_params(loss: str) -> dict:
    """The winning trial's sampled values, from the sweep's results file."""
    record = read_result(f"sweep_{loss}")
    if record is None or record["best"] is None:
        raise SystemExit(f"sweep {loss}: no finished sweep result yet (run the sweep step)")
    sweep = yaml.safe_load(open(os.path.join(REPO, sweep_config_path(loss))))
    return {key: record["best"][f"param:{key}"] for key in sweep["search_space"]}


def export_winner(loss: str) -> str:
    """configs/nordland_<loss>.yaml: the base config with the sweep's best values, standalone for `sare train`."""
    sys.path.insert(0, REPO)
    from sare_core.config_io import merge, read_yaml_mapping, set_path

    sweep = read_yaml_mapping(os.path.join(REPO, sweep_config_path(loss)))
    data = merge(read_yaml_mapping(os.path.join(REPO, BASE_CONFIG)), sweep.get("train", {}))
    params = best_params(loss)
    for key, value in params.items():
        set_path(data, key, value)
    data["name"] = f"nordland_{loss}"
    path = f"configs/nordland_{loss}.yaml"
    record = read_result(f"sweep_{loss}")["best"]
    header = (f"# Nordland winter vs summer, {LOSSES[loss]}: the winner of `sare tune --config "
              f"{sweep_config_path(loss)}`\n"
              f"# (trial {record['trial']}, validation Recall@1 {100 * record['value']:.1f} at epoch "
              f"{record['best_epoch']}), written by benchmarks/nordland_study.py export.\n"
              f"#   .venv/bin/python benchmarks/nordland_manifest.py    # data/nordland/manifest.parquet\n"
              f"#   .venv/bin/sare train --config {path}\n"
              f"#   .venv/bin/sare eval --manifest {MANIFEST} --split test --model runs/nordland_{loss}/model.pt\n"
              f"# Searched: {', '.join(f'{k} = {v:.4g}' if isinstance(v, float) else f'{k} = {v}' for k, v in params.items())}\n")
    with open(os.path.join(REPO, path), "w") as f:
        f.write(header + yaml.safe_dump(data, sort_keys=False))
    print(f"wrote {path}: {params}")
    return path


def read_eval(out_dir: str) -> dict:
    with open(os.path.join(REPO, out_dir, "manifest_eval.json")) as f:
        record = json.load(f)
    (result,) = record["results"].values()
    return {str(n): 100 * float(result["recalls"][str(n)]) for n in NS}


def eval_command(model: str, out_dir: str, extra: list[str] | None = None) -> list[str]:
    return SARE + ["eval", "--manifest", MANIFEST, "--split", "test", "--ns", ",".join(map(str, NS)),
                   "--out-dir", out_dir, "--model", model] + (extra or [])


def sweep_winner_run(loss: str) -> dict | None:
    """The sweep's winning trial, when it ran the winner config to the end with the base seed: that trial is
    `sare train --config configs/nordland_<loss>.yaml` with seed 0 (its validation stores change nothing in
    training), and `sare tune`'s finalisation already picked its best epoch on validation and saved the model."""
    record = read_result(f"sweep_{loss}")
    best = (record or {}).get("best") or {}
    base_seed = yaml.safe_load(open(os.path.join(REPO, BASE_CONFIG))).get("seed", 0)
    if best.get("status") != "completed" or not best.get("final_model") or not os.path.isfile(best["final_model"]):
        return None
    with open(os.path.join(best["trial_dir"], "final", "summary.json")) as f:
        if json.load(f)["epoch"] != best["best_epoch"]:  # the kept checkpoint is not the best epoch's
            return None
    rows = sorted((e for e in record["epochs"] if e["trial"] == best["trial"]), key=lambda e: e["epoch"])
    return {"seed": base_seed, "model": best["final_model"], "best_epoch": best["best_epoch"], "history": rows,
            "trial_dir": best["trial_dir"]}


def train_config(config: str, run_name: str, seed: int, overrides: list[str], log_path: str):
    """`sare train --config config` with `seed` and `overrides` as runs/nordland_study/<run_name>; returns the
    command, its wall seconds, the run's history.json and the load average before it."""
    train = SARE + ["train", "--config", config, "--set", f"seed={seed}", "--set", f"name={run_name}",
                    "--set", "storage_path=runs/nordland_study"] + [a for o in overrides for a in ("--set", o)]
    load_before = os.getloadavg()
    seconds = sh(train, log_path)
    with open(os.path.join(REPO, "runs/nordland_study", run_name, "history.json")) as f:
        return train, seconds, json.load(f), load_before


def screened_run(loss: str, label: str, overrides: list[str], seed: int) -> dict | None:
    """The screen's run of (loss, label) with `seed`, when it trained these overrides and kept its model."""
    record = read_result(f"screen_{loss}_{label}_seed{seed}")
    run_dir = os.path.join(REPO, "runs/nordland_study", f"screen_{loss}_{label}_seed{seed}")
    if record is None or record["overrides"] != overrides or not os.path.isfile(os.path.join(run_dir, "model.pt")):
        return None
    return {**record, "model": os.path.relpath(os.path.join(run_dir, "model.pt"), REPO)}


def run_final(loss: str, seed: int, label: str | None = None, overrides: list[str] | None = None) -> None:
    """Train the winner config with `seed`, pick its best epoch on validation, score it once on test. For the
    base seed the sweep's winning trial is that run already: its final model is scored, not retrained.
    With `label`: the screened variant (the winner config with `overrides`), final_<loss>_<label>_seed<S>;
    a seed the screen trained is scored, not retrained."""
    overrides = list(overrides or [])
    key = f"{loss}_{label}" if label else loss
    name = f"final_{key}_seed{seed}"
    if read_result(name) is not None:
        print(f"{name}: done")
        return
    config = f"configs/nordland_{loss}.yaml"
    logs = os.path.join(REPO, "runs/nordland_study/logs")
    screened = screened_run(loss, label, overrides, seed) if label else None
    if screened is not None:
        out_dir = f"runs/nordland_study/eval/{name}"
        evaluate = eval_command(f"{key}={screened['model']}", out_dir)
        eval_seconds = sh(evaluate, f"{logs}/{name}_eval.log")
        write_result(name, {
            "loss": loss, "label": label, "overrides": overrides, "seed": seed, "config": config,
            "train_command": screened["train_command"] + " (the screen's run)",
            "eval_command": " ".join(["sare"] + evaluate[3:]), "train_seconds": screened["train_seconds"],
            "eval_seconds": eval_seconds, "best_epoch": screened["best_epoch"],
            "val_recall": screened["val_recall"], "test_recall": read_eval(out_dir),
            "history": screened["history"], "reused_screen_run": True})
        return
    winner = None if label else sweep_winner_run(loss)
    if winner is not None and winner["seed"] == seed:
        out_dir = f"runs/nordland_study/eval/{name}"
        evaluate = eval_command(f"{loss}={winner['model']}", out_dir)
        eval_seconds = sh(evaluate, f"{logs}/{name}_eval.log")
        best = next(h for h in winner["history"] if h["epoch"] == winner["best_epoch"])
        write_result(name, {
            "loss": loss, "seed": seed, "config": config,
            "train_command": f"sare tune --config {sweep_config_path(loss)} (winning trial {winner['trial_dir']}; "
                             f"the same run as sare train --config {config})",
            "eval_command": " ".join(["sare"] + evaluate[3:]), "train_seconds": None,
            "eval_seconds": eval_seconds, "best_epoch": winner["best_epoch"],
            "val_recall": {str(n): 100 * best[f"val_recall@{n}"] for n in NS}, "test_recall": read_eval(out_dir),
            "history": winner["history"], "reused_sweep_trial": True})
        return
    run_name = f"nordland_{key}_seed{seed}"
    train, train_seconds, history, load_before = train_config(config, run_name, seed, overrides,
                                                              f"{logs}/{name}_train.log")
    out_dir = f"runs/nordland_study/eval/{name}"
    evaluate = eval_command(f"{key}=runs/nordland_study/{run_name}/model.pt", out_dir)
    eval_seconds = sh(evaluate, f"{logs}/{name}_eval.log")
    best = next(h for h in history["history"] if h["epoch"] == history["best_epoch"])
    write_result(name, {
        "loss": loss, "seed": seed, "config": config, "train_command": " ".join(["sare"] + train[3:]),
        **({"label": label, "overrides": overrides} if label else {}),
        "eval_command": " ".join(["sare"] + evaluate[3:]), "train_seconds": train_seconds,
        "eval_seconds": eval_seconds, "load_average_before": load_before, "best_epoch": history["best_epoch"],
        "val_recall": {str(n): 100 * best[f"val_recall@{n}"] for n in NS}, "test_recall": read_eval(out_dir),
        "history": history["history"], "train_config": history["config"]})


def run_screen(loss: str, label: str, overrides: list[str], seed: int) -> None:
    """A follow-up screen of the winner config of `loss` with `overrides` (k=v, as `sare train --set`): trained
    with `seed`, scored on validation only (the test range is left for the finals). Writes
    screen_<loss>_<label>_seed<S>.json: the overrides, the validation recall and gradient norms by epoch."""
    name = f"screen_{loss}_{label}_seed{seed}"
    if read_result(name) is not None:
        print(f"{name}: done")
        return
    config = f"configs/nordland_{loss}.yaml"
    train, seconds, history, load_before = train_config(config, name, seed, overrides,
                                                        os.path.join(REPO, f"runs/nordland_study/logs/{name}.log"))
    best = next(h for h in history["history"] if h["epoch"] == history["best_epoch"])
    write_result(name, {
        "loss": loss, "label": label, "overrides": overrides, "seed": seed, "config": config,
        "train_command": " ".join(["sare"] + train[3:]), "train_seconds": seconds,
        "load_average_before": load_before, "best_epoch": history["best_epoch"],
        "val_recall": {str(n): 100 * best[f"val_recall@{n}"] for n in NS}, "history": history["history"]})


def run_offtheshelf() -> None:
    """The k-means NetVLAD (the trained models' starting point) scored once on test."""
    if read_result("offtheshelf") is not None:
        return
    out_dir = "runs/nordland_study/eval/offtheshelf"
    command = eval_command("offtheshelf_netvlad=pretrained:efficientnet_lite0-netvlad", out_dir,
                           ["--model-config", BASE_CONFIG, "--fit-split", "train"])
    seconds = sh(command, os.path.join(REPO, "runs/nordland_study/logs/offtheshelf_eval.log"))
    write_result("offtheshelf", {"command": " ".join(["sare"] + command[3:]), "seconds": seconds,
                                 "test_recall": read_eval(out_dir)})


def variants() -> dict[str, str]:
    """The screened variants that have finals (`final --label L --set ...`): "<loss>_<label>" -> a label
    naming the loss and its overrides, in file order."""
    import glob

    found = {}
    for path in sorted(glob.glob(os.path.join(REPO, RESULTS, "final_*_seed*.json"))):
        with open(path) as f:
            record = json.load(f)
        if record.get("label"):
            found[f"{record['loss']}_{record['label']}"] = f"{LOSSES[record['loss']]}, {', '.join(record['overrides'])}"
    return found


def summarise() -> dict:
    """Mean and spread (sample standard deviation, min, max) over seeds of each loss's test recalls."""
    import statistics

    rows = []
    for loss, label in {**LOSSES, **variants()}.items():
        runs = [r for r in (read_result(f"final_{loss}_seed{s}") for s in SEEDS) if r is not None]
        sweep = read_result(f"sweep_{loss}")
        row = {"loss": loss, "label": label, "seeds": [r["seed"] for r in runs],
               "params": best_params(loss) if sweep and sweep.get("best") else None}
        if loss not in LOSSES and runs:
            base = runs[0]["loss"]
            base_sweep = read_result(f"sweep_{base}")
            row["base_loss"], row["overrides"] = base, runs[0]["overrides"]
            row["params"] = best_params(base) if base_sweep and base_sweep.get("best") else None
        for split in ("val", "test"):
            for n in NS:
                values = [r[f"{split}_recall"][str(n)] for r in runs]
                row[f"{split}_R@{n}"] = {
                    "values": values, "mean": statistics.mean(values) if values else None,
                    "std": statistics.stdev(values) if len(values) > 1 else None,
                    "min": min(values) if values else None, "max": max(values) if values else None}
        row["best_epochs"] = [r["best_epoch"] for r in runs]
        row["train_minutes"] = [r["train_seconds"] / 60 for r in runs if r.get("train_seconds") is not None]
        rows.append(row)
    summary = {"rows": rows, "offtheshelf": read_result("offtheshelf")}
    write_result("summary", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("manifest", "sweep", "export", "final", "screen", "table", "all"))
    parser.add_argument("losses", nargs="*", help=f"default: all of {list(LOSSES)}")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--label", help="screen, final: names a variant of the winner config, as in "
                        "screen_<loss>_<label>_seed<S>.json and final_<loss>_<label>_seed<S>.json")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="screen, final: a `sare train --set` override of the winner config (repeatable)")
    args = parser.parse_args(argv)
    losses = args.losses or list(LOSSES)
    unknown = [loss for loss in losses if loss not in LOSSES]
    if unknown:
        parser.error(f"unknown losses {unknown}; choose from {list(LOSSES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if bool(args.label) != bool(args.overrides) or (args.step == "screen" and not args.label):
        parser.error("a variant needs both --label and at least one --set (screen always names one)")
    if args.label and args.step not in ("screen", "final"):
        parser.error(f"--label and --set belong to the screen and final steps, not to {args.step!r}")
    if args.label and not args.losses:
        parser.error("name the loss(es) whose winner config the variant changes")
    if args.step in ("manifest", "all"):
        sh([sys.executable, "benchmarks/nordland_manifest.py"], os.path.join(REPO, "runs/nordland_study/logs/manifest.log"))
    if args.step in ("sweep", "all"):
        for loss in losses:
            run_sweep(loss)
    if args.step in ("export", "all"):
        for loss in losses:
            export_winner(loss)
    if args.step in ("final", "all"):
        run_offtheshelf()
        for seed in seeds:  # seed-major: every loss gets its first seed before any gets a second
            for loss in losses:
                run_final(loss, seed, args.label, args.overrides)
    if args.step == "screen":
        for seed in seeds:
            for loss in losses:
                run_screen(loss, args.label, args.overrides, seed)
    if args.step in ("table", "all"):
        summarise()
    return 0


if __name__ == "__main__":
    sys.exit(main())

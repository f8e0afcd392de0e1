"""Two models over one image set: one extraction per model (`run` twice) against one extraction for both
(`run_many`: each image decoded once, the frozen prefix the models share run once), the latter also with
each layout forced ("together_actors", "together_driver"; the automatic plan takes the actors for this job,
two models over 3,400 images, and the driver for each model alone).

The models are a finished demo's off-the-shelf and trained models (configs/demo.yaml: EfficientNet-Lite0 cut
at blocks6, trained from blocks4, NetVLAD 16, 120x160), which share everything before blocks4; the images
are that demo's test area (3,000 database images and 400 queries), the demo's own extraction stage. The
ways alternate (--rounds, the order reversed every other round) on one local Ray instance started
beforehand, workers at niceness 0. Per way: wall seconds and CPU seconds of this process and every process
it started (`extract_throughput.CpuMeter`); their ratios to `separate` per round and the median.
The stores of `separate` and `together` are compared: the same descriptors, to the bit when both ran the same
layout and up to float rounding when not (the actors run one torch thread, the driver several); the largest
difference is recorded. The forced layouts' stores are timed only.

    .venv/bin/python benchmarks/extract_many.py --demo-dir runs/demo_seeds/default/seed0 --rounds 3

Results: results/extract_many.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from extract_throughput import CpuMeter, max_difference  # noqa: E402

from pipelines.extract.config import ExtractConfig  # noqa: E402
from pipelines.extract.pipeline import run, run_many  # noqa: E402
from sare_core.models.io import load_model  # noqa: E402
from sare_core.models.shared_prefix import frozen_prefix_digest  # noqa: E402

MODELS = {"off_the_shelf": "runs/demo/off_the_shelf_model.pt", "trained": "runs/demo/model.pt"}


WAYS = {"separate": "auto", "together": "auto",  # way -> layout
        "together_actors": "actors", "together_driver": "driver"}


def configs(manifest: str, models: dict[str, str], folder: str, split: str, layout: str = "auto") -> list[ExtractConfig]:
    return [ExtractConfig(dataset=manifest, model=path, out=os.path.join(folder, name), splits=[split],
                          progress_bars=False, layout=layout) for name, path in models.items()]


def timed(way: str, manifest: str, models: dict[str, str], folder: str, split: str) -> dict:
    """Extract with both models one way into new stores under `folder`; wall and CPU seconds."""
    todo = configs(manifest, models, folder, split, WAYS[way])
    with CpuMeter() as cpu:
        start = time.perf_counter()
        results = [run(config) for config in todo] if way == "separate" else run_many(todo)
        wall = time.perf_counter() - start
    return {"wall_s": wall, "cpu_s": cpu.seconds, "images": results[0].total, "layout": results[0].plan["layout"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-dir", default="runs/demo", help="a finished `sare demo` out_dir")
    parser.add_argument("--split", default="test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(REPO, "results", "extract_many.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import ray
    import torch

    manifest = os.path.join(args.demo_dir, "city", "manifest.parquet")
    models = {name: os.path.join(args.demo_dir, path) for name, path in MODELS.items()}
    for path in (manifest, *models.values()):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--demo-dir: {path} is missing (run `sare demo` with that out_dir first)")
    digests = {name: frozen_prefix_digest(load_model(path)) for name, path in models.items()}
    work = tempfile.mkdtemp(prefix="extract_many_")
    os.environ["RAY_worker_niceness"] = "0"  # as the driver, so that other load does not decide the ratio
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rounds = []
    try:
        warm = os.path.join(work, "warm")  # worker processes started and libraries loaded before timing
        run_many(configs(manifest, models, warm, args.split))
        shutil.rmtree(warm)
        for r in range(args.rounds):
            order = tuple(WAYS) if r % 2 == 0 else tuple(WAYS)[::-1]
            row = {way: timed(way, manifest, models, os.path.join(work, f"{r}-{way}"), args.split) for way in order}
            row["order"] = list(order)
            for way in WAYS:
                if way == "separate":
                    continue
                row[f"{way}_wall_ratio"] = row[way]["wall_s"] / row["separate"]["wall_s"]
                row[f"{way}_cpu_ratio"] = row[way]["cpu_s"] / row["separate"]["cpu_s"]
            row["max_abs_difference"] = max(max_difference(os.path.join(work, f"{r}-separate", name),
                                                           os.path.join(work, f"{r}-together", name))
                                            for name in models)
            rounds.append(row)
            print(f"round {r}: " + ", ".join(f"{way} {row[way]['wall_s']:.1f} s wall / {row[way]['cpu_s']:.1f} CPU-s "
                                             f"({row[way]['layout']})" for way in WAYS)
                  + f"; max |diff| separate vs together {row['max_abs_difference']}", flush=True)
            for way in order:
                shutil.rmtree(os.path.join(work, f"{r}-{way}"))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    record = {
        "command": "python benchmarks/extract_many.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "models": models, "frozen_prefix_digests": digests, "shared_prefix": len(set(digests.values())) == 1,
        "manifest": manifest, "split": args.split, "rounds": rounds,
        **{f"median_{way}_{kind}_ratio": statistics.median(r[f"{way}_{kind}_ratio"] for r in rounds)
           for way in WAYS if way != "separate" for kind in ("wall", "cpu")},
        "max_abs_difference": max(r["max_abs_difference"] for r in rounds),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "ray": ray.__version__, "load_avg_at_end": os.getloadavg()},
        "written": time.strftime("%Y-%m-%d %H:%M"),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print("median against separate: " + ", ".join(
        f"{way} wall {record[f'median_{way}_wall_ratio']:.3f} CPU {record[f'median_{way}_cpu_ratio']:.3f}"
        for way in WAYS if way != "separate") + f"; descriptors differ by at most {record['max_abs_difference']}; {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

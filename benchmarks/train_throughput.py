"""Training throughput of `sare train`: tuples/s with 1 and with 2 Ray Train workers on one machine, and
re-mining's share of an epoch.

Each run is one epoch of the real training stage (`pipelines.train.run`: TorchTrainer, DDP over gloo,
re-mining before every chunk) on the synthetic city, with the demo's model unless overridden. The machine's
CPUs are split evenly among the workers (1 worker x 2 threads, 2 workers x 1 thread on a 2-core machine), so
the runs compare ways of using the same cores. From the epoch's history row:

  * epoch tuples/s: tuples trained / epoch seconds (re-mining included, validation excluded);
  * training tuples/s: tuples trained / (epoch seconds - re-mining seconds);
  * re-mining fraction: seconds spent extracting the chunk caches and mining / epoch seconds.

    .venv/bin/python benchmarks/train_throughput.py                   # small city, demo model
    .venv/bin/python benchmarks/train_throughput.py --preset tiny --queries 32 --chunk 16   # a quick check

Results go to results/train_throughput.json (with the load average before and after each run: timings from
a busy machine say so).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipelines.train.driver import run as train_run  # noqa: E402
from sare_core.data.synth.city import city_is_current, generate_city  # noqa: E402
from sare_core.training.config import TrainConfig  # noqa: E402


def ensure_city(city_dir: str, preset: str, seed: int) -> str:
    """The city's manifest, generating the city unless city_dir already holds it as this code makes it."""
    if not city_is_current(city_dir, preset, seed):
        generate_city(city_dir, preset=preset, seed=seed)
    return os.path.join(city_dir, "manifest.parquet")


def one_run(base: dict, manifest: str, workers: int, cpus: int, args, storage: str) -> dict:
    import ray

    config = TrainConfig(**{
        **base, "name": f"throughput_w{workers}", "dataset": manifest, "storage_path": storage,
        "num_workers": workers, "cpus_per_worker": cpus / workers, "epochs": 1, "use_gpu": False,
        "max_train_queries": args.queries, "chunk_size": args.chunk, "max_val_queries": args.val_queries,
        "model": {**base["model"], "whitening_dim": None}, "val_store_dir": None, "seed": args.seed,
    })
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = train_run(config)
    wall = time.perf_counter() - started
    ray.shutdown()  # the next run starts a cluster of its own
    row = next(h for h in result.history if h["epoch"] == 1)
    epoch_s = row["tuples"] / row["tuples_per_s"]
    mining_s = row["mining_fraction"] * epoch_s
    return {
        "workers": workers, "threads_per_worker": cpus / workers, "tuples": row["tuples"],
        "epoch_s": epoch_s, "mining_s": mining_s, "epoch_tuples_per_s": row["tuples_per_s"],
        "training_tuples_per_s": row["tuples"] / max(epoch_s - mining_s, 1e-9),
        "mining_fraction": row["mining_fraction"], "run_wall_s": wall,
        "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--city-dir", default=None, help="default /tmp/sare_synth_<preset>_seed<seed>")
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "demo.yaml"),
                        help="a demo YAML whose `train:` section gives the model and loss")
    parser.add_argument("--queries", type=int, default=200, help="training queries in the epoch")
    parser.add_argument("--chunk", type=int, default=100, help="queries per re-mining chunk")
    parser.add_argument("--val-queries", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=os.path.join(REPO, "results", "train_throughput.json"))
    args = parser.parse_args()

    with open(args.config) as f:
        base = dict(yaml.safe_load(f)["train"])
    city_dir = args.city_dir or f"/tmp/sare_synth_{args.preset}_seed{args.seed}"
    manifest = ensure_city(city_dir, args.preset, args.seed)
    storage = tempfile.mkdtemp(prefix="sare_train_bench_")
    runs = []
    try:
        for workers in args.workers:
            runs.append(one_run(base, manifest, workers, args.cpus, args, storage))
            print(json.dumps(runs[-1]), flush=True)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    by_workers = {r["workers"]: r for r in runs}
    ratios = {}
    if 1 in by_workers and 2 in by_workers:
        ratios = {key: by_workers[2][key] / by_workers[1][key]
                  for key in ("epoch_tuples_per_s", "training_tuples_per_s")}
    out = {"preset": args.preset, "seed": args.seed, "model": base["model"], "loss": base.get("loss"),
           "queries": args.queries, "chunk_size": args.chunk, "cpus": args.cpus, "runs": runs,
           "ratio_2_workers_to_1": ratios, "date": time.strftime("%Y-%m-%d %H:%M")}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps({"ratio_2_workers_to_1": ratios}, indent=2))


if __name__ == "__main__":
    main()

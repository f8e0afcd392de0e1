"""Training throughput of `sare train`: tuples/s with 1 and with 2 Ray Train workers on one machine, against
a plain single-process PyTorch loop over the same tuples, and re-mining's share of an epoch against its
share of the compute.

Each run is one epoch of the real training stage (`pipelines.train.run`: TorchTrainer, DDP over gloo,
re-mining before every chunk) on the synthetic city, with the demo's model unless overridden. The machine's
CPUs are split evenly among the workers (1 worker x 2 threads, 2 workers x 1 thread on a 2-core machine), so
the runs compare ways of using the same cores. From the epoch's history row:

  * epoch tuples/s: tuples trained / epoch seconds (re-mining included, validation excluded);
  * training tuples/s: tuples trained / (epoch seconds - re-mining seconds);
  * re-mining fraction: seconds spent extracting the chunk caches and mining / epoch seconds;
  * re-mining compute share: the seconds of the forward passes over the caches' images against those plus
    the seconds of the tuples' forward + loss + backward passes, both timed inside the same epoch on every
    worker (`train_epoch`'s mining_forward_seconds, step_compute_seconds; summed over the workers). A
    re-mining fraction above it is time re-mining loses beyond its compute (decoding, mining the tuples,
    synchronisation); the row also gives the decoding seconds of both sides.

The plain loop replays the tuples the first Ray run mined (its mining log), from the same initial model:
one process, torch's default threads, batches of (workers x batch_size) tuples (one DDP step's worth),
SGD as configured; its tuples/s is compared with the Ray runs' training tuples/s (mining excluded).

    .venv/bin/python benchmarks/train_throughput.py                   # small city, demo model
    .venv/bin/python benchmarks/train_throughput.py --preset tiny --queries 32 --chunk 16   # a quick check
    .venv/bin/python benchmarks/train_throughput.py --queries 500 --chunk 250 --frozen-cache-mb 2048 \
        --out results/train_throughput_frozen_cache.json    # the Ray runs with the frozen-feature cache
    .venv/bin/python benchmarks/train_throughput.py --queries 500 --chunk 250 --frozen-cache-mb 2048 --workers 2 \
        --balance-by-speed both --out results/train_throughput_balanced.json   # 2 workers, shares by speed off/on

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
from sare_core.allocator import keep_freed_memory  # noqa: E402
from sare_core.data.synth.city import city_is_current, generate_city  # noqa: E402
from sare_core.models.io import load_model  # noqa: E402
from sare_core.training.config import TrainConfig  # noqa: E402


def ensure_city(city_dir: str, preset: str, seed: int) -> str:
    """The city's manifest, generating the city unless city_dir already holds it as this code makes it."""
    if not city_is_current(city_dir, preset, seed):
        generate_city(city_dir, preset=preset, seed=seed)
    return os.path.join(city_dir, "manifest.parquet")


def train_config(base: dict, manifest: str, workers: int, cpus: int, args, storage: str, mining_log: str,
                 balance: bool = False) -> TrainConfig:
    return TrainConfig(**{
        **base, "name": f"throughput_w{workers}{'_balanced' if balance else ''}", "dataset": manifest,
        "storage_path": storage, "balance_by_speed": balance,
        "num_workers": workers, "cpus_per_worker": cpus / workers, "epochs": 1, "use_gpu": False,
        "max_train_queries": args.queries, "chunk_size": args.chunk, "max_val_queries": args.val_queries,
        "model": {**base["model"], "whitening_dim": None}, "val_store_dir": None, "seed": args.seed,
        "mining_log_dir": mining_log, "frozen_cache_mb": args.frozen_cache_mb,
    })


def one_run(config: TrainConfig) -> tuple[dict, object]:
    import ray

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = train_run(config)
    wall = time.perf_counter() - started
    ray.shutdown()  # the next run starts a cluster of its own
    row = next(h for h in result.history if h["epoch"] == 1)
    epoch_s, mining_s = row["seconds"], row["mining_seconds"]
    return {
        "workers": config.num_workers, "threads_per_worker": config.cpus_per_worker, "tuples": row["tuples"],
        "balance_by_speed": config.balance_by_speed,
        "epoch_s": epoch_s, "mining_s": mining_s, "mining_embed_s": row["mining_embed_seconds"],
        "mined_images": row["mined_images"], "trained_images": row["trained_images"],
        "epoch_tuples_per_s": row["tuples_per_s"],
        "training_tuples_per_s": row["tuples"] / max(epoch_s - mining_s, 1e-9),
        "mining_fraction": row["mining_fraction"], "mining_compute_share": row["mining_compute_share"],
        "mining_forward_s": row["mining_forward_seconds"], "mining_decode_s": row["mining_decode_seconds"],
        "mining_forward_s_by_worker": row.get("mining_forward_seconds_by_worker"),
        "mining_embed_s_by_worker": row.get("mining_embed_seconds_by_worker"),
        "mined_cached_images_by_worker": row.get("mined_cached_images_by_worker"),
        "mining_slowness_by_worker": row.get("mining_slowness_by_worker"),
        "step_compute_s": row["step_compute_seconds"], "step_load_s": row["step_load_seconds"],
        "forward_s_per_image": row["mining_forward_seconds"] * config.num_workers / max(row["mined_images"], 1),
        "train_step_s_per_image": row["step_compute_seconds"] * config.num_workers / max(row["trained_images"], 1),
        "run_wall_s": wall, "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
    }, result


def plain_loop(config: TrainConfig, initial_model: str, mining_log: str, batch_tuples: int) -> dict:
    """The mined tuples of the first Ray run, trained in one process: tuples/s of the steps alone."""
    import numpy as np
    import torch

    from sare_core.data.sources import open_splits
    from sare_core.mining import load_mining_record
    from sare_core.training.checkpoint import TrainingState
    from sare_core.training.loop import loss_function
    from sare_core.training.tuples import TupleImages

    train = open_splits(config.dataset)[config.train_split]
    state = TrainingState.start(load_model(initial_model), config)
    model = state.model
    model.backbone.freeze_batchnorm = config.freeze_batchnorm
    images = TupleImages(train, model.preprocessor, config.color_jitter, config.seed)
    loss_fn = loss_function(config)
    n_neg = config.num_negatives
    trained = 0
    seconds = 0.0
    for record in sorted(os.listdir(mining_log)):
        _, tuples = load_mining_record(os.path.join(mining_log, record))
        order = np.random.default_rng(0).permutation(len(tuples))
        model.train()
        started = time.perf_counter()
        for b in range(0, len(order) - batch_tuples + 1, batch_tuples):
            batch = tuples.subset(order[b : b + batch_tuples])
            desc = model(images(batch.queries, batch.positives, batch.negatives))
            n = len(batch)
            loss = loss_fn(desc[:n], desc[n:2 * n], desc[2 * n:].reshape(n, n_neg, -1))
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
            trained += n
        seconds += time.perf_counter() - started
    return {"tuples": trained, "seconds": seconds, "tuples_per_s": trained / seconds,
            "torch_threads": torch.get_num_threads(), "batch_tuples": batch_tuples}


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
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1], help="Ray runs in this order; the "
                        "first one's tuples are replayed by the plain loop")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--frozen-cache-mb", type=int, default=0, help="the Ray runs' frozen-feature cache (0: "
                        "off, like the plain loop; the epoch's second half then reuses the first chunk's maps)")
    parser.add_argument("--balance-by-speed", choices=["off", "on", "both"], default="off",
                        help="train.balance_by_speed of the Ray runs; both: each worker count off, then on")
    parser.add_argument("--out", default=os.path.join(REPO, "results", "train_throughput.json"))
    args = parser.parse_args()
    # The plain loop runs with the allocator settings the pipeline's processes use (sare_core.allocator), so
    # that the ratio compares the layouts, not the allocators.
    keep_freed_memory()

    with open(args.config) as f:
        base = dict(yaml.safe_load(f)["train"])
    city_dir = args.city_dir or f"/tmp/sare_synth_{args.preset}_seed{args.seed}"
    manifest = ensure_city(city_dir, args.preset, args.seed)
    storage = tempfile.mkdtemp(prefix="sare_train_bench_")
    runs = []
    plain = None
    try:
        balances = {"off": [False], "on": [True], "both": [False, True]}[args.balance_by_speed]
        for i, (workers, balance) in enumerate((w, b) for w in args.workers for b in balances):
            mining_log = os.path.join(storage, f"mining_w{workers}{'_balanced' if balance else ''}")
            config = train_config(base, manifest, workers, args.cpus, args, storage, mining_log, balance)
            run_row, result = one_run(config)
            runs.append(run_row)
            print(json.dumps(runs[-1]), flush=True)
            if i == 0:
                plain = plain_loop(config, result.initial_model_path, mining_log, workers * config.batch_size)
                print(json.dumps({"plain_loop": plain}), flush=True)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    by_workers = {r["workers"]: r for r in runs if not r["balance_by_speed"]} or {r["workers"]: r for r in runs}
    ratios = {}
    if 1 in by_workers and 2 in by_workers:
        ratios = {key: by_workers[2][key] / by_workers[1][key]
                  for key in ("epoch_tuples_per_s", "training_tuples_per_s")}
    against_plain = {f"{r['workers']}x{r['threads_per_worker']:g}{' balanced' if r['balance_by_speed'] else ''}":
                     r["training_tuples_per_s"] / plain["tuples_per_s"] for r in runs} if plain else {}
    out = {"preset": args.preset, "seed": args.seed, "model": base["model"], "loss": base.get("loss"),
           "queries": args.queries, "chunk_size": args.chunk, "cpus": args.cpus, "runs": runs,
           "frozen_cache_mb": args.frozen_cache_mb,
           "plain_loop": plain, "training_tuples_per_s_against_plain_loop": against_plain,
           "ratio_2_workers_to_1": ratios, "date": time.strftime("%Y-%m-%d %H:%M")}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps({"ratio_2_workers_to_1": ratios, "against_plain_loop": against_plain}, indent=2))


if __name__ == "__main__":
    main()

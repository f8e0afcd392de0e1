"""Ray Train's fixed cost per run on one node: a bare TorchTrainer (two workers of one CPU that import the
project's worker module and return) on a fresh local Ray instance, with Ray Train's defaults and with
`pipelines.ray_session.ONE_NODE_TRAIN_ENV` (no preemption watcher, health checks every 0.5 s), which every
training run and sweep trial uses on a one-node cluster.

Each run is its own Python process (a fresh Ray instance); the two settings alternate, the order reversed
every other round. Per run: seconds from `ray.init` returning to the workers' function starting, the
function's own import of pipelines.train.worker, from the function's end to `fit` returning, and the whole
`fit`. Medians per setting and the median of the per-round ratios (one-node settings / defaults).

    nice -n 0 .venv/bin/python benchmarks/train_startup.py --rounds 4

Results: results/train_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipelines.ray_session import ONE_NODE_TRAIN_ENV  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from alternating import alternating_rounds, medians, save  # noqa: E402

ONE_RUN = r"""
import json, os, sys, time
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from pipelines import ray_session

out = sys.argv[1]

def loop(_):
    import time as t
    import ray.train
    started = t.time()
    import pipelines.train.worker  # noqa: F401  what the real workers import
    rank = ray.train.get_context().get_world_rank()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"started": started, "imported": t.time()}, f)

ray_session.connect()
ready = time.time()
trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                       run_config=RunConfig(name="startup", storage_path=os.path.join(out, "runs")))
trainer.fit()
done = time.time()
ranks = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in (0, 1)]
started, imported = max(r["started"] for r in ranks), max(r["imported"] for r in ranks)
print("RESULT " + json.dumps({"to_worker_function_s": started - ready, "worker_import_s": imported - started,
                              "function_end_to_fit_return_s": done - imported, "fit_s": done - ready}))
"""


def one_run(one_node_settings: bool, extra_env: dict | None = None) -> dict:
    """One fresh process's figures; `extra_env` is added to its environment (benchmarks/bytecode.py)."""
    env = {k: v for k, v in os.environ.items() if k not in ONE_NODE_TRAIN_ENV}
    env.update(extra_env or {})
    if one_node_settings:
        env.update(ONE_NODE_TRAIN_ENV)
    else:  # Ray Train's defaults, stated: the project's context manager leaves set variables alone
        env.update({"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0"})
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", ONE_RUN, out], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"run failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return {k: round(v, 2) for k, v in json.loads(lines[0][len("RESULT "):]).items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", default=os.path.join(REPO, "results", "train_startup.json"))
    args = p.parse_args(argv)

    settings = ["defaults", "one_node"]
    rounds = alternating_rounds(settings, args.rounds, lambda name: one_run(name == "one_node"))
    for row in rounds:
        row["fit_ratio"] = round(row["one_node"]["fit_s"] / row["defaults"]["fit_s"], 3)
    keys = list(rounds[0]["defaults"])
    result = {
        "command": "python benchmarks/train_startup.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "one_node_settings": ONE_NODE_TRAIN_ENV,
        "rounds": rounds,
        "median": medians(rounds, settings, keys),
        "median_fit_ratio": statistics.median(r["fit_ratio"] for r in rounds),
    }
    save(result, args.out, ("median", "median_fit_ratio"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

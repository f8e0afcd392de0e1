"""What saved bytecode is worth: fresh processes importing the project's modules, and Ray Train's start-up,
with the virtual environment's bytecode (what `make install` compiles) against none at all.

Where PYTHONDONTWRITEBYTECODE is set, as on this project's machines, Python never saves what it compiles: a
venv installed with pip's `--no-compile` and nothing after it has no bytecode, and every process compiles the
source of every module it imports, on every run. Ray multiplies that: each worker, each actor (Ray Train's
controller and its helpers, the training workers, Ray Data's tasks and actors) is a process that imports Ray
and often torch.

"none" runs with PYTHONPYCACHEPREFIX set to an empty folder and PYTHONDONTWRITEBYTECODE=1, so no bytecode is
found or saved (the state before `make install` compiled); "compiled" reads the __pycache__ folders. Ray's
processes inherit the driver's environment. The settings alternate, the order reversed every other round.
Per run: the wall seconds of one process importing FIRST_IMPORT (benchmarks/install_time.py's list), and
benchmarks/train_startup.py's bare Ray Train run (a fresh local Ray, two workers; seconds from `ray.init`
returning to the workers' function, and the whole `fit`). Ratios compiled / none per round, and their medians.

    nice -n 0 .venv/bin/python benchmarks/bytecode.py --rounds 3      # results/bytecode.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from alternating import alternating_rounds, medians, save  # noqa: E402
from install_time import FIRST_IMPORT  # noqa: E402
from train_startup import one_run as train_startup_run  # noqa: E402

SETTINGS = ("none", "compiled")


def environment(setting: str, empty_prefix: str) -> dict:
    """The variables that make a process run without bytecode ("none") or with the venv's ("compiled")."""
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    if setting == "none":
        env["PYTHONPYCACHEPREFIX"] = empty_prefix
    return env


def import_seconds(extra_env: dict) -> float:
    """Wall seconds of a fresh interpreter importing FIRST_IMPORT."""
    env = {**os.environ, **extra_env}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", FIRST_IMPORT], cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


CHECKED_PACKAGES = ("torch", "ray", "pyarrow")


def modules_without_bytecode(package: str) -> tuple[str, list[str]]:
    """(where `package`'s bytecode is looked for, its top-level modules that have none). Modules that no run
    imports (ray/setup-dev.py, pyarrow/cuda.py...) count too: where Python saves bytecode, the imported ones
    would have it without `make install`'s step."""
    import importlib.util

    folder = os.path.dirname(importlib.util.find_spec(package).origin)
    prefix = sys.pycache_prefix
    cache = os.path.join(prefix, os.path.relpath(folder, "/")) if prefix else os.path.join(folder, "__pycache__")
    tag = sys.implementation.cache_tag
    missing = [name for name in sorted(os.listdir(folder)) if name.endswith(".py")
               and not os.path.isfile(os.path.join(cache, f"{name[:-3]}.{tag}.pyc"))]
    return cache, missing


def venv_has_bytecode() -> bool:
    """Whether every top-level module of CHECKED_PACKAGES has saved bytecode (what `make install` writes)."""
    return not any(modules_without_bytecode(package)[1] for package in CHECKED_PACKAGES)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=os.path.join(REPO, "results", "bytecode.json"))
    args = p.parse_args(argv)
    # "compiled" means the __pycache__ folders: a prefix set in this environment would reach every run
    # (train_startup's processes inherit os.environ), so it is dropped for all of them.
    os.environ.pop("PYTHONPYCACHEPREFIX", None)
    if not venv_has_bytecode():
        raise SystemExit("the venv holds no bytecode: run `make install` (which compiles it) first")

    with tempfile.TemporaryDirectory(prefix="empty_pycache_") as empty:
        def run(setting: str) -> dict:
            env = environment(setting, empty)
            figures = {"import_s": round(import_seconds(env), 2)}
            figures.update({f"train_{k}": v for k, v in train_startup_run(True, env).items()})
            if os.listdir(empty):
                raise RuntimeError(f"{empty} received bytecode: the 'none' runs were not without it")
            return figures

        rounds = alternating_rounds(SETTINGS, args.rounds, run)
    for row in rounds:
        row["ratio"] = {k: round(row["compiled"][k] / row["none"][k], 3) for k in row["compiled"]}
    keys = list(rounds[0]["ratio"])
    result = {
        "command": "python benchmarks/bytecode.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "first_import": FIRST_IMPORT,
        "rounds": rounds,
        "median": medians(rounds, SETTINGS, keys),
        "median_ratio": {k: statistics.median(r["ratio"][k] for r in rounds) for k in keys},
    }
    save(result, args.out, ("median", "median_ratio"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

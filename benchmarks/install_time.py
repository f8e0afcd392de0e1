"""How long a new user waits for `make install`: a fresh clone of the committed tree, pip's cache purged,
then each command of the Makefile's install recipe (as `make -n install` prints it) timed on its own.

    python3 benchmarks/install_time.py          # writes results/install_time.json (about 3 minutes)

The clone lands in a temporary folder that is removed afterwards. `--keep-cache` skips the cache purge
(the time a second install takes); `--no-lock` installs without constraints.txt (pip resolves alone);
`--pip-compile` drops the recipe's `--no-compile`, so that pip byte-compiles every module as it installs.
After the recipe, the first import of what the project runs (torch, Ray Data / Train / Tune, FAISS,
pyarrow, the project) is timed too. The recipe's last step byte-compiles the venv, so that import reads saved
bytecode; without that step, every import compiles its modules, and where PYTHONDONTWRITEBYTECODE is set
(benchmarks/bytecode.py) they are never saved, so the next process compiles them again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_IMPORT = ("import torch, torchvision, ray.data, ray.train.torch, ray.tune, faiss, pyarrow.parquet, pandas, "
                "sare_core, pipelines.cli")
DEFAULT_OUT = os.path.join(REPO, "results", "install_time.json")


def run(command: str, cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, shell=True, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-cache", action="store_true", help="do not purge pip's cache first")
    parser.add_argument("--no-lock", action="store_true", help="install without constraints.txt")
    parser.add_argument("--pip-compile", action="store_true", help="drop the recipe's --no-compile")
    parser.add_argument("--python", default="python3", help="interpreter that builds the venv (make's PYTHON)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="sare_install_") as tmp:
        clone = os.path.join(tmp, "clone")
        subprocess.run(["git", "clone", "-q", REPO, clone], check=True)
        if args.no_lock:
            with open(os.path.join(clone, "constraints.txt"), "w") as f:
                f.write("# emptied by benchmarks/install_time.py --no-lock\n")
        if not args.keep_cache:
            subprocess.run([args.python, "-m", "pip", "cache", "purge"], check=False, capture_output=True)
        recipe = subprocess.run(["make", "-n", "install", f"PYTHON={args.python}"], cwd=clone, capture_output=True,
                                text=True, check=True).stdout.strip().splitlines()
        if args.pip_compile:
            recipe = [command.replace(" --no-compile", "") for command in recipe]
        steps = []
        started = time.perf_counter()
        for command in recipe:
            seconds = run(command, clone)
            steps.append({"command": command, "seconds": seconds})
            print(f"{seconds:7.1f} s  {command}", flush=True)
        total = time.perf_counter() - started
        first_import = run(f".venv/bin/python -c '{FIRST_IMPORT}'", clone)
        print(f"{first_import:7.1f} s  first import: {FIRST_IMPORT}", flush=True)
        venv_bytes = int(subprocess.run(["du", "-sb", os.path.join(clone, ".venv")], capture_output=True,
                                        text=True).stdout.split()[0])
    torch_seconds = sum(s["seconds"] for s in steps if "torch==" in s["command"])
    record = {"revision": revision, "date": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(),
              "cpus": os.cpu_count(), "load_average_end": os.getloadavg(), "cache_purged": not args.keep_cache,
              "constraints": not args.no_lock, "pip_compiles": "--no-compile" not in " ".join(recipe),
              "total_seconds": total, "first_import_seconds": first_import,
              "total_with_first_import_seconds": total + first_import, "torch_seconds": torch_seconds,
              "torch_share": torch_seconds / total, "steps": steps, "venv_bytes": venv_bytes,
              "goal": "at most 3 minutes from a fresh clone with pip's cache purged (the first import included)",
              "met": total + first_import <= 180}
    print(f"total {total:.0f} s ({total / 60:.1f} min), torch wheels {torch_seconds:.0f} s, then the first import "
          f"{first_import:.0f} s; venv "
          f"{venv_bytes / 2**30:.1f} GiB")
    if args.pip_compile and args.out == DEFAULT_OUT:
        args.out = DEFAULT_OUT.replace(".json", "_pip_compile.json")
    if not args.no_lock and not args.keep_cache:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)
        print(f"wrote {os.path.relpath(args.out, REPO)}")
    else:
        print(json.dumps({k: v for k, v in record.items() if k != "steps"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

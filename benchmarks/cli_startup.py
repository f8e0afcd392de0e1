"""How long the `sare` command line takes to start: `sare --help`, `sare data inspect --help` and `sare
train --help` (none imports torch or Ray), against the interpreter alone and `import torch` in the same run.

    .venv/bin/python benchmarks/cli_startup.py          # writes results/cli_startup.json

Each command runs --repeats times in a fresh process, alternating; the table reports medians (wall seconds).
The goal: `sare --help` under 1 s on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commands() -> dict[str, list[str]]:
    sare = shutil.which("sare", path=os.path.dirname(sys.executable)) or "sare"
    return {
        "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
        "sare --help": [sare, "--help"],
        "sare data inspect --help": [sare, "data", "inspect", "--help"],
        "sare train --help": [sare, "train", "--help"],
        "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
        "python -c 'import ray' (reference)": [sys.executable, "-c", "import ray"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=os.path.join(REPO, "results", "cli_startup.json"))
    args = parser.parse_args(argv)
    runs: dict[str, list[float]] = {name: [] for name in commands()}
    for _ in range(args.repeats):
        for name, command in commands().items():
            started = time.perf_counter()
            subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            runs[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(times) for name, times in runs.items()}
    for name, seconds in medians.items():
        print(f"{name:45s} {seconds:6.3f} s")
    record = {"medians_s": medians, "runs_s": runs, "repeats": args.repeats, "host": platform.node(),
              "cpus": os.cpu_count(), "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "goal": "sare --help under 1 s", "met": medians["sare --help"] < 1.0}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {os.path.relpath(args.out, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

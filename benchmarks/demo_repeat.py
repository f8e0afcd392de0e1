"""Is `make demo` reproducible on one host? Compares two finished demo runs of the same config and seed
(their eval.json and demo_summary.json) and records whether every recall, ranking statistic and per-epoch
validation recall is equal; timings and paths are left out of the comparison.

    .venv/bin/sare demo                                   # runs/demo
    .venv/bin/python benchmarks/demo_seeds.py --seeds 0 --keep-runs   # runs/demo_seeds/default/seed0
    .venv/bin/python benchmarks/demo_repeat.py runs/demo runs/demo_seeds/default/seed0   # results/demo_repeat.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOLATILE = ("seconds", "store", "path", "uri", "root", "date", "written", "minutes", "started", "ended", "outputs",
            "database", "queries",
            "photo", "located", "out_dir", "tuples_per_s")


def comparable(value):
    """`value` without timings, paths and dates (any key containing one of VOLATILE)."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if not any(word in k for word in VOLATILE)}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            found += differences(a.get(key), b.get(key), f"{where}.{key}")
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--out", default=os.path.join(REPO, "results", "demo_repeat.json"))
    args = p.parse_args(argv)
    found, compared = [], {}
    for name in ("eval/eval.json", "demo_summary.json"):
        with open(os.path.join(args.first, name)) as f:
            a = comparable(json.load(f))
        with open(os.path.join(args.second, name)) as f:
            b = comparable(json.load(f))
        found += [f"{name}{d}" for d in differences(a, b)]
        compared[name] = a
    table = compared["eval/eval.json"].get("table")
    record = {"first": args.first, "second": args.second, "identical": not found, "differences": found[:50],
              "table": table, "host": platform.node(), "cpus": os.cpu_count(),
              "command": "python benchmarks/demo_repeat.py " + " ".join(argv or sys.argv[1:]),
              "written": time.strftime("%Y-%m-%d %H:%M")}
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(table or "")
    print("identical" if not found else f"{len(found)} differences, e.g. {found[:3]}")
    return 0 if not found else 1


if __name__ == "__main__":
    sys.exit(main())

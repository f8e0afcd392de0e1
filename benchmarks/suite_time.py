"""How long the whole test suite takes: `make test`'s pytest run, its wall time and its slowest tests.

    .venv/bin/python benchmarks/suite_time.py          # writes results/suite_time.json

Runs `.venv/bin/python -m pytest -q --durations=0 -p no:cacheprovider` (what `make test` runs after the
install; the install is timed by benchmarks/install_time.py) and records the wall time, the outcome counts,
the 15 slowest tests and the machine's load average before and after: the suite must stay under ~25 minutes
on CI's 2-core machine, and a loaded machine stretches it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = re.compile(r"^([0-9.]+)s (call|setup|teardown)\s+(\S+)")
OUTCOMES = re.compile(r"(\d+) (passed|failed|skipped|deselected|xfailed|xpassed|errors?|warnings?)")


def main() -> int:
    command = [os.path.join(REPO, ".venv", "bin", "python"), "-m", "pytest", "-q", "--durations=0",
               "-p", "no:cacheprovider"] + sys.argv[1:]
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    lines = done.stdout.splitlines()
    per_test: dict[str, float] = {}
    for line in lines:
        m = DURATION.match(line)
        if m:
            per_test[m.group(3)] = per_test.get(m.group(3), 0.0) + float(m.group(1))
    summary = next((line for line in reversed(lines) if " in " in line and OUTCOMES.search(line)), "")
    record = {
        "command": " ".join(["python", "-m", "pytest"] + command[3:]), "exit_status": done.returncode,
        "wall_seconds": wall, "wall_minutes": wall / 60, "summary": summary,
        "outcomes": {kind: int(n) for n, kind in OUTCOMES.findall(summary)},
        "slowest": sorted(({"test": t, "seconds": round(s, 1)} for t, s in per_test.items()),
                          key=lambda r: -r["seconds"])[:15],
        "cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "written": time.strftime("%Y-%m-%d %H:%M"), "goal": "under ~25 minutes on CI's 2-core machine",
    }
    out = os.path.join(REPO, "results", "suite_time.json")
    with open(out, "w") as f:
        json.dump(record, f, indent=2)
    print(f"{summary}\nwall {wall / 60:.1f} min; wrote {os.path.relpath(out, REPO)}")
    if done.returncode != 0:
        print("\n".join(lines[-60:]))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())

"""What the A/B benchmarks share (benchmarks/train_startup.py, bytecode.py, allocator.py): settings run in
alternating order, reversed every other round, so that a host's drift weighs on both alike; medians over the
rounds; the result written as JSON with the host, its CPUs, the load average and the date."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence


def alternating_rounds(settings: Sequence[str], rounds: int, run: Callable[[str], dict],
                       label: str = "") -> list[dict]:
    """`rounds` rows {"order": [settings as run], setting: run(setting), ...}: the first round in the given
    order, every other round reversed. Each run's figures are printed as it ends."""
    rows = []
    for r in range(rounds):
        order = list(settings) if r % 2 == 0 else list(settings)[::-1]
        row: dict = {"order": order}
        for setting in order:
            row[setting] = run(setting)
            print(f"{label}round {r}: {setting}: {json.dumps(row[setting])}", flush=True)
        rows.append(row)
    return rows


def medians(rounds: list[dict], settings, keys) -> dict:
    """{setting: {key: median over the rounds}} of alternating rounds ({setting: {key: value}} each)."""
    return {name: {k: statistics.median(r[name][k] for r in rounds) for k in keys} for name in settings}


def save(result: dict, out: str, shown: tuple[str, ...]) -> None:
    """Write `result`, with the host, its CPUs, the load average and the date added, to `out` as JSON, and
    print its `shown` entries."""
    result.update({"host": platform.node(), "cpus": os.cpu_count(), "load_average_after": os.getloadavg(),
                   "written": time.strftime("%Y-%m-%d %H:%M")})
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in shown}, indent=1))

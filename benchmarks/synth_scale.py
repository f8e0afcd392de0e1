"""Wall time and peak memory of generating a synthetic city preset (default: pitts250k, ~278k images).

    .venv/bin/python benchmarks/synth_scale.py --preset pitts250k --workers 2

The city is written under a fresh temporary folder in /tmp and deleted afterwards (unless --keep).
Memory: peak resident set size of the main process, of the largest worker (getrusage), and of the whole
process tree sampled every 0.5 s from /proc. Results go to results/synth_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sare_core.data.synth.city import GENERATOR_VERSION, generate_city  # noqa: E402
from sare_core.data.synth.presets import get_preset  # noqa: E402


def _tree_rss_bytes(root_pid: int) -> int:
    """Summed resident set size of root_pid and all its descendants, read from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


class TreeMemorySampler(threading.Thread):
    """Samples the summed RSS (bytes) of this process and all its descendants; keeps the peak."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.peak_bytes = max(self.peak_bytes, _tree_rss_bytes(os.getpid()))
            self.stop_event.wait(self.interval_s)


def folder_size(root: str) -> tuple[int, int]:
    """(files, bytes) under root."""
    files = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.path.getsize(os.path.join(folder, name))
    return files, size


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="pitts250k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated city (printed path)")
    parser.add_argument("--out", default=os.path.join(REPO, "results", "synth_scale.json"))
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    workers = args.workers or os.cpu_count() or 1
    sampler = TreeMemorySampler()
    load_before = os.getloadavg()
    sampler.start()
    started, cpu_started = time.perf_counter(), os.times()
    out_dir = tempfile.mkdtemp(prefix=f"sare_synth_{args.preset}_", dir="/tmp")
    try:
        result = generate_city(out_dir, preset=args.preset, seed=args.seed, workers=workers)
        seconds = time.perf_counter() - started
        cpu = os.times()
        files, size = folder_size(out_dir)
    finally:
        sampler.stop_event.set()
        sampler.join()
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    images = sum(c["database"] + c["queries"] for c in result["counts"].values())
    cpu_seconds = (cpu.user - cpu_started.user) + (cpu.system - cpu_started.system) + (
        cpu.children_user - cpu_started.children_user) + (cpu.children_system - cpu_started.children_system)
    record = {
        "command": "benchmarks/synth_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "preset": args.preset,
        "seed": args.seed,
        "generator_version": GENERATOR_VERSION,
        "image_size": list(preset.image_size),
        "counts": result["counts"],
        "images": images,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "wall_seconds": round(seconds, 1),
        "images_per_second": round(images / seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "peak_rss_main_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_largest_worker_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "peak_rss_process_tree_mib": round(sampler.peak_bytes / 2**20, 1),
        "files": files,
        "disk_mib": round(size / 2**20, 1),
        "kept_at": out_dir if args.keep else None,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()

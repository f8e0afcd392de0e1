"""The synthetic city's render batch: how many pixels one numpy pass of the ray-caster covers
(`generate_city(batch_pixels=...)`), against the city stage's wall and CPU time, with the bytes unchanged.

Each round generates the whole preset (default `small`, the demo's 7,800 images, two render processes as the
demo runs it) once per batch size, in an order reversed every other round; per generation the wall seconds
and the CPU seconds of this process and its render processes (`extract_throughput.CpuMeter`). Every city
must hold the same files, byte for byte (a digest of every image and .mat file; the manifest and city.json
hold paths and revisions, so they are left out). Ratios are to the first batch size, per round, and their
medians.

    nice -n 0 .venv/bin/python benchmarks/city_batch.py --batches 400000 120000 --rounds 3

Results: results/city_batch.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from extract_throughput import CpuMeter  # noqa: E402

from sare_core.data.synth.city import RENDER_BATCH_PIXELS, generate_city  # noqa: E402


def city_digest(city_dir: str) -> str:
    """One SHA-256 over every image and .mat file under city_dir (relative path and bytes, sorted)."""
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(city_dir)):
        for name in sorted(files):
            if name.endswith((".jpg", ".mat")):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, city_dir).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[400_000, RENDER_BATCH_PIXELS],
                   help="pixels per render call; the first is the reference of the ratios")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=os.path.join(REPO, "results", "city_batch.json"))
    args = p.parse_args(argv)

    rounds, digests = [], {}
    work = tempfile.mkdtemp(prefix="city_batch_")
    try:
        for r in range(args.rounds):
            order = args.batches if r % 2 == 0 else list(reversed(args.batches))
            row = {}
            for batch in order:
                out = os.path.join(work, f"b{batch}")
                shutil.rmtree(out, ignore_errors=True)
                started = time.perf_counter()
                with CpuMeter() as meter:
                    generate_city(out, args.preset, args.seed, args.workers, batch_pixels=batch)
                row[str(batch)] = {"wall_s": round(time.perf_counter() - started, 2), "cpu_s": round(meter.seconds, 1)}
                digests.setdefault(str(batch), set()).add(city_digest(out))
                print(f"round {r}: batch {batch} px: {row[str(batch)]}", flush=True)
            reference = row[str(args.batches[0])]
            for batch in args.batches:
                row[str(batch)]["wall_ratio"] = round(row[str(batch)]["wall_s"] / reference["wall_s"], 3)
                row[str(batch)]["cpu_ratio"] = round(row[str(batch)]["cpu_s"] / reference["cpu_s"], 3)
            rounds.append({"order": order, **row})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    all_digests = set().union(*digests.values())
    result = {
        "command": "python benchmarks/city_batch.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "preset": args.preset, "seed": args.seed, "workers": args.workers, "batches_px": args.batches,
        "rounds": rounds,
        "median_wall_ratio": {str(b): statistics.median(r[str(b)]["wall_ratio"] for r in rounds) for b in args.batches},
        "median_cpu_ratio": {str(b): statistics.median(r[str(b)]["cpu_ratio"] for r in rounds) for b in args.batches},
        "identical_bytes": len(all_digests) == 1,
        "digest": sorted(all_digests)[0] if len(all_digests) == 1 else sorted(all_digests),
        "host": platform.node(), "cpus": os.cpu_count(), "load_average_after": os.getloadavg(),
        "written": time.strftime("%Y-%m-%d %H:%M"),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in ("median_wall_ratio", "median_cpu_ratio", "identical_bytes")}))
    return 0 if result["identical_bytes"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""A bounded load on `sare serve` over loopback: latency (p50, p99) and throughput for several numbers of
concurrent clients, errors counted, and a run in which one of two replicas is killed mid-load.

    .venv/bin/python benchmarks/serve_load.py --model runs/demo/runs/demo/model.pt --index runs/demo/index \\
        --photos runs/demo/city/images/test/queries       # writes results/serve_load.json

Each client POSTs the photos (JPEG bytes, cycled) one request after another for --seconds; the service
runs with --replicas replicas of --replica-cpus CPUs on a local Ray instance started here (CPU only).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import socket
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipelines.serve.load import run_load  # noqa: E402
from pipelines.serve.service import ServeConfig, start, stop  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--photos", required=True, help="a folder of JPEG photos (searched recursively)")
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--replica-cpus", type=float, default=1.0)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(REPO, "results", "serve_load.json"))
    args = parser.parse_args(argv)
    from tests.faults import pids_with_title

    paths = sorted(glob.glob(os.path.join(args.photos, "**", "*.jpg"), recursive=True))[:200]
    photos = [open(p, "rb").read() for p in paths]
    config = ServeConfig(model=args.model, index=args.index, port=free_port(), replicas=args.replicas,
                         replica_cpus=args.replica_cpus, max_batch_size=args.max_batch_size)
    url = start(config)
    runs = []
    try:
        run_load(url, photos, clients=2, seconds=3)  # warm-up
        for clients in [int(c) for c in args.clients.split(",")]:
            report = run_load(url, photos, clients=clients, seconds=args.seconds)
            report.pop("log")
            runs.append(report)
            print(json.dumps({k: report[k] for k in ("clients", "requests", "errors", "requests_per_s", "p50_s",
                                                      "p99_s")}), flush=True)
        replicas = pids_with_title("ServeReplica:sare:localizer")

        def kill_one(elapsed: float) -> bool:
            if elapsed >= args.seconds / 3 and pids_with_title("ServeReplica:sare:localizer") == replicas:
                os.kill(replicas[0], 9)
                return True
            return False

        killed = run_load(url, photos, clients=4, seconds=args.seconds, during=kill_one)
        after = [r for r in killed["log"] if killed["events"] and r["sent_s"] > killed["events"][0] + 3]
        kill_run = {k: v for k, v in killed.items() if k != "log"}
        kill_run.update({"killed_at_s": killed["events"][0] if killed["events"] else None,
                         "errors_after_kill_plus_3s": sum(not r["ok"] for r in after),
                         "requests_after_kill_plus_3s": len(after)})
        print(json.dumps({"replica_killed": kill_run}), flush=True)
    finally:
        stop()
    record = {"model": args.model, "index": args.index, "photos": len(photos), "replicas": args.replicas,
              "replica_cpus": args.replica_cpus, "max_batch_size": args.max_batch_size, "runs": runs,
              "replica_killed": kill_run, "host": platform.node(), "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "command": "python benchmarks/serve_load.py " + " ".join(
                  argv if argv is not None else sys.argv[1:])}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {os.path.relpath(args.out, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

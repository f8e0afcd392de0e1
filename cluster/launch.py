"""Launch helper for the AWS Ray cluster of ray_cluster.yaml: thin wrappers around Ray's own CLI.

    python cluster/launch.py up                 # ray up ray_cluster.yaml: head node, file mounts, installs
    python cluster/launch.py dashboard          # ray dashboard: forwards the head's port 8265 to localhost
                                                # (leave it running in a second terminal while submitting)
    python cluster/launch.py scale --gpus 8     # ask the autoscaler for 8 single-GPU extraction nodes now
    python cluster/launch.py submit -- sare train --config configs/pitts250k_vgg16_sare_joint.yaml --set ...
    python cluster/launch.py status             # ray status (on the head) and ray job list
    python cluster/launch.py logs JOB_ID        # ray job logs --follow
    python cluster/launch.py down               # ray down: terminates every node

`--dry-run` prints the commands (one per line, shell-quoted) instead of running them. Commands run from
the repository root, because ray_cluster.yaml mounts "." and `submit` uploads "." as the job's working
directory (what .gitignore lists, and EXCLUDES below, stay behind), so the job sees this checkout's
configs. Only the standard library is used here; running the commands needs Ray's CLI with the AWS
provider (`pip install "ray[default]" boto3`).

Where a job's driver runs (`submit --driver`): on the head by default (it only coordinates: extract, tune);
`sare train` defaults to a training node (its driver computes NetVLAD centroids and PCA whitening on CPUs;
the head is small and reserves no CPU to Ray), `sare eval` to a GPU node (FAISS GPU search).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = "ray_cluster.yaml"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # the dashboard, forwarded by `launch.py dashboard`

# `sare` subcommands (pipelines.cli.COMMAND_MODULES register these; a test keeps the two in step).
SARE_COMMANDS = (
    "data", "model", "extract", "eval", "explain", "train", "tune", "demo", "index", "locate", "serve",
)

# Driver placements: extra `ray job submit` options. The resources come from ray_cluster.yaml.
DRIVER_PLACEMENTS = {
    "head": [],
    "train-node": ["--entrypoint-resources", json.dumps({"train_node": 1})],
    "gpu": ["--entrypoint-num-gpus", "1"],
}
DEFAULT_DRIVER = {"train": "train-node", "eval": "gpu"}

# Left out of the uploaded working directory besides what .gitignore lists (Ray honours it).
EXCLUDES = [".git", ".venv", "data", "runs", "results", "**/__pycache__", "*.egg-info"]


def _config_arg(path: str) -> str:
    """The config path as the commands name it: relative to the repository root when inside it."""
    full = os.path.abspath(path if os.path.isabs(path) else os.path.join(REPO, path))
    rel = os.path.relpath(full, REPO)
    return full if rel.startswith("..") else rel


def _request_resources_code(gpus: int, train_nodes: int) -> str:
    """Python run on the head: a standing autoscaler request for that many nodes (0 and 0 clears it).
    Written without quotes, so that it survives the shells of `ray exec` unchanged."""
    return ("import ray; from ray.autoscaler.sdk import request_resources; ray.init(); "
            f"request_resources(bundles=[dict(GPU=1, extract_node=1)] * {gpus} + [dict(train_node=1)] * {train_nodes})")


def commands(args: argparse.Namespace) -> list[list[str]]:
    """The Ray CLI commands one invocation runs, in order."""
    config = _config_arg(args.config)
    yes = ["--yes"] if getattr(args, "yes", False) else []
    if args.command == "up":
        return [["ray", "up", config, *yes]]
    if args.command == "down":
        return [["ray", "down", config, *yes]]
    if args.command == "dashboard":
        return [["ray", "dashboard", config]]
    if args.command == "status":
        return [["ray", "exec", config, "ray status"], ["ray", "job", "list", "--address", args.address]]
    if args.command == "logs":
        return [["ray", "job", "logs", "--address", args.address, "--follow", args.job_id]]
    if args.command == "scale":
        code = _request_resources_code(args.gpus, args.train_nodes)
        return [["ray", "exec", config, f'python -c "{code}"']]
    if args.command == "submit":
        entrypoint = check_entrypoint(args.entrypoint)
        driver = args.driver if args.driver != "auto" else DEFAULT_DRIVER.get(entrypoint[1], "head")
        runtime_env = json.dumps({"working_dir": ".", "excludes": EXCLUDES}, separators=(",", ":"))
        cmd = ["ray", "job", "submit", "--address", args.address, "--runtime-env-json", runtime_env,
               *DRIVER_PLACEMENTS[driver]]
        if args.submission_id:
            cmd += ["--submission-id", args.submission_id]
        if args.no_wait:
            cmd.append("--no-wait")
        return [[*cmd, "--", *entrypoint]]
    raise ValueError(f"unknown command {args.command!r}")


def check_entrypoint(tokens: list[str]) -> list[str]:
    """`sare SUBCOMMAND ...` (after an optional `--`), else ValueError."""
    if tokens and tokens[0] == "--":
        tokens = tokens[1:]
    if len(tokens) < 2 or tokens[0] != "sare":
        raise ValueError("submit: give the job as `-- sare SUBCOMMAND ...`, e.g. "
                         "`submit -- sare train --config configs/pitts250k_vgg16_sare_joint.yaml`")
    if tokens[1] not in SARE_COMMANDS:
        raise ValueError(f"submit: `sare {tokens[1]}` is not a sare command ({', '.join(SARE_COMMANDS)})")
    return tokens


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cluster/launch.py", description=__doc__.split("\n\n")[0],
                                     epilog="See cluster/README.md for the whole workflow.")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="cluster launcher config (default: %(default)s)")
    parser.add_argument("--address", default=os.environ.get("RAY_DASHBOARD_ADDRESS", DEFAULT_ADDRESS),
                        help="Ray dashboard / job API address (default: $RAY_DASHBOARD_ADDRESS or %(default)s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("up", help="start or update the cluster (ray up)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p = sub.add_parser("down", help="terminate the cluster (ray down)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    sub.add_parser("dashboard", help="forward the dashboard / job API to localhost:8265 (ray dashboard)")
    sub.add_parser("status", help="nodes, resources and pending demand (ray status), and the jobs")
    p = sub.add_parser("logs", help="follow a job's output (ray job logs --follow)")
    p.add_argument("job_id")
    p = sub.add_parser("scale", help="standing request for GPU nodes (ray.autoscaler.sdk.request_resources); "
                       "extraction and sweeps size themselves from the GPUs present when they start")
    p.add_argument("--gpus", type=int, default=0, help="single-GPU extraction nodes to keep up (default 0)")
    p.add_argument("--train-nodes", type=int, default=0, help="4-GPU training nodes to keep up (default 0)")
    p = sub.add_parser("submit", help="submit `sare ...` as a Ray job (ray job submit)")
    p.add_argument("--driver", choices=("auto", *DRIVER_PLACEMENTS), default="auto",
                   help="where the job's driver runs (auto: train -> train-node, eval -> gpu, others -> head)")
    p.add_argument("--no-wait", action="store_true", help="return once submitted (follow with `logs`)")
    p.add_argument("--submission-id", help="job id (default: Ray makes one)")
    p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- sare SUBCOMMAND [ARGS ...]")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "scale" and (args.gpus < 0 or args.train_nodes < 0):
        parser.error("scale: --gpus and --train-nodes must be >= 0")
    try:
        cmds = commands(args)
    except ValueError as exc:
        parser.error(str(exc))
    for cmd in cmds:
        print(shlex.join(cmd), flush=True)
        if args.dry_run:
            continue
        status = subprocess.call(cmd, cwd=REPO)
        if status != 0:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())

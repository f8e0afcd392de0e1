"""The `sare` command line: parses arguments into typed configs and calls the stages' `run` functions.

Each stage's `cli` module exposes `register(subparsers)`, which adds its subcommand(s) and sets `func` on
them; `func(args)` imports the stage (torch, Ray) only when the command runs, so `sare --help` and light
commands start fast. `func(args)` returns the process exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import sare_core
from sare_core.allocator import keep_freed_memory

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = (
    "pipelines.data.cli",
    "pipelines.model.cli",
    "pipelines.extract.cli",
    "pipelines.evaluate.cli",
    "pipelines.explain.cli",
    "pipelines.train.cli",
    "pipelines.tune.cli",
    "pipelines.index.cli",
    "pipelines.locate.cli",
    "pipelines.serve.cli",
    "pipelines.demo.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sare",
        description="Image-based localization with NetVLAD + SARE: datasets, extraction, training, "
        "evaluation and sweeps on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"sare {sare_core.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    keep_freed_memory()  # this process's CPU passes (k-means, whitening, search, local extraction)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # Bad input or config: one clear line naming the file/field, no traceback.
        print(f"sare {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

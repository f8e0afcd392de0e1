"""`sare tune --config configs/sweep_X.yaml [--set key=value ...]`: a Ray Tune sweep (rerun to resume)."""

from __future__ import annotations

import argparse
import sys

EXIT_INTERRUPTED = 130


def _tune_cmd(args: argparse.Namespace) -> int:
    from sare_core.config_io import load_config

    from .config import SweepConfig
    from .sweep import SweepInterrupted, run

    config = load_config(SweepConfig, args.config, args.set)
    try:
        result = run(config)
    except SweepInterrupted as exc:
        print(f"sare tune: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(
        f"results: {result.sweep_dir}/results.md"
        + (f"; best config: {result.best_config_path}" if result.best_config_path else "")
    )
    return 0 if result.best is not None else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tune",
        help="hyperparameter sweep: Ray Tune + ASHA over training runs, scored "
        "from descriptor stores; rerun the same command to resume",
    )
    p.add_argument("--config", required=True, help="YAML SweepConfig (see configs/sweep_*.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override, e.g. train.dataset=data/city/manifest.parquet or search.num_samples=8",
    )
    p.set_defaults(func=_tune_cmd)

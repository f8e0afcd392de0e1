"""`sare demo [--config YAML] [--set key=value ...]`: the end-to-end job on the synthetic city."""

from __future__ import annotations

import argparse


def _demo_cmd(args: argparse.Namespace) -> int:
    from sare_core.config_io import load_config

    from ..shipped_configs import shipped_config
    from .job import DemoConfig, run

    run(load_config(DemoConfig, args.config or shipped_config("demo.yaml"), args.set))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="end-to-end run on the embedded synthetic city (local Ray)")
    p.add_argument("--config", help="YAML DemoConfig (default: the shipped demo.yaml, configs/demo.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. preset=tiny")
    p.set_defaults(func=_demo_cmd)

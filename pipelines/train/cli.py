"""`sare train --config configs/X.yaml [--set key=value ...]`."""

from __future__ import annotations

import argparse


def _train_cmd(args: argparse.Namespace) -> int:
    from sare_core.config_io import load_config
    from sare_core.training.config import TrainConfig

    from .driver import run

    result = run(load_config(TrainConfig, args.config, args.set))
    print(f"model: {result.model_path} (best epoch {result.best_epoch})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="Ray Train DDP training with re-mining (SARE, triplet, contrastive)")
    p.add_argument("--config", required=True, help="YAML TrainConfig")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. epochs=3")
    p.set_defaults(func=_train_cmd)

"""`sare train --config configs/X.yaml [--set key=value ...]`."""

from __future__ import annotations

import argparse

from .config_io import load_config
from .train import run
from .train_config import TrainConfig


def _train_cmd(args: argparse.Namespace) -> int:
    config = load_config(TrainConfig, args.config, args.set)
    result = run(config)
    print(f"model: {result.model_path} (best epoch {result.best_epoch})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="Ray Train DDP training with re-mining (SARE, triplet, contrastive)")
    p.add_argument("--config", required=True, help="YAML TrainConfig")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. epochs=3")
    p.set_defaults(func=_train_cmd)

"""`sare model describe --config X.yaml [--set model.key=value ...]`."""

from __future__ import annotations

import argparse


def _describe_cmd(args: argparse.Namespace) -> int:
    from sare_core.config_io import load_config

    from .describe import ModelSection, describe

    section = load_config(ModelSection, args.config, args.set)
    print(describe(section.model))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("model", help="inspect model configurations")
    sub = parser.add_subparsers(dest="model_command", metavar="MODEL_COMMAND")
    desc = sub.add_parser("describe", help="build the model of a config and print its shape and trainable part")
    desc.add_argument("--config", help="YAML run config with a model: section")
    desc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. model.backbone=tiny")
    desc.set_defaults(func=_describe_cmd)

"""`sare model describe`: build a model from a config and report its layers, sizes and trainable part."""

from __future__ import annotations

import argparse

from pydantic import BaseModel, ConfigDict

from sare_core.models import ModelConfig, build_model

from .config_io import load_config


class ModelSection(BaseModel):
    """A run config's `model:` section; the rest of the file is ignored here."""

    model_config = ConfigDict(extra="ignore")
    model: ModelConfig = ModelConfig()


def describe(config: ModelConfig) -> str:
    model = build_model(config)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())
    frozen_layers = len(list(model.backbone.frozen.children()))
    trainable_layers = len(list(model.backbone.trainable.children()))
    prep = model.preprocessor
    lines = [
        f"backbone        {config.backbone} (cut {config.cut or 'default'}, weights {config.weights})",
        f"local features  {model.local_dim} channels, stride {model.backbone.stride}"
        + (f" (1x1 reduction from {model.backbone.out_channels})" if model.reduction is not None else ""),
        f"pooling         {config.pooling}"
        + (f", {config.num_clusters} clusters" if config.pooling == "netvlad" else "")
        + f" -> {model.pooled_dim} dims",
        f"whitening       {config.whitening_dim or 'none'} dims (fitted after training)",
        f"parameters      {total:,} total, {trainable:,} trainable "
        f"({frozen_layers} frozen / {trainable_layers} trainable backbone layers)",
        f"preprocessing   mean {prep.mean} std {prep.std}, image_size {config.image_size}, max_side {config.max_side}",
    ]
    return "\n".join(lines)


def _describe_cmd(args: argparse.Namespace) -> int:
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

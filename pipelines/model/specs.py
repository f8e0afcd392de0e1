"""What a `--model` argument names, for every command that takes one (`sare extract`, `sare eval
--manifest`, `sare explain`):

    runs/X/model.pt                  a saved model (sare_core.models.save_model), used as it is
    my_model.yaml                    a model config (a ModelConfig mapping, or a run config's model: section)
    pretrained:BACKBONE-POOLING      a backbone with its pretrained weights and a pooling, e.g.
                                     pretrained:efficientnet_lite0-netvlad (weights shipped in a package) or
                                     pretrained:vgg16-gem (torchvision's weights: machines with internet)

`NAME=SPEC` names a table row (`trained=runs/X/model.pt`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import ValidationError

from sare_core.config_io import describe
from sare_core.models.config import ModelConfig, read_model_config
from sare_core.paths import is_remote

PRETRAINED_PREFIX = "pretrained:"
POOLINGS = ("gem", "netvlad")
PRETRAINED_WEIGHTS = {"efficientnet_lite0": "imagenet", "vgg16": "torchvision-download",
                      "resnet18": "torchvision-download", "resnet50": "torchvision-download"}
PRETRAINED_NAMES = tuple(f"{b}-{p}" for b in PRETRAINED_WEIGHTS for p in POOLINGS)
MODEL_CONFIG_SUFFIXES = (".yaml", ".yml")


def is_pretrained(spec: str) -> bool:
    return spec.startswith(PRETRAINED_PREFIX)


def is_model_config(spec: str) -> bool:
    """Whether `spec` names a model-config YAML (else a saved model file or pretrained:NAME)."""
    return spec.lower().endswith(MODEL_CONFIG_SUFFIXES)


def parse_model_arg(text: str) -> tuple[str | None, str]:
    """'NAME=SPEC' -> (NAME, SPEC); a SPEC alone -> (None, SPEC). A name holds no '/', ':' or '='."""
    name, sep, spec = text.partition("=")
    if sep and name and spec and not re.search(r"[/\\:]", name):
        return name, spec
    return None, text


def default_row_name(spec: str) -> str:
    """A table row name for a model spec: 'efficientnet_lite0-gem' for pretrained:..., else the file's
    folder and stem ('nordland_triplet/model' for runs/nordland_triplet/model.pt)."""
    if is_pretrained(spec):
        return spec[len(PRETRAINED_PREFIX):]
    path = Path(spec)
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


def parse_pretrained_name(spec: str) -> tuple[str, str]:
    """'pretrained:efficientnet_lite0-netvlad' -> ('efficientnet_lite0', 'netvlad'); ValueError naming the
    value and the known names otherwise."""
    name = spec[len(PRETRAINED_PREFIX):]
    backbone, _, pooling = name.rpartition("-")
    if backbone not in PRETRAINED_WEIGHTS or pooling not in POOLINGS:
        known = ", ".join(PRETRAINED_NAMES)
        extra = " (the tiny backbone has no pretrained weights)" if backbone == "tiny" else ""
        raise ValueError(f"--model {spec!r}: unknown pretrained model {name!r}{extra}; choose from {known}")
    return backbone, pooling


def pretrained_model_config(spec: str, base: dict | None = None, overrides: dict | None = None) -> ModelConfig:
    """The ModelConfig of `pretrained:BACKBONE-POOLING`: `base` (or defaults without whitening), the named
    backbone, its pretrained weights and pooling, then `overrides`."""
    backbone, pooling = parse_pretrained_name(spec)
    data = dict(base) if base is not None else {"whitening_dim": None}
    if data.get("backbone", backbone) != backbone:
        # another backbone's cut / train_from make no sense here
        data = {k: v for k, v in data.items() if k not in ("cut", "train_from")}
    data.update(backbone=backbone, weights=PRETRAINED_WEIGHTS[backbone], pooling=pooling)
    data.update(overrides or {})
    try:
        return ModelConfig(**data)
    except ValidationError as exc:
        raise ValueError(f"--model {spec}: invalid model config: {describe(exc)}") from None


def model_config_of(spec: str, base: dict | None = None, overrides: dict | None = None) -> ModelConfig:
    """The ModelConfig a pretrained:NAME or model-config YAML spec describes (checked: errors name it)."""
    if is_pretrained(spec):
        return pretrained_model_config(spec, base, overrides)
    return read_model_config(spec, overrides)


def check_model_spec(spec: str) -> None:
    """FileNotFoundError / ValueError naming the spec when it cannot name a model (before any work)."""
    if is_pretrained(spec):
        parse_pretrained_name(spec)
    elif not is_remote(spec) and not os.path.isfile(spec):
        raise FileNotFoundError(f"--model: no such file: {spec}")


def load_model_spec(spec: str, seed: int = 0):
    """The model a saved-model file or a model-config YAML names, in eval mode; a config is built with torch
    seeded by `seed`, so the same YAML gives the same weights (and model hash) in every run."""
    from sare_core.models.io import load_model

    if is_model_config(spec):
        import torch

        from sare_core.models.embedding import build_model

        config = read_model_config(spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(config)
        return model.eval()
    return load_model(spec).eval()

"""`sare model describe`: build a model from a config and report its layers, sizes and trainable part."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from sare_core.models.config import ModelConfig


class ModelSection(BaseModel):
    """A run config's `model:` section; the rest of the file is ignored here."""

    model_config = ConfigDict(extra="ignore")
    model: ModelConfig = ModelConfig()


def describe(config: ModelConfig) -> str:
    from sare_core.models.embedding import build_model

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

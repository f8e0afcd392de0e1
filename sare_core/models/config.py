"""ModelConfig: everything needed to rebuild an embedding model (saved with every checkpoint)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .specs import SPECS


class ModelConfig(BaseModel):
    """The embedding model: backbone -> optional 1x1 channel reduction -> pooling -> optional whitening.

    Sizes in pixels (image_size is (height, width)); whitening_dim None keeps the pooled dimension.
    """

    model_config = ConfigDict(extra="forbid")

    backbone: Literal["vgg16", "resnet18", "resnet50", "efficientnet_lite0", "tiny"] = "vgg16"
    weights: str = Field("none", description="none | imagenet | torchvision-download | /path/to/state_dict.pth")
    cut: str | None = Field(None, description="last backbone layer kept (default per backbone)")
    train_from: str | None = Field(None, description="first trainable layer; 'all' or 'none' also allowed")
    reduction_dim: int | None = Field(None, ge=1, description="1x1 conv to this many channels before pooling")
    pooling: Literal["netvlad", "gem"] = "netvlad"
    num_clusters: int = Field(64, ge=1)
    netvlad_alpha: float = Field(100.0, gt=0)
    gem_p: float = Field(3.0, gt=0)
    whitening_dim: int | None = Field(4096, ge=1, description="PCA-whitening output dims, fitted after training")
    image_size: tuple[int, int] | None = Field(None, description="(height, width) every image is resized to")
    max_side: int | None = Field(None, ge=16, description="cap on the longer image side when image_size is unset")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        spec = SPECS[self.backbone]
        if self.cut is not None and self.cut not in spec.cuts:
            raise ValueError(f"cut={self.cut!r} is not a cut of {self.backbone}; choose from {spec.cuts}")
        if self.image_size is not None and self.max_side is not None:
            raise ValueError("give image_size or max_side, not both")
        if self.image_size is not None and min(self.image_size) < 16:
            raise ValueError(f"image_size={self.image_size} is too small (at least 16 pixels a side)")
        return self


def read_model_config(path: str, overrides: dict | None = None) -> ModelConfig:
    """The ModelConfig of a YAML file: a ModelConfig mapping, or a run config's `model:` section, with
    `overrides` on top. ValueError naming the file for invalid YAML, unknown fields or invalid values."""
    from pydantic import ValidationError

    from ..config_io import describe, read_yaml_mapping

    section = read_yaml_mapping(path, section="model")
    unknown = set(section) - set(ModelConfig.model_fields)
    if unknown:
        raise ValueError(f"{path}: fields {sorted(unknown)} are not ModelConfig fields (give a ModelConfig "
                         f"mapping or a run config with a model: section)")
    try:
        return ModelConfig(**{**section, **(overrides or {})})
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid model config: {describe(exc)}") from None

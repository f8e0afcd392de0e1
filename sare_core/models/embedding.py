"""The embedding model: images (B, 3, H, W) -> L2-normalised global descriptors (B, D)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..whitening import PCAWhitening
from .backbones import FeatureExtractor, build_backbone
from .config import ModelConfig
from .gem import GeM
from .netvlad import NetVLAD
from .preprocessing import Preprocessor


class EmbeddingModel(nn.Module):
    """backbone -> [1x1 reduction] -> NetVLAD or GeM -> [PCA whitening]; every output row has unit L2 norm.

    Descriptor size: K*C for NetVLAD (C after reduction), C for GeM, or the whitening's output dims once a
    whitening is fitted (`set_whitening`).
    """

    def __init__(self, config: ModelConfig, backbone: FeatureExtractor):
        super().__init__()
        self.config = config
        self.backbone = backbone
        channels = backbone.out_channels
        self.reduction: nn.Module | None = None
        if config.reduction_dim is not None:
            self.reduction = nn.Conv2d(channels, config.reduction_dim, kernel_size=1)
            channels = config.reduction_dim
        self.local_dim = channels
        if config.pooling == "netvlad":
            self.pool: nn.Module = NetVLAD(config.num_clusters, channels, alpha=config.netvlad_alpha)
        else:
            self.pool = GeM(channels, p=config.gem_p)
        self.whitening: PCAWhitening | None = None
        self.metadata: dict = {}  # provenance recorded by save_model / read back by load_model

    @property
    def pooled_dim(self) -> int:
        return self.pool.output_dim

    @property
    def descriptor_dim(self) -> int:
        return self.whitening.output_dim if self.whitening is not None else self.pooled_dim

    @property
    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self.config.backbone, self.config.image_size, self.config.max_side)

    def set_whitening(self, whitening: PCAWhitening | None) -> None:
        if whitening is not None and whitening.input_dim != self.pooled_dim:
            raise ValueError(f"whitening expects {whitening.input_dim}-dim input, the model pools to {self.pooled_dim}")
        self.whitening = whitening

    def local_features(self, images: torch.Tensor, from_frozen: bool = False) -> torch.Tensor:
        """(B, 3, H, W) -> (B, local_dim, h, w) feature maps entering the pooling layer. With `from_frozen`,
        the input is already the backbone's frozen-prefix output (a `FrozenFeatureCache`'s maps)."""
        x = self.backbone.trainable(images) if from_frozen else self.backbone(images)
        return self.reduction(x) if self.reduction is not None else x

    def pooled(self, images: torch.Tensor, from_frozen: bool = False) -> torch.Tensor:
        """(B, 3, H, W) -> (B, pooled_dim) L2-normalised descriptors before whitening."""
        return self.pool(self.local_features(images, from_frozen))

    def forward(self, images: torch.Tensor, from_frozen: bool = False) -> torch.Tensor:
        """(B, 3, H, W) images (or, with `from_frozen`, frozen-prefix maps) -> (B, D) unit descriptors."""
        desc = self.pooled(images, from_frozen)
        if self.whitening is not None:
            desc = self.whitening(desc)
        return F.normalize(desc, p=2, dim=1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def build_model(config: ModelConfig | dict, load_weights: bool = True) -> EmbeddingModel:
    """The embedding model a config describes. `load_weights=False` skips pretrained backbone weights
    (used when a checkpoint's state dict will overwrite them anyway)."""
    if isinstance(config, dict):
        config = ModelConfig(**config)
    backbone = build_backbone(
        config.backbone, weights=config.weights if load_weights else "none", cut=config.cut, train_from=config.train_from
    )
    return EmbeddingModel(config, backbone)

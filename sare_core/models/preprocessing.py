"""Image preprocessing per backbone, in one place: decode, resize (`images`), to tensor, normalise.

Images become float32 tensors (3, H, W) normalised with the backbone's training statistics. Resizing
either forces a fixed (height, width) in pixels, or caps the longer side at `max_side` pixels keeping the
aspect ratio (e.g. 640 for Tokyo 24/7 queries); never both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .images import load_rgb, resized_uint8, target_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

# (mean, std) per backbone, on RGB in [0, 1].
NORMALIZATION = {
    "vgg16": (IMAGENET_MEAN, IMAGENET_STD),
    "resnet18": (IMAGENET_MEAN, IMAGENET_STD),
    "resnet50": (IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_lite0": (HALF, HALF),  # TensorFlow-trained: inputs in [-1, 1]
    "tiny": (HALF, HALF),
}


@dataclass(frozen=True)
class Preprocessor:
    """PIL image -> normalised float32 tensor (3, H, W) for one backbone.

    image_size: (height, width) in pixels to resize every image to (batches need equal sizes), or None.
    max_side: cap on the longer side in pixels when image_size is None, or None to keep the size.
    """

    backbone: str
    image_size: tuple[int, int] | None = None
    max_side: int | None = None

    def __post_init__(self) -> None:
        if self.backbone not in NORMALIZATION:
            raise ValueError(f"no preprocessing known for backbone {self.backbone!r}")
        if self.image_size is not None and self.max_side is not None:
            raise ValueError("give model.image_size or model.max_side, not both")

    @property
    def mean(self) -> tuple[float, float, float]:
        return NORMALIZATION[self.backbone][0]

    @property
    def std(self) -> tuple[float, float, float]:
        return NORMALIZATION[self.backbone][1]

    def resize(self, img: Image.Image) -> Image.Image:
        size = target_size(img.width, img.height, self.image_size, self.max_side)
        return img if size == img.size else img.resize(size, Image.BILINEAR)

    def to_uint8(self, img: Image.Image) -> np.ndarray:
        """Resized RGB pixels as (H, W, 3) uint8 (`images.resized_uint8`)."""
        return resized_uint8(img, self.image_size, self.max_side)

    def normalize_uint8(self, pixels: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) or (H, W, 3) uint8 -> (B, 3, H, W) or (3, H, W) normalised float32 (on pixels' device)."""
        x = torch.as_tensor(pixels)
        batched = x.dim() == 4
        x = x if batched else x.unsqueeze(0)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        return x if batched else x[0]

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.normalize_uint8(self.to_uint8(img))

    def load(self, path: str) -> torch.Tensor:
        """Read, resize and normalise one image file: (3, H, W) float32."""
        return self(load_rgb(path))

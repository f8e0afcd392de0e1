"""Decoding and resizing images, without torch: the CPU part of preprocessing that extraction's decode
tasks run in processes that never import torch (`Preprocessor` builds on it for the model's input).

Sizes are in pixels; `image_size` is (height, width). An image is resized to `image_size` when given, else
its longer side is capped at `max_side` (only ever shrunk), else kept; resizing is bilinear (PIL).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..paths import is_remote


def load_rgb(path: str) -> Image.Image:
    """Decode the image at `path` (a local file, or an fsspec URI such as s3://...) fully, as RGB, so a
    truncated file fails here and not later."""
    source: str | io.BytesIO = path
    if is_remote(path):
        import fsspec

        with fsspec.open(path, "rb") as f:
            source = io.BytesIO(f.read())
    with Image.open(source) as img:
        img.load()
        return img.convert("RGB")


def target_size(width: int, height: int, image_size: tuple[int, int] | None, max_side: int | None) -> tuple[int, int]:
    """(width, height) in pixels after resizing."""
    if image_size is not None:
        return int(image_size[1]), int(image_size[0])
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def resized_uint8(img: Image.Image, image_size: tuple[int, int] | None = None,
                  max_side: int | None = None) -> np.ndarray:
    """Resized RGB pixels as a writable (H, W, 3) uint8 array: the compact form moved between processes."""
    img = img.convert("RGB")
    size = target_size(img.width, img.height, image_size, max_side)
    if size != img.size:
        img = img.resize(size, Image.BILINEAR)
    return np.array(img, dtype=np.uint8)

"""Plain single-process descriptor extraction: image files -> (N, D) float32 descriptors.

The reference the Ray Data pipeline is checked against, and what training workers use to refresh their
mining cache. Images are decoded with PIL, preprocessed for the model's backbone and run in batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .embedding import EmbeddingModel
from .preprocessing import load_rgb


@torch.no_grad()
def embed_paths(
    model: EmbeddingModel,
    paths: Sequence[str],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(len(paths), D) float32 L2-normalised descriptors, in the order of `paths`.

    Images of different sizes (no fixed model.image_size) are run in runs of equal size. The model is put
    in eval mode for the call and restored afterwards. `progress(n)` is called with each batch's size.
    """
    net = model.module if hasattr(model, "module") else model  # a DDP wrapper holds the model
    prep = net.preprocessor
    was_training = net.training
    net.eval()
    out = np.empty((len(paths), net.descriptor_dim), dtype=np.float32)
    try:
        start = 0
        while start < len(paths):
            pixels = [prep.to_uint8(load_rgb(p)) for p in paths[start : start + batch_size]]
            # Split the batch where the image size changes, so every forward pass stacks equal shapes.
            run_start = 0
            for i in range(1, len(pixels) + 1):
                if i == len(pixels) or pixels[i].shape != pixels[run_start].shape:
                    x = prep.normalize_uint8(np.stack(pixels[run_start:i])).to(device)
                    out[start + run_start : start + i] = net(x).float().cpu().numpy()
                    run_start = i
            if progress is not None:
                progress(len(pixels))
            start += len(pixels)
    finally:
        net.train(was_training)
    return out

"""Plain single-process descriptor extraction: image files -> (N, D) float32 descriptors.

The reference the Ray Data pipeline is checked against, and what training workers use to refresh their
mining cache. Images are decoded with PIL, preprocessed for the model's backbone and run in batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .embedding import EmbeddingModel
from .preprocessing import load_rgb


def _decode(prep, paths: Sequence[str]) -> list[np.ndarray]:
    """The images' resized (H, W, 3) uint8 pixels; an unreadable one raises OSError naming its path."""
    pixels = []
    for path in paths:
        try:
            pixels.append(prep.to_uint8(load_rgb(path)))
        except OSError as error:
            raise type(error)(f"{path}: cannot decode the image ({error})") from error
    return pixels


@torch.no_grad()
def embed_paths(
    model: EmbeddingModel,
    paths: Sequence[str],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    timings: MutableMapping[str, float] | None = None,
) -> np.ndarray:
    """(len(paths), D) float32 L2-normalised descriptors, in the order of `paths`.

    The next batch is decoded in a background thread while the model runs on the current one (PIL and
    torch both release the GIL). Images of different sizes (no fixed model.image_size) are run in runs of
    equal size. The model is put in eval mode for the call and restored afterwards. `progress(n)` is called
    with each batch's size. `timings`, when given, gains the call's seconds under "decode" (waiting for
    decoded images: the decoding not hidden behind forward passes) and "forward" (the forward passes).
    """
    net = model.module if hasattr(model, "module") else model  # a DDP wrapper holds the model
    prep = net.preprocessor
    was_training = net.training
    net.eval()
    out = np.empty((len(paths), net.descriptor_dim), dtype=np.float32)
    batches = [paths[s : s + batch_size] for s in range(0, len(paths), batch_size)]
    decode = forward = 0.0
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
            pending = pool.submit(_decode, prep, batches[0]) if batches else None
            start = 0
            for b in range(len(batches)):
                started = time.perf_counter()
                pixels = pending.result()
                decode += time.perf_counter() - started
                pending = pool.submit(_decode, prep, batches[b + 1]) if b + 1 < len(batches) else None
                # Split the batch where the image size changes, so every forward pass stacks equal shapes.
                run_start = 0
                for i in range(1, len(pixels) + 1):
                    if i == len(pixels) or pixels[i].shape != pixels[run_start].shape:
                        x = prep.normalize_uint8(np.stack(pixels[run_start:i])).to(device)
                        started = time.perf_counter()
                        out[start + run_start : start + i] = net(x).float().cpu().numpy()
                        forward += time.perf_counter() - started
                        run_start = i
                if progress is not None:
                    progress(len(pixels))
                start += len(pixels)
    finally:
        net.train(was_training)
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + decode
        timings["forward"] = timings.get("forward", 0.0) + forward
    return out

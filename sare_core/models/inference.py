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
from .frozen_cache import FrozenFeatureCache
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
    cache: FrozenFeatureCache | None = None,
) -> np.ndarray:
    """(len(paths), D) float32 L2-normalised descriptors, in the order of `paths`.

    The next batch is decoded in a background thread while the model runs on the current one (PIL and
    torch both release the GIL). Images of different sizes (no fixed model.image_size) are run in runs of
    equal size. The model is put in eval mode for the call and restored afterwards. `progress(n)` is called
    with each batch's size. `timings`, when given, gains the call's seconds under "decode" (waiting for
    decoded images: the decoding not hidden behind forward passes) and "forward" (the forward passes).
    `cache`: the model's `FrozenFeatureCache` (a training run's); images it holds are not decoded and run
    through the trainable layers only, the others fill it (needs a fixed model.image_size).
    """
    net = model.module if hasattr(model, "module") else model  # a DDP wrapper holds the model
    prep = net.preprocessor
    if cache is not None and not cache.applies_to(net):
        raise ValueError("the frozen-feature cache was filled by another model's frozen layers")
    if cache is not None and net.config.image_size is None:
        raise ValueError("a frozen-feature cache needs a fixed model.image_size (maps of one shape)")
    was_training = net.training
    net.eval()
    out = np.empty((len(paths), net.descriptor_dim), dtype=np.float32)
    batches = [paths[s : s + batch_size] for s in range(0, len(paths), batch_size)]

    def run_plain(batch, pixels) -> tuple[np.ndarray, float]:
        rows = np.empty((len(batch), net.descriptor_dim), dtype=np.float32)
        # Split the batch where the image size changes, so every forward pass stacks equal shapes.
        run_start = 0
        for i in range(1, len(pixels) + 1):
            if i == len(pixels) or pixels[i].shape != pixels[run_start].shape:
                x = prep.normalize_uint8(np.stack(pixels[run_start:i])).to(device)
                rows[run_start:i] = net(x).float().cpu().numpy()
                run_start = i
        return rows, 0.0

    def run_cached(batch, decoded) -> tuple[np.ndarray, float]:
        needed = cache.missing(batch)
        started = time.perf_counter()  # those the cache dropped since it was looked at (its budget full)
        decoded.update(zip(late := [p for p in needed if p not in decoded], _decode(prep, late)))
        late_seconds = time.perf_counter() - started
        pixels = prep.normalize_uint8(np.stack([decoded[p] for p in needed])) if needed else None
        return net(cache.features(batch, pixels), from_frozen=True).float().cpu().numpy(), late_seconds

    if cache is None:
        load, run = (lambda batch: _decode(prep, batch)), run_plain
    else:
        load, run = (lambda batch: dict(zip(missing := cache.missing(batch), _decode(prep, missing)))), run_cached
    try:
        decode, forward = _prefetched(batches, load, run, out, progress)
    finally:
        net.train(was_training)
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + decode
        timings["forward"] = timings.get("forward", 0.0) + forward
    return out


def _prefetched(batches, load, run, out: np.ndarray, progress) -> tuple[float, float]:
    """For each batch: `load(batch)` runs in a thread one batch ahead, `run(batch, loaded)` -> (rows, seconds
    of it spent loading) fills `out` in order. Returns the seconds spent waiting for loads and running."""
    waited = ran = 0.0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        start = 0
        for b, batch in enumerate(batches):
            started = time.perf_counter()
            loaded = pending.result()
            waited += time.perf_counter() - started
            pending = pool.submit(load, batches[b + 1]) if b + 1 < len(batches) else None
            started = time.perf_counter()
            rows, loading = run(batch, loaded)
            out[start : start + len(batch)] = rows
            ran += time.perf_counter() - started - loading
            waited += loading
            if progress is not None:
                progress(len(batch))
            start += len(batch)
    return waited, ran

"""What a model's frozen backbone prefix makes of each image, computed once per training run.

Training updates only the layers from `train_from` on; the frozen prefix (no gradients, BatchNorm in eval
mode) maps an image file to the same feature map in every epoch, yet on EfficientNet-Lite0 at 120x160 it is
about 70% of a forward pass. A `FrozenFeatureCache` keeps those maps, per image path, so that re-mining,
validation and the training steps run only the trainable suffix for images seen before.

Valid while the prefix's weights and the preprocessing stay as they are: a cache belongs to one frozen module
(`applies_to`) and one training run. Images whose pixels change between uses (colour-jittered queries) must
not go through it. At most `max_bytes` of maps are kept; past that, images are computed each time.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence

import numpy as np
import torch
import torch.nn as nn


class FrozenFeatureCache:
    """Per image path, the frozen prefix's (C, h, w) float32 output, kept on the CPU."""

    # What embedding a cached image costs, as a fraction of an uncached one (decode + whole forward pass):
    # the frozen prefix is 62-73% of a forward pass on the shipped models (benchmarks/frozen_cache.py,
    # results/frozen_cache*.json) and a cached image is not decoded. Used to balance workers' shares.
    hit_cost = 0.35

    def __init__(self, frozen: nn.Module, max_bytes: int, device: str | torch.device = "cpu"):
        if not len(list(frozen.children())):
            raise ValueError("the model has no frozen layers (train_from is its first layer): nothing to cache")
        self.frozen = frozen
        self.max_bytes = int(max_bytes)
        self.device = torch.device(device)
        self.bytes = 0
        self.hits = self.misses = 0
        self.adopted = 0  # maps another worker computed and handed over (`adopt`)
        self._maps: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._maps)

    def __contains__(self, path: str) -> bool:
        return path in self._maps

    @property
    def map_shape(self) -> tuple[int, ...] | None:
        """(C, h, w) of the kept maps; None while none is kept."""
        first = next(iter(self._maps.values()), None)
        return None if first is None else tuple(first.shape)

    def applies_to(self, model: nn.Module) -> bool:
        """Whether `model` (an EmbeddingModel) runs the frozen module this cache was filled by."""
        return getattr(getattr(model, "backbone", None), "frozen", None) is self.frozen

    def held(self, paths: Sequence[str]) -> np.ndarray:
        """(len(paths),) bool: which of `paths` are cached."""
        return np.fromiter((p in self._maps for p in paths), dtype=bool, count=len(paths))

    def missing(self, paths: Sequence[str]) -> list[str]:
        """The distinct paths of `paths` not cached, in first-seen order (the images to decode)."""
        return list(dict.fromkeys(p for p in paths if p not in self._maps))

    @torch.no_grad()
    def compute(self, pixels: torch.Tensor, timings: MutableMapping[str, float] | None = None) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, C, h, w) frozen-prefix maps on the cache's device, not kept
        (timed under "frozen_forward" in `timings`)."""
        started = time.perf_counter()
        was_training = self.frozen.training
        self.frozen.eval()
        try:
            return self.frozen(pixels.to(self.device))
        finally:
            self.frozen.train(was_training)
            if timings is not None:
                timings["frozen_forward"] = timings.get("frozen_forward", 0.0) + time.perf_counter() - started

    def features(self, paths: Sequence[str], missing_pixels: torch.Tensor | None,
                 timings: MutableMapping[str, float] | None = None) -> torch.Tensor:
        """(len(paths), C, h, w) frozen maps of `paths` on the cache's device. `missing_pixels`: the
        normalised pixels of `self.missing(paths)`, in that order (None when nothing is missing); their maps
        are computed (timed under "frozen_forward" in `timings`) and kept while the budget allows."""
        missing = self.missing(paths)
        fresh: dict[str, torch.Tensor] = {}
        if missing:
            if missing_pixels is None or len(missing_pixels) != len(missing):
                got = 0 if missing_pixels is None else len(missing_pixels)
                raise ValueError(f"{len(missing)} images are not cached but {got} were decoded for them")
            maps = self.compute(missing_pixels, timings)
            for path, fmap in zip(missing, maps):
                fresh[path] = fmap
                self._keep(path, fmap)
        self.misses += len(missing)
        self.hits += len(paths) - sum(1 for p in paths if p in fresh)
        rows = [fresh[p] if p in fresh else self._maps[p].to(self.device, non_blocking=True) for p in paths]
        return torch.stack(rows)

    def maps(self, paths: Sequence[str]) -> torch.Tensor:
        """(len(paths), C, h, w) float32 CPU maps of `paths`, every one of which the cache holds."""
        return torch.stack([self._maps[p] for p in paths])

    def adopt(self, paths: Sequence[str], maps: torch.Tensor) -> int:
        """Keep `maps` ((len(paths), C, h, w), computed elsewhere by the same frozen layers from the same
        preprocessing: another DDP worker's) for the paths not held yet, while the budget allows; returns how
        many were kept."""
        kept = 0
        for path, fmap in zip(paths, maps):
            if path not in self._maps and self._keep(path, fmap):
                kept += 1
        self.adopted += kept
        return kept

    def _keep(self, path: str, fmap: torch.Tensor) -> bool:
        size = fmap.numel() * 4
        if self.bytes + size > self.max_bytes:
            return False
        kept = torch.empty(fmap.shape, dtype=torch.float32)  # one copy: to the CPU, float32, contiguous
        kept.copy_(fmap.detach())
        self._maps[path] = kept
        self.bytes += size
        return True

    def stats(self) -> dict:
        """Images kept, their bytes, the lookups served from the cache / computed so far, and the maps
        adopted from other workers."""
        return {"images": len(self._maps), "bytes": self.bytes, "hits": self.hits, "misses": self.misses,
                "adopted": self.adopted}

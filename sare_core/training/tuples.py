"""The images of training tuples (query, positive, negatives) as one batch: normalised pixels, or, through a
frozen-feature cache, the frozen layers' maps."""

from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np
import torch

from ..data.place_dataset import PlaceDataset
from ..models.frozen_cache import FrozenFeatureCache
from ..models.images import load_rgb
from ..models.preprocessing import Preprocessor


class TupleImages:
    """Loads tuples of a training split: queries (colour-jittered when `color_jitter` > 0), positives and
    negatives, through the model's preprocessing. Seeds torch's generator (the jitter draws from it).

    With a `cache`, a batch is the frozen layers' maps (`from_frozen` is then True: run the model with it):
    images the cache holds are not decoded, the others fill it; jittered queries are run through the frozen
    layers each time (their pixels change every draw).
    """

    def __init__(self, dataset: PlaceDataset, preprocessor: Preprocessor, color_jitter: float = 0.0, seed: int = 0,
                 cache: FrozenFeatureCache | None = None):
        self.dataset = dataset
        self.prep = preprocessor
        self.cache = cache
        self.jitter = None
        if color_jitter > 0:
            from torchvision.transforms import ColorJitter

            s = color_jitter
            self.jitter = ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4))
        torch.manual_seed(seed)

    @property
    def from_frozen(self) -> bool:
        """Whether batches are frozen-layer maps rather than pixels."""
        return self.cache is not None

    def _load(self, path: str, jitter: bool = False) -> np.ndarray:
        img = load_rgb(path)
        if jitter and self.jitter is not None:
            img = self.jitter(img)
        return self.prep.to_uint8(img)

    def __call__(self, q_rows, p_rows, n_rows, timings: MutableMapping[str, float] | None = None) -> torch.Tensor:
        """(B*(2+N), ...) float32: the B queries, then their B positives, then the negatives tuple-major;
        (B*(2+N), 3, H, W) pixels, or the frozen layers' (B*(2+N), C, h, w) maps with a cache (the frozen
        layers' seconds for uncached images go to timings["frozen_forward"])."""
        queries = [self.dataset.q_paths[q] for q in q_rows]
        others = [self.dataset.db_paths[p] for p in p_rows] + [self.dataset.db_paths[n] for row in n_rows for n in row]
        if self.cache is None:
            pixels = [self._load(p, jitter=True) for p in queries] + [self._load(p) for p in others]
            return self.prep.normalize_uint8(np.stack(pixels))
        if self.jitter is None:
            return self._cached(queries + others, timings)
        q_maps = self.cache.compute(self._pixels(queries, jitter=True), timings)
        return torch.cat([q_maps, self._cached(others, timings)])

    def _pixels(self, paths: list[str], jitter: bool = False) -> torch.Tensor:
        return self.prep.normalize_uint8(np.stack([self._load(p, jitter) for p in paths]))

    def _cached(self, paths: list[str], timings) -> torch.Tensor:
        missing = self.cache.missing(paths)
        return self.cache.features(paths, self._pixels(missing) if missing else None, timings)

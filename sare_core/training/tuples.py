"""The images of training tuples (query, positive, negatives) as one normalised batch."""

from __future__ import annotations

import numpy as np
import torch

from ..data.place_dataset import PlaceDataset
from ..models.images import load_rgb
from ..models.preprocessing import Preprocessor


class TupleImages:
    """Loads tuples of a training split: queries (colour-jittered when `color_jitter` > 0), positives and
    negatives, through the model's preprocessing. Seeds torch's generator (the jitter draws from it)."""

    def __init__(self, dataset: PlaceDataset, preprocessor: Preprocessor, color_jitter: float = 0.0, seed: int = 0):
        self.dataset = dataset
        self.prep = preprocessor
        self.jitter = None
        if color_jitter > 0:
            from torchvision.transforms import ColorJitter

            s = color_jitter
            self.jitter = ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4))
        torch.manual_seed(seed)

    def _load(self, path: str, jitter: bool = False) -> np.ndarray:
        img = load_rgb(path)
        if jitter and self.jitter is not None:
            img = self.jitter(img)
        return self.prep.to_uint8(img)

    def __call__(self, q_rows, p_rows, n_rows) -> torch.Tensor:
        """(B*(2+N), 3, H, W) float32: the B queries, then their B positives, then the negatives tuple-major."""
        pixels = [self._load(self.dataset.q_paths[q], jitter=True) for q in q_rows]
        pixels += [self._load(self.dataset.db_paths[p]) for p in p_rows]
        pixels += [self._load(self.dataset.db_paths[n]) for row in n_rows for n in row]
        return self.prep.normalize_uint8(np.stack(pixels))

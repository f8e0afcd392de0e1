"""Counter-based random numbers for the synthetic city.

Every random quantity of an image is a pure function of (seed, split, role, image index, stream), so any
process can recompute any image's parameters without replaying a sequential generator: the output is the
same whatever the chunking or the number of worker processes. The mixer is SplitMix64's finaliser, applied
to a running combination of the keys (all arithmetic in wrapping uint64).
"""

from __future__ import annotations

import numpy as np

SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
ROLE_CODES = {"database": 1, "queries": 2, "city": 3}

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: uint64 array -> uint64 array of well-mixed bits (same shape)."""
    with np.errstate(over="ignore"):  # wrapping is the point; numpy only warns for 0-d values
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MUL1
        z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def hash_keys(*keys) -> np.ndarray:
    """Hash non-negative integer keys (scalars or broadcastable int arrays) into uint64 values."""
    h = np.zeros((), dtype=np.uint64)
    for key in keys:
        h = mix64(h ^ np.asarray(key).astype(np.uint64))
    return h


def uniform(*keys) -> np.ndarray:
    """Uniform floats in [0, 1) (float64), one per broadcast element of the integer keys."""
    return (hash_keys(*keys) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


class ImageStreams:
    """Independent random streams for a set of images of one (seed, split, role).

    `indices` (n,) are the images' global indices within their split and role; `streams.uniform(k)`
    returns (n,) floats in [0, 1) that depend only on (seed, split, role, index, k). `keys` (n,) uint64
    are the per-image hashes the streams derive from (usable as seeds of further per-image randomness).
    """

    def __init__(self, seed: int, split: str, role: str, indices: np.ndarray) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.keys = hash_keys(int(seed), SPLIT_CODES[split], ROLE_CODES[role], self.indices)

    def uniform(self, stream: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """(n,) float64 uniform in [low, high) from stream number `stream`."""
        u = (mix64(self.keys ^ mix64(np.uint64(stream))) >> np.uint64(11)).astype(np.float64)
        return low + (high - low) * u * (1.0 / 9007199254740992.0)

    def normal(self, stream: int, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
        """(n,) float64 normal deviates (Box-Muller over streams `stream` and `stream + 10_000`)."""
        u1 = np.maximum(self.uniform(stream), 1e-12)
        u2 = self.uniform(stream + 10_000)
        return mean + std * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)

    def integers(self, stream: int, high: int) -> np.ndarray:
        """(n,) int64 uniform in [0, high)."""
        return np.minimum((self.uniform(stream) * high).astype(np.int64), high - 1)

    def choice(self, stream: int, probabilities) -> np.ndarray:
        """(n,) int64 category indices drawn with the given probabilities (normalised here)."""
        cdf = np.cumsum(np.asarray(probabilities, dtype=np.float64))
        cdf /= cdf[-1]
        return np.minimum(np.searchsorted(cdf, self.uniform(stream), side="right"), len(cdf) - 1)

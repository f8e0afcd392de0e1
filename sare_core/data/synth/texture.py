"""Per-pixel procedural texture helpers: integer hashing, value noise and anti-aliased band coverage.

All functions are element-wise over arrays of world coordinates (metres), so a texel's value depends only
on where it is in the world, never on which image or batch it was rendered in.
"""

from __future__ import annotations

import numpy as np

_FNV_OFFSET = np.uint32(2166136261)
_FNV_PRIME = np.uint32(16777619)
_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_INV_2_24 = np.float32(1.0 / 16777216.0)


def hash32(*keys) -> np.ndarray:
    """Hash integer arrays (any int dtype, negatives allowed, broadcastable) to uint32."""
    h = _FNV_OFFSET
    for key in keys:
        k = np.asarray(key)
        k = k.astype(np.int32).view(np.uint32) if k.dtype.kind == "i" else k.astype(np.uint32)
        h = (h ^ k) * _FNV_PRIME
    h = np.asarray(h, dtype=np.uint32)
    h = (h ^ (h >> np.uint32(16))) * _M1
    h = (h ^ (h >> np.uint32(15))) * _M2
    return h ^ (h >> np.uint32(16))


def hash_unit(*keys) -> np.ndarray:
    """Hash integer arrays to float32 in [0, 1)."""
    return (hash32(*keys) >> np.uint32(8)).astype(np.float32) * _INV_2_24


def value_noise(x: np.ndarray, y: np.ndarray, salt) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1) on a unit lattice (float32, shape of x); `salt` picks the field."""
    fx, fy = np.floor(x), np.floor(y)
    ix, iy = fx.astype(np.int32), fy.astype(np.int32)
    tx, ty = (x - fx).astype(np.float32), (y - fy).astype(np.float32)
    tx = tx * tx * (3 - 2 * tx)
    ty = ty * ty * (3 - 2 * ty)
    v00 = hash_unit(ix, iy, salt)
    v10 = hash_unit(ix + 1, iy, salt)
    v01 = hash_unit(ix, iy + 1, salt)
    v11 = hash_unit(ix + 1, iy + 1, salt)
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    return top + (bottom - top) * ty


def band(c: np.ndarray, lo, hi, footprint: np.ndarray) -> np.ndarray:
    """Fraction of a pixel covering [c - fp/2, c + fp/2] that falls inside [lo, hi] (box-filtered edge)."""
    half = 0.5 * footprint
    overlap = np.minimum(c + half, hi) - np.maximum(c - half, lo)
    return np.clip(overlap / footprint, 0.0, 1.0)


def periodic_band(c: np.ndarray, period, lo, hi, footprint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of the interval [lo, hi] repeated every `period` metres, and the period index of c.

    Where the pixel footprint approaches the period the pattern cannot be resolved, and the coverage
    fades to its average (hi - lo) / period instead of aliasing into moire.
    """
    cell = np.floor(c / period)
    phase = c - cell * period
    cov = band(phase, lo, hi, footprint)
    fade = np.clip(footprint / period * 2.0 - 0.5, 0.0, 1.0)
    return cov + (np.float32(1.0) * (hi - lo) / period - cov) * fade, cell.astype(np.int32)


def smoothstep(edge0, edge1, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)

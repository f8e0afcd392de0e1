"""Ground truth for place recognition: which database images show the same place as a query.

Coordinates are UTM (easting, northing) in metres; labels are integer landmark ids.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def _as_utm(name: str, utm) -> np.ndarray:
    arr = np.asarray(utm, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) (easting, northing in metres), got {arr.shape}")
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(f"{name} has non-finite coordinates in rows {bad[:10].tolist()}")
    return arr


def positives_within(q_utm, db_utm, radius: float) -> list[np.ndarray]:
    """Database indices within `radius` metres (inclusive) of each query.

    q_utm: (M, 2), db_utm: (N, 2) in metres. Returns M int64 arrays, each sorted by ascending database
    index (the standard protocol: Pitts/Tokyo positives are database images within 25 m).
    """
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite non-negative number of metres, got {radius}")
    q = _as_utm("q_utm", q_utm)
    db = _as_utm("db_utm", db_utm)
    if len(db) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(len(q))]
    tree = cKDTree(db)
    hits = tree.query_ball_point(q, r=radius, return_sorted=True)
    return [np.asarray(h, dtype=np.int64) for h in hits]


def positives_same_label(q_labels, db_labels) -> list[np.ndarray]:
    """Database indices sharing each query's label (Google Landmarks: same landmark id = same place).

    A negative label (-1) marks a query without a landmark (a distractor); it gets no positives.
    Each array is sorted by ascending database index.
    """
    q = np.asarray(q_labels, dtype=np.int64)
    db = np.asarray(db_labels, dtype=np.int64)
    order = np.argsort(db, kind="stable")
    sorted_labels = db[order]
    out = []
    for label in q:
        if label < 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        lo, hi = np.searchsorted(sorted_labels, [label, label + 1])
        out.append(np.sort(order[lo:hi]))
    return out


def negatives_beyond(q_utm, db_utm, radius: float) -> list[np.ndarray]:
    """Complement of `positives_within`: database indices strictly farther than `radius` metres.

    Training draws negatives only from here (beyond `pos_dist_thr`, 25 m by default), so images 10-25 m
    away are neither positives nor negatives.
    """
    db_count = len(_as_utm("db_utm", db_utm))
    near = positives_within(q_utm, db_utm, radius)
    everything = np.arange(db_count, dtype=np.int64)
    return [np.setdiff1d(everything, n, assume_unique=True) for n in near]


def count_positives(positives: list[np.ndarray]) -> np.ndarray:
    """(M,) number of positives per query."""
    return np.array([len(p) for p in positives], dtype=np.int64)

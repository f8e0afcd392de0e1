"""Disjoint splits of a sequence dataset by place index (frame index as `utm_east`, e.g. Nordland).

Aligned traverses put every frame's index along the route in `utm_east` (see `aligned`), so "metres" read
as "frames". `split_by_index` cuts one such PlaceDataset into index ranges, one per split, each with its
own thresholds in frames:

    pos_dist_thr             evaluation positives lie within it; training negatives only beyond it
    nontriv_pos_dist_sq_thr  (frames^2) training positives lie within its square root

A database image and a query belong to a split when their index lies in its half-open range
[start, stop). Ranges must not overlap; leave a gap between them (at least the training negatives' radius)
so that no validation frame is a near-neighbour of a training frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .place_dataset import PlaceDataset


@dataclass(frozen=True)
class IndexRange:
    """One split: place indices [start, stop) and its thresholds in frames."""

    split: str
    start: float
    stop: float
    pos_dist_thr: float
    train_pos_radius: float | None = None  # default: pos_dist_thr

    def __post_init__(self) -> None:
        if not self.stop > self.start:
            raise ValueError(f"split {self.split!r}: stop ({self.stop}) must be above start ({self.start})")
        if not self.pos_dist_thr > 0:
            raise ValueError(f"split {self.split!r}: pos_dist_thr must be > 0 frames, got {self.pos_dist_thr}")
        if self.train_pos_radius is not None and not self.train_pos_radius > 0:
            raise ValueError(f"split {self.split!r}: train_pos_radius must be > 0 frames, got "
                             f"{self.train_pos_radius}")


def split_by_index(dataset: PlaceDataset, ranges: list[IndexRange]) -> list[PlaceDataset]:
    """One PlaceDataset per range, holding the database images and queries whose `utm_east` lies in it.

    ValueError (naming the splits) when the dataset is not geographic, when ranges overlap or repeat a
    split, or when a range holds no database image or no query.
    """
    if not dataset.is_geographic:
        raise ValueError(f"{dataset.name}: splitting by index needs utm_east frame indices, not labels")
    names = [r.split for r in ranges]
    if len(set(names)) != len(names):
        raise ValueError(f"split names repeat: {names}")
    ordered = sorted(ranges, key=lambda r: r.start)
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.stop:
            raise ValueError(f"splits {a.split!r} [{a.start}, {a.stop}) and {b.split!r} [{b.start}, {b.stop}) "
                             f"overlap")
    out = []
    for r in ranges:
        db = np.flatnonzero((dataset.db_utm[:, 0] >= r.start) & (dataset.db_utm[:, 0] < r.stop))
        q = np.flatnonzero((dataset.q_utm[:, 0] >= r.start) & (dataset.q_utm[:, 0] < r.stop))
        if len(db) == 0 or len(q) == 0:
            raise ValueError(f"split {r.split!r} [{r.start}, {r.stop}): {len(db)} database images and {len(q)} "
                             f"queries in {dataset.name}; need both")
        train_radius = r.pos_dist_thr if r.train_pos_radius is None else r.train_pos_radius
        extras = {}
        for key, value in dataset.extras.items():
            if key.startswith("q_") and isinstance(value, np.ndarray) and len(value) == dataset.num_q:
                extras[key] = value[q]
            elif key.startswith("db_") and isinstance(value, np.ndarray) and len(value) == dataset.num_db:
                extras[key] = value[db]
            elif not isinstance(value, (np.ndarray, list)):
                extras[key] = value
        out.append(PlaceDataset(
            name=f"{dataset.name}_{r.split}" if r.split else dataset.name,
            db_paths=[dataset.db_paths[i] for i in db],
            q_paths=[dataset.q_paths[i] for i in q],
            db_utm=dataset.db_utm[db],
            q_utm=dataset.q_utm[q],
            pos_dist_thr=float(r.pos_dist_thr),
            nontriv_pos_dist_sq_thr=float(train_radius) ** 2,
            split=r.split,
            extras=extras,
        ))
    return out

"""PlaceDataset: one split of a place-recognition dataset, whatever format it came from.

Every reader (dbStruct .mat, GSV folders, aligned traverses, Google Landmarks CSVs, manifests, the
synthetic city) produces one of these; everything downstream (manifests, extraction, training, evaluation)
consumes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..paths import is_remote
from .ground_truth import positives_same_label, positives_within


@dataclass
class PlaceDataset:
    """A database and a query set with geographic (UTM) or label ground truth.

    Attributes:
        name: dataset name, e.g. "pitts30k_test".
        db_paths, q_paths: image paths; joined with `db_root` / `q_root` when those are given at load time.
        db_utm, q_utm: (N, 2) / (M, 2) float64 UTM (easting, northing) in metres, or None for label data.
        db_labels, q_labels: (N,) / (M,) int64 landmark ids, or None for geographic data.
        pos_dist_thr: metres; database images within it are the evaluation positives (25 m standard),
            and training negatives are drawn only beyond it.
        nontriv_pos_dist_sq_thr: squared metres; training positives lie within sqrt of it (10 m -> 100).
        split: "train", "val", "test" or "" when unknown.
        extras: reader-specific arrays (e.g. TokyoTM time stamps `db_time_stamp`, `q_time_stamp`). For label
            data, `q_positives` (M lists of database indices), when present, overrides same-label positives.
    """

    name: str
    db_paths: list[str]
    q_paths: list[str]
    db_utm: np.ndarray | None = None
    q_utm: np.ndarray | None = None
    db_labels: np.ndarray | None = None
    q_labels: np.ndarray | None = None
    pos_dist_thr: float = 25.0
    nontriv_pos_dist_sq_thr: float = 100.0
    split: str = ""
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.db_paths = [str(p) for p in self.db_paths]
        self.q_paths = [str(p) for p in self.q_paths]
        if self.db_utm is not None:
            self.db_utm = np.asarray(self.db_utm, dtype=np.float64).reshape(-1, 2)
        if self.q_utm is not None:
            self.q_utm = np.asarray(self.q_utm, dtype=np.float64).reshape(-1, 2)
        if self.db_labels is not None:
            self.db_labels = np.asarray(self.db_labels, dtype=np.int64).reshape(-1)
        if self.q_labels is not None:
            self.q_labels = np.asarray(self.q_labels, dtype=np.int64).reshape(-1)
        self.validate()

    @property
    def num_db(self) -> int:
        return len(self.db_paths)

    @property
    def num_q(self) -> int:
        return len(self.q_paths)

    @property
    def is_geographic(self) -> bool:
        return self.db_utm is not None and self.q_utm is not None

    def validate(self) -> None:
        """Raise ValueError naming the field when shapes disagree or coordinates are not finite."""
        geo = self.db_utm is not None or self.q_utm is not None
        lab = self.db_labels is not None or self.q_labels is not None
        if geo == lab:
            raise ValueError(f"{self.name}: give either db_utm/q_utm or db_labels/q_labels (exactly one kind)")
        pairs = (("db_utm", self.db_utm, self.num_db), ("q_utm", self.q_utm, self.num_q)) if geo else (
            ("db_labels", self.db_labels, self.num_db), ("q_labels", self.q_labels, self.num_q))
        for fname, arr, n in pairs:
            if arr is None:
                raise ValueError(f"{self.name}: {fname} is missing")
            if len(arr) != n:
                raise ValueError(f"{self.name}: {fname} has {len(arr)} rows but there are {n} paths")
            if geo:
                bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
                if len(bad):
                    raise ValueError(f"{self.name}: {fname} has NaN/inf coordinates in rows {bad[:10].tolist()}")
        explicit = self.extras.get("q_positives")
        if explicit is not None:
            if len(explicit) != self.num_q:
                raise ValueError(f"{self.name}: extras['q_positives'] has {len(explicit)} entries for {self.num_q} queries")
            for i, pos in enumerate(explicit):
                pos = np.asarray(pos)
                if pos.size and (pos.min() < 0 or pos.max() >= self.num_db):
                    raise ValueError(f"{self.name}: extras['q_positives'][{i}] points outside the {self.num_db} database images")
        if not (self.pos_dist_thr > 0):
            raise ValueError(f"{self.name}: pos_dist_thr must be > 0 metres, got {self.pos_dist_thr}")
        if not (self.nontriv_pos_dist_sq_thr > 0):
            raise ValueError(f"{self.name}: nontriv_pos_dist_sq_thr must be > 0, got {self.nontriv_pos_dist_sq_thr}")

    def positives(self, radius: float | None = None) -> list[np.ndarray]:
        """Evaluation positives per query: database indices within `radius` (default pos_dist_thr) metres,
        or sharing the query's label for label datasets."""
        if self.is_geographic:
            return positives_within(self.q_utm, self.db_utm, self.pos_dist_thr if radius is None else radius)
        return self._label_positives()

    def train_positives(self) -> list[np.ndarray]:
        """Potential training positives: within sqrt(nontriv_pos_dist_sq_thr) metres (10 m standard)."""
        if self.is_geographic:
            return positives_within(self.q_utm, self.db_utm, float(np.sqrt(self.nontriv_pos_dist_sq_thr)))
        return self._label_positives()

    def _label_positives(self) -> list[np.ndarray]:
        """Same-label positives, or the explicit per-query lists in extras['q_positives'] when a reader stored
        them (Google Landmarks retrieval ground truth that labels cannot express exactly)."""
        explicit = self.extras.get("q_positives")
        if explicit is not None:
            return [np.sort(np.asarray(p, dtype=np.int64).reshape(-1)) for p in explicit]
        return positives_same_label(self.q_labels, self.db_labels)

    @staticmethod
    def resolve(path: str, root: str | None) -> str:
        """Join a stored path with a root unless it is already absolute or a URI."""
        if not root or os.path.isabs(path) or is_remote(path):
            return path
        return os.path.join(root, path)

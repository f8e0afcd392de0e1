"""Training ground truth: which database images may serve as positives and negatives for each query,
and which queries can be trained on at all.

Geographic data (the NetVLAD protocol): training positives lie within sqrt(nontriv_pos_dist_sq_thr)
metres (10 m), negatives strictly beyond pos_dist_thr metres (25 m); images in between are neither.
Label data: positives share the query's label (or are listed in extras['q_positives']), negatives are
every other database image of a different label.

The negative lists hold most of the database for every query ((M, ~N) integers in all): fine for
Pitts30k-scale sets, for larger ones sample per query from `training_negatives(dataset, queries=...)`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .ground_truth import negatives_beyond, positives_within
from .place_dataset import PlaceDataset

log = logging.getLogger(__name__)


def training_positives(dataset: PlaceDataset, radius: float | None = None) -> list[np.ndarray]:
    """(M,) arrays of database indices: within `radius` metres (default sqrt(nontriv_pos_dist_sq_thr))
    for geographic data; the label / explicit positives otherwise."""
    if dataset.is_geographic:
        r = float(np.sqrt(dataset.nontriv_pos_dist_sq_thr)) if radius is None else float(radius)
        return positives_within(dataset.q_utm, dataset.db_utm, r)
    return dataset.train_positives()


def negatives_different_label(q_labels, db_labels) -> list[np.ndarray]:
    """Database indices whose label differs from each query's (sorted). q_labels (M,), db_labels (N,)."""
    q = np.asarray(q_labels, dtype=np.int64).reshape(-1)
    db = np.asarray(db_labels, dtype=np.int64).reshape(-1)
    return [np.flatnonzero(db != label) if label >= 0 else np.arange(len(db)) for label in q]


def training_negatives(
    dataset: PlaceDataset,
    radius: float | None = None,
    queries: Sequence[int] | np.ndarray | None = None,
) -> list[np.ndarray]:
    """Database indices that may be negatives, for every query (or only `queries`, in that order).

    Geographic: strictly farther than `radius` metres (default pos_dist_thr, 25 m). Label data: a different
    label and not among the query's positives.
    """
    q_idx = np.arange(dataset.num_q) if queries is None else np.asarray(queries, dtype=np.int64).reshape(-1)
    if dataset.is_geographic:
        r = dataset.pos_dist_thr if radius is None else float(radius)
        return negatives_beyond(dataset.q_utm[q_idx], dataset.db_utm, r)
    negatives = negatives_different_label(dataset.q_labels[q_idx], dataset.db_labels)
    if "q_positives" in dataset.extras:
        positives = dataset.positives()
        negatives = [np.setdiff1d(n, positives[i], assume_unique=True) for n, i in zip(negatives, q_idx, strict=True)]
    return negatives


def trainable_queries(dataset: PlaceDataset, positives: list[np.ndarray] | None = None) -> np.ndarray:
    """Sorted indices of the queries with at least one training positive; logs how many were dropped.

    positives: precomputed `training_positives(dataset)` (computed here when omitted).
    """
    positives = training_positives(dataset) if positives is None else positives
    if len(positives) != dataset.num_q:
        raise ValueError(f"{dataset.name}: {len(positives)} positive lists for {dataset.num_q} queries")
    keep = np.flatnonzero(np.array([len(p) > 0 for p in positives], dtype=bool))
    dropped = dataset.num_q - len(keep)
    if dropped:
        if dataset.is_geographic:
            why = f"no database image within {np.sqrt(dataset.nontriv_pos_dist_sq_thr):g} m"
        else:
            why = "no database image of the same landmark"
        log.info("%s: dropped %d of %d training queries (%s); %d remain", dataset.name, dropped,
                 dataset.num_q, why, len(keep))
    return keep

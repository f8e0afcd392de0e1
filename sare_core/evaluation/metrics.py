"""Retrieval metrics from ranked database indices: Recall@N, mAP@k, top-1 localisation error.

`ranked` is (M, k) int64: for each query, database rows from nearest to farthest (-1 = no result).
`positives` is a list of M int arrays of database rows that show the query's place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def first_hit_rank(ranked: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """(M,) 0-based rank of the first correct database image in each ranking, or -1 when none is in it."""
    ranked = np.asarray(ranked)
    if len(positives) != len(ranked):
        raise ValueError(f"{len(ranked)} rankings but {len(positives)} positive lists")
    out = np.full(len(ranked), -1, dtype=np.int64)
    for qi, (row, pos) in enumerate(zip(ranked, positives)):
        if len(pos) == 0:
            continue
        hits = np.flatnonzero(np.isin(row, pos))
        if len(hits):
            out[qi] = hits[0]
    return out


def recall_from_ranking(ranked: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int]) -> dict[int, float]:
    """{n: fraction of queries with a positive among their top n}; queries without positives are misses."""
    ns = sorted(int(n) for n in ns)
    if not ns or ns[0] < 1:
        raise ValueError(f"ns must be positive integers, got {ns}")
    ranks = first_hit_rank(ranked, positives)
    m = len(ranks)
    if m == 0:
        return {n: 0.0 for n in ns}
    return {n: float(np.count_nonzero((ranks >= 0) & (ranks < n)) / m) for n in ns}


def average_precision_at_k(row: np.ndarray, positives: np.ndarray, k: int = 100) -> float:
    """AP@k as in the Google Landmarks v2 retrieval challenge: (1 / min(m, k)) sum_{i<=k} P(i) rel(i),
    m = number of positives."""
    if len(positives) == 0:
        return 0.0
    rel = np.isin(np.asarray(row)[:k], positives)
    if not rel.any():
        return 0.0
    precision_at_i = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float((precision_at_i * rel).sum() / min(len(positives), k))


def map_at_k(ranked: np.ndarray, positives: Sequence[np.ndarray], k: int = 100) -> float:
    """Mean AP@k over the queries that have positives (GLDv2 scores only those); 0.0 when none do."""
    aps = [average_precision_at_k(row, pos, k) for row, pos in zip(ranked, positives) if len(pos)]
    return float(np.mean(aps)) if aps else 0.0


def localization_errors(top1: np.ndarray, q_utm: np.ndarray, db_utm: np.ndarray) -> np.ndarray:
    """(M,) metres between each query and its top-1 retrieved database image (NaN where none)."""
    top1 = np.asarray(top1)
    q = np.asarray(q_utm, dtype=np.float64)
    db = np.asarray(db_utm, dtype=np.float64)
    err = np.full(len(top1), np.nan)
    ok = top1 >= 0
    err[ok] = np.linalg.norm(q[ok] - db[top1[ok]], axis=1)
    return err


def localization_summary(errors: np.ndarray, within: float = 25.0) -> dict[str, float]:
    """Median error (m) and the fraction of queries localised within `within` metres."""
    finite = errors[np.isfinite(errors)]
    return {
        "median_m": float(np.median(finite)) if len(finite) else float("nan"),
        f"within_{within:g}m": float(np.count_nonzero(finite <= within) / max(len(errors), 1)),
    }

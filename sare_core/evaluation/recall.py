"""`recall_at_n` and `evaluate`: descriptors + ground truth -> retrieval metrics (exact FAISS search)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .metrics import localization_errors, localization_summary, map_at_k, recall_from_ranking
from .search import knn_search

DEFAULT_NS = (1, 5, 10, 20)


def recall_at_n(
    q_desc: np.ndarray,
    db_desc: np.ndarray,
    positives: Sequence[np.ndarray],
    ns: Sequence[int] = DEFAULT_NS,
    mode: str = "auto",
) -> dict[int, float]:
    """{n: recall@n} with exact L2 nearest neighbours of (M, D) queries in the (N, D) database.

    A query with no positive counts as a miss (see `evaluate` for the count of such queries).
    """
    if len(positives) != len(q_desc):
        raise ValueError(f"{len(q_desc)} query descriptors but {len(positives)} positive lists")
    result = knn_search(q_desc, db_desc, k=max(ns), mode=mode)
    return recall_from_ranking(result.indices, positives, ns)


@dataclass
class Evaluation:
    """Everything one evaluation measured; recalls are fractions in [0, 1], distances in metres."""

    recalls: dict[int, float]
    num_queries: int
    num_database: int
    queries_without_positives: int
    map_at_k: float | None = None
    map_k: int | None = None
    localization: dict[str, float] | None = None
    search_mode: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        out["recalls"] = {str(n): r for n, r in self.recalls.items()}
        return out


def evaluate(
    q_desc: np.ndarray,
    db_desc: np.ndarray,
    positives: Sequence[np.ndarray],
    ns: Sequence[int] = DEFAULT_NS,
    q_utm: np.ndarray | None = None,
    db_utm: np.ndarray | None = None,
    map_k: int | None = None,
    mode: str = "auto",
) -> tuple[Evaluation, np.ndarray]:
    """Recall@N (plus mAP@map_k for label data, top-1 localisation error when UTM is given).

    Returns the Evaluation and the (M, max(ns, map_k)) ranked database indices (for reports).
    """
    k = max(max(ns), map_k or 0)
    result = knn_search(q_desc, db_desc, k=k, mode=mode)
    return evaluate_ranking(result.indices, positives, len(db_desc), ns, q_utm, db_utm, map_k, result.mode), result.indices


def evaluate_ranking(
    ranked: np.ndarray,
    positives: Sequence[np.ndarray],
    num_database: int,
    ns: Sequence[int] = DEFAULT_NS,
    q_utm: np.ndarray | None = None,
    db_utm: np.ndarray | None = None,
    map_k: int | None = None,
    search_mode: str = "",
) -> Evaluation:
    """The metrics of an already computed (M, k) ranking."""
    without = int(sum(1 for p in positives if len(p) == 0))
    loc = None
    if q_utm is not None and db_utm is not None and ranked.shape[1] > 0:
        loc = localization_summary(localization_errors(ranked[:, 0], q_utm, db_utm))
    return Evaluation(
        recalls=recall_from_ranking(ranked, positives, ns),
        num_queries=len(ranked),
        num_database=int(num_database),
        queries_without_positives=without,
        map_at_k=map_at_k(ranked, positives, map_k) if map_k else None,
        map_k=map_k,
        localization=loc,
        search_mode=search_mode,
    )

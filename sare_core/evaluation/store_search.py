"""Search straight from Parquet descriptor stores: the database either loaded once into one array (when it
fits the memory budget) or streamed batch by batch, so a store larger than memory can still be searched."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..descriptors import truncate as truncate_descriptors
from ..store import DescriptorStore
from .search import SearchResult, available_memory_bytes, knn_search, knn_search_stream, num_gpus

log = logging.getLogger(__name__)

META_COLUMNS = ("id", "utm_east", "utm_north", "label")


@dataclass
class StoreRows:
    """The non-descriptor columns of one role of a store, in the store's iteration order.

    ids (n,) str; utm (n, 2) float64 metres (NaN for label data); labels (n,) int64 (-1 when none).
    """

    ids: np.ndarray
    utm: np.ndarray
    labels: np.ndarray

    @property
    def is_geographic(self) -> bool:
        return len(self.utm) > 0 and bool(np.isfinite(self.utm).all())


def read_rows(store: DescriptorStore, role: str, split: str | None = None) -> StoreRows:
    batch = store.read(role=role, split=split, columns=list(META_COLUMNS))
    n = len(batch)
    return StoreRows(
        ids=batch.ids if batch.ids is not None else np.zeros(0, object),
        utm=batch.utm if batch.utm is not None else np.full((n, 2), np.nan),
        labels=batch.labels if batch.labels is not None else np.full(n, -1, np.int64),
    )


def read_descriptors(store: DescriptorStore, role: str, split: str | None = None, batch_size: int = 4096,
                     truncate: int | None = None) -> np.ndarray:
    """(n, D) float32 descriptors of one role, filled into one preallocated array (peak = its size + a batch);
    with `truncate` K, each row's first K elements re-L2-normalised, (n, K)."""
    n = store.num_rows(role=role, split=split)
    out = np.empty((n, truncate or store.dim), dtype=np.float32)
    filled = 0
    for batch in store.iter_batches(role=role, split=split, columns=["descriptor"], batch_size=batch_size):
        out[filled : filled + len(batch)] = _truncated(batch.descriptors, truncate)
        filled += len(batch)
    if filled != n:
        raise ValueError(f"{store.uri}: manifest counts {n} {role} rows but {filled} were read")
    pa.default_memory_pool().release_unused()  # hand the read buffers back, so only `out` stays resident
    return out


def _truncated(descriptors: np.ndarray, k: int | None) -> np.ndarray:
    return descriptors if k is None else truncate_descriptors(descriptors, k)


def resolve_mode(store: DescriptorStore, mode: str, split: str | None, memory_budget_bytes: int | None) -> str:
    """'auto' for a store: GPU shards when GPUs exist and it fits, in-memory CPU search when the database
    fits in the budget (default half the available RAM), else streaming."""
    if mode != "auto":
        return mode
    db_bytes = store.num_rows(role="database", split=split) * store.dim * 4
    budget = memory_budget_bytes if memory_budget_bytes is not None else available_memory_bytes() // 2
    if db_bytes > budget:
        return "stream"
    return "gpu_shards" if num_gpus() > 0 else "flat"


def search_store(
    queries: np.ndarray,
    db_store: DescriptorStore,
    k: int,
    mode: str = "auto",
    split: str | None = None,
    memory_budget_bytes: int | None = None,
    batch_size: int = 65536,
    num_shards: int = 2,
    truncate: int | None = None,
) -> SearchResult:
    """Exact top-k database rows (in the store's iteration order, as `read_rows`) for (M, D) queries (with
    `truncate` K: the database truncated to K dims as it is read; the queries must already be)."""
    mode = resolve_mode(db_store, mode, split, memory_budget_bytes)
    if mode == "stream":
        batches = (_truncated(b.descriptors, truncate) for b in db_store.iter_batches(
            role="database", split=split, columns=["descriptor"], batch_size=batch_size))
        return knn_search_stream(queries, batches, k)
    if mode == "ray":
        raise ValueError("search mode 'ray' runs in pipelines.evaluate (sare_core does not use Ray)")
    database = read_descriptors(db_store, "database", split, batch_size, truncate)
    return knn_search(queries, database, k, mode=mode, num_shards=num_shards)


def ground_truth(db: StoreRows, q: StoreRows, radius: float) -> list[np.ndarray]:
    """Per query, the database rows that count as the same place: within `radius` (the UTM columns' unit)
    for geographic stores, else the same label."""
    from ..data import positives_same_label, positives_within

    if db.is_geographic and q.is_geographic:
        return positives_within(q.utm, db.utm, radius)
    if (db.labels >= 0).any():
        return positives_same_label(q.labels, db.labels)
    raise ValueError("stores carry neither finite UTM coordinates nor labels: no ground truth to evaluate against")


@dataclass
class StoreScore:
    """What `score_stores` found: the metrics, and the rows, ranking and ground truth behind them."""

    evaluation: object  # sare_core.evaluation.recall.Evaluation
    db: StoreRows
    q: StoreRows
    result: SearchResult
    positives: list[np.ndarray]


def score_stores(name: str, database: str, queries: str | None = None, ns=(1, 5, 10, 20), split: str | None = None,
                 radius: float | None = None, map_k: int | None = None, search_mode: str = "auto",
                 memory_budget_bytes: int | None = None, search=None, truncate: int | None = None) -> StoreScore:
    """Exact search of one model's query store against its database store (the same store when one holds
    both roles) and the metrics: Recall@N, mAP@k (label data: default k = 100), top-1 localisation error
    (UTM data). The one way stores are scored: `sare eval`, training validation and sweeps all call it.

    radius: positives within this distance in the stores' UTM units (default: the database store's
    provenance `pos_dist_thr`, else 25). search: optional replacement of the local search,
    `search(queries (M, D), db_store, k) -> SearchResult` (the Ray-sharded search of `sare eval`; it is
    handed truncated queries and truncates the database itself). truncate: score the first K elements of
    every descriptor, re-L2-normalised (`sare_core.descriptors.truncate`).
    """
    from ..store import open_store
    from .recall import evaluate_ranking

    db_store = open_store(database)
    q_store = open_store(queries or database)
    if db_store.dim != q_store.dim:
        raise ValueError(f"{name}: database store has {db_store.dim}-dim descriptors, query store {q_store.dim}")
    if db_store.metadata.model_hash != q_store.metadata.model_hash:
        raise ValueError(f"{name}: database and query stores come from different models "
                         f"({db_store.metadata.model_hash} vs {q_store.metadata.model_hash})")
    db_rows = read_rows(db_store, "database", split)
    q_rows = read_rows(q_store, "query", split)
    if len(db_rows.ids) == 0 or len(q_rows.ids) == 0:
        raise ValueError(f"{name}: {len(db_rows.ids)} database and {len(q_rows.ids)} query rows"
                         + (f" in split {split!r}" if split else "") + "; need both")
    if truncate is not None and not 1 <= truncate <= db_store.dim:
        raise ValueError(f"truncate: {truncate} is not between 1 and the stores' {db_store.dim} dims")
    q_desc = read_descriptors(q_store, "query", split, truncate=truncate)
    radius = radius or float(db_store.metadata.provenance.get("pos_dist_thr", 25.0))
    positives = ground_truth(db_rows, q_rows, radius)
    label_data = not (db_rows.is_geographic and q_rows.is_geographic)
    map_k = map_k or (100 if label_data else None)
    k = max(max(ns), map_k or 0, 5)
    started = time.perf_counter()
    if search is not None:
        result = search(q_desc, db_store, k)
    else:
        result = search_store(q_desc, db_store, k, mode=search_mode, split=split,
                              memory_budget_bytes=memory_budget_bytes, truncate=truncate)
    seconds = time.perf_counter() - started
    evaluation = evaluate_ranking(
        result.indices, positives, len(db_rows.ids), ns,
        q_utm=None if label_data else q_rows.utm, db_utm=None if label_data else db_rows.utm,
        map_k=map_k, search_mode=result.mode,
    )
    evaluation.extra = {"search_seconds": seconds, "radius_m": None if label_data else radius, "truncate": truncate,
                        "database_store": db_store.uri, "query_store": q_store.uri,
                        "model_hash": db_store.metadata.model_hash}
    log.info("%s: %d queries x %d database in %.2f s (%s)", name, len(q_rows.ids), len(db_rows.ids), seconds,
             result.mode)
    return StoreScore(evaluation, db_rows, q_rows, result, positives)

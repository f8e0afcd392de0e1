"""Search straight from Parquet descriptor stores: the database either loaded once into one array (when it
fits the memory budget) or streamed batch by batch, so a store larger than memory can still be searched."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

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


def read_descriptors(store: DescriptorStore, role: str, split: str | None = None, batch_size: int = 4096) -> np.ndarray:
    """(n, D) float32 descriptors of one role, filled into one preallocated array (peak = its size + a batch)."""
    n = store.num_rows(role=role, split=split)
    out = np.empty((n, store.dim), dtype=np.float32)
    filled = 0
    for batch in store.iter_batches(role=role, split=split, columns=["descriptor"], batch_size=batch_size):
        out[filled : filled + len(batch)] = batch.descriptors
        filled += len(batch)
    if filled != n:
        raise ValueError(f"{store.uri}: manifest counts {n} {role} rows but {filled} were read")
    pa.default_memory_pool().release_unused()  # hand the read buffers back, so only `out` stays resident
    return out


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
) -> SearchResult:
    """Exact top-k database rows (in the store's iteration order, as `read_rows`) for (M, D) queries."""
    mode = resolve_mode(db_store, mode, split, memory_budget_bytes)
    if mode == "stream":
        batches = (b.descriptors for b in db_store.iter_batches(role="database", split=split, columns=["descriptor"],
                                                               batch_size=batch_size))
        return knn_search_stream(queries, batches, k)
    if mode == "ray":
        raise ValueError("search mode 'ray' runs in pipelines.evaluate (sare_core does not use Ray)")
    database = read_descriptors(db_store, "database", split, batch_size)
    return knn_search(queries, database, k, mode=mode, num_shards=num_shards)

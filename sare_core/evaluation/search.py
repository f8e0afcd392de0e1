"""Exact L2 nearest-neighbour search with FAISS: one flat index, threaded CPU shards, GPU shards, or a
database streamed batch by batch with the top-k merged as it goes.

All modes return the same thing: distances (M, k) float32, squared L2, ascending, and indices (M, k)
int64 into the database (row order of the database as given). Rows of a query with fewer than k database
vectors are padded with index -1 and distance +inf.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

SEARCH_MODES = ("auto", "flat", "cpu_shards", "gpu_shards", "stream")


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - an install problem, not a code path
        raise ImportError("FAISS is missing: install the project with the 'cpu' or 'gpu' extra") from exc
    return faiss


def num_gpus() -> int:
    """GPUs FAISS can use (0 with the CPU build)."""
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _as_float32(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {arr.shape}")
    return arr


def merge_topk(
    dist_a: np.ndarray, idx_a: np.ndarray, dist_b: np.ndarray, idx_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two (M, ka) / (M, kb) top lists into the (M, k) best, ascending by (distance, index).

    Ties in distance go to the smaller database index, so a merge over any sharding is deterministic.
    """
    dist = np.concatenate([dist_a, dist_b], axis=1)
    idx = np.concatenate([idx_a, idx_b], axis=1)
    # Padding (-1) sorts last: give it +inf distance and the largest index.
    idx_key = np.where(idx < 0, np.iinfo(np.int64).max, idx)
    order = np.lexsort((idx_key, dist), axis=1)[:, :k]
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _pad(dist: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if dist.shape[1] >= k:
        return dist, idx
    extra = k - dist.shape[1]
    m = dist.shape[0]
    return (np.concatenate([dist, np.full((m, extra), np.inf, np.float32)], 1),
            np.concatenate([idx, np.full((m, extra), -1, np.int64)], 1))


def _clean(dist: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAISS marks missing results with -1 and a huge distance; use +inf for them."""
    dist = dist.astype(np.float32, copy=True)
    dist[idx < 0] = np.inf
    return dist, idx.astype(np.int64, copy=False)


def _search_batched(index, queries: np.ndarray, k: int, query_batch: int) -> tuple[np.ndarray, np.ndarray]:
    dists, idxs = [], []
    for start in range(0, len(queries), query_batch):
        d, i = index.search(queries[start : start + query_batch], k)
        dists.append(d)
        idxs.append(i)
    if not dists:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return _clean(np.concatenate(dists), np.concatenate(idxs))


def build_flat_index(database: np.ndarray, mode: str = "flat", num_shards: int = 2):
    """A FAISS exact L2 index over (N, D) float32 vectors (ids are row numbers).

    mode "flat": one IndexFlatL2. "cpu_shards": `num_shards` flat indexes searched by threads
    (IndexShards, successive ids). "gpu_shards": the database split across all GPUs (faiss-gpu).
    """
    faiss = _faiss()
    db = _as_float32(database, "database")
    d = db.shape[1]
    if mode == "flat":
        index = faiss.IndexFlatL2(d)
        index.add(db)
        return index
    if mode == "cpu_shards":
        shards = faiss.IndexShards(d, True, True)  # threaded, successive ids
        bounds = np.linspace(0, len(db), max(1, num_shards) + 1).astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            shard = faiss.IndexFlatL2(d)
            shard.add(db[lo:hi])
            shards.add_shard(shard)
        # FAISS's Python add_shard keeps a reference to each shard, so they live as long as `shards`.
        return shards
    if mode == "gpu_shards":
        if num_gpus() == 0:
            raise ValueError("search mode 'gpu_shards' needs faiss-gpu and at least one visible GPU")
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        cpu_index = faiss.IndexFlatL2(d)
        cpu_index.add(db)
        return faiss.index_cpu_to_all_gpus(cpu_index, co=options)
    raise ValueError(f"search mode must be one of {SEARCH_MODES}, got {mode!r}")


def choose_mode(num_db: int, dim: int, memory_budget_bytes: int | None = None) -> str:
    """'auto' resolved: GPU shards when GPUs exist, CPU shards when the database fits in the memory
    budget (default: half of the available RAM), otherwise streaming."""
    db_bytes = num_db * dim * 4
    if memory_budget_bytes is None:
        memory_budget_bytes = available_memory_bytes() // 2
    if db_bytes > memory_budget_bytes:
        return "stream"
    return "gpu_shards" if num_gpus() > 0 else "cpu_shards"


def available_memory_bytes() -> int:
    """Available RAM in bytes (Linux /proc/meminfo; 8 GiB assumed elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


@dataclass
class SearchResult:
    """distances (M, k) squared L2 ascending; indices (M, k) database rows; the mode actually used."""

    distances: np.ndarray
    indices: np.ndarray
    mode: str


def _knn_array(q: np.ndarray, db: np.ndarray, k: int, query_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss.knn over an in-memory array: exhaustive L2 with BLAS, no copy of the database."""
    faiss = _faiss()
    dists, idxs = [], []
    for start in range(0, len(q), query_batch):
        d, i = faiss.knn(q[start : start + query_batch], db, k)
        dists.append(d)
        idxs.append(i)
    if not dists:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return _clean(np.concatenate(dists), np.concatenate(idxs))


def _knn_threaded_shards(q: np.ndarray, db: np.ndarray, k: int, num_shards: int, query_batch: int):
    """The database split into `num_shards` contiguous views, each searched by its own thread (FAISS
    releases the GIL), results merged; ties resolve to the smaller row as in `merge_topk`."""
    from concurrent.futures import ThreadPoolExecutor

    faiss = _faiss()
    bounds = np.linspace(0, len(db), max(1, num_shards) + 1).astype(int)
    ranges = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    threads = max(1, faiss.omp_get_max_threads() // len(ranges))

    def one(lo_hi):
        lo, hi = lo_hi
        faiss.omp_set_num_threads(threads)
        d, i = _knn_array(q, db[lo:hi], min(k, hi - lo), query_batch)
        return d, np.where(i >= 0, i + lo, -1)

    previous = faiss.omp_get_max_threads()
    try:
        with ThreadPoolExecutor(max_workers=len(ranges)) as pool:
            results = list(pool.map(one, ranges))
    finally:
        faiss.omp_set_num_threads(previous)
    best_d, best_i = results[0]
    for d, i in results[1:]:
        best_d, best_i = merge_topk(best_d, best_i, d, i, k)
    return best_d, best_i


def knn_search(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    mode: str = "auto",
    num_shards: int = 2,
    query_batch: int = 8192,
) -> SearchResult:
    """Exact k nearest database rows (squared L2) for every query; (M, D) and (N, D) float32 inputs.

    Modes: "flat" (one exhaustive search, the database used in place), "cpu_shards" (threads over
    database shards), "gpu_shards" (faiss-gpu, the database split across all GPUs), "stream" (batches),
    "auto" (see `choose_mode`).
    """
    q = _as_float32(queries, "queries")
    db = _as_float32(database, "database")
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} dims but the database has {db.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if mode == "auto":
        mode = choose_mode(len(db), db.shape[1])
    if mode not in SEARCH_MODES:
        raise ValueError(f"search mode must be one of {SEARCH_MODES}, got {mode!r}")
    if mode == "stream":
        return knn_search_stream(q, _array_batches(db, 65536), k, query_batch=query_batch)
    kk = min(k, len(db))
    if kk == 0:
        dist, idx = np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    elif mode == "flat":
        dist, idx = _knn_array(q, db, kk, query_batch)
    elif mode == "cpu_shards":
        dist, idx = _knn_threaded_shards(q, db, kk, num_shards, query_batch)
    else:
        dist, idx = _search_batched(build_flat_index(db, mode=mode), q, kk, query_batch)
    dist, idx = _pad(dist, idx, k)
    return SearchResult(dist, idx, mode)


def _array_batches(db: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for start in range(0, len(db), batch):
        yield db[start : start + batch]


def knn_search_stream(
    queries: np.ndarray, database_batches: Iterable[np.ndarray], k: int, query_batch: int = 8192
) -> SearchResult:
    """Exact search over a database that arrives in (n_i, D) batches (e.g. streamed from a Parquet store),
    never holding more than one batch: each batch is searched in place and merged into the running
    top-k. Indices count rows across batches in arrival order."""
    q = _as_float32(queries, "queries")
    best_d = np.full((len(q), 0), np.inf, np.float32)
    best_i = np.full((len(q), 0), -1, np.int64)
    offset = 0
    for batch in database_batches:
        b = _as_float32(batch, "database batch")
        if b.shape[1] != q.shape[1]:
            raise ValueError(f"database batch has {b.shape[1]} dims but queries have {q.shape[1]}")
        if len(b) == 0:
            continue
        d, i = _knn_array(q, b, min(k, len(b)), query_batch)
        i = np.where(i >= 0, i + offset, -1)
        best_d, best_i = merge_topk(best_d, best_i, d, i, k)
        offset += len(b)
    best_d, best_i = _pad(best_d, best_i, k)
    return SearchResult(best_d, best_i, "stream")

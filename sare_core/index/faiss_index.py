"""FAISS indexes of global descriptors, built streaming: exact flat, IVF-PQ (compressed) and HNSW (graph).

    spec = IndexSpec(kind="ivfpq", nlist=1024, pq_m=64)
    index = new_index(spec, dim, count)           # empty; `needs_training(index)` for IVF-PQ
    train(index, sample)                          # a seeded sample of the vectors (IVF-PQ only)
    for batch in batches: add(index, batch)       # one batch in memory at a time, added in bounded blocks
    search(index, spec, queries, k)               # (M, k) squared L2 distances and row numbers

Ids are row numbers in the order vectors were added. Squared L2 on L2-normalised descriptors ranks like
cosine similarity. Bytes per vector: flat 4 D, IVF-PQ pq_m (plus 8 for its id in the lists), HNSW 4 D plus
the graph (about 8 hnsw_m).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

KINDS = ("flat", "ivfpq", "hnsw")


class IndexSpec(BaseModel):
    """Which index and its parameters; None means: chosen from the database size (`resolved`)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["flat", "ivfpq", "hnsw"] = "flat"
    nlist: int | None = Field(None, ge=1, description="IVF-PQ: inverted lists (default about 4 sqrt(N), a power of 2)")
    pq_m: int | None = Field(None, ge=1, description="IVF-PQ: sub-quantizers = bytes per vector (default D / 16, "
                             "at least 8; must divide D)")
    nprobe: int = Field(32, ge=1, description="IVF-PQ: lists visited per query")
    train_size: int | None = Field(None, ge=1, description="IVF-PQ: vectors sampled for training (default "
                                   "64 per list, at least 20,000)")
    hnsw_m: int = Field(32, ge=4, description="HNSW: neighbours per node")
    ef_construction: int = Field(80, ge=8)
    ef_search: int = Field(128, ge=8, description="HNSW: candidates kept per query")
    rerank: int = Field(0, ge=0, description="IVF-PQ: shortlist this many by the compressed codes, then re-rank "
                        "them by exact distance to the full descriptors, kept beside the index as float16 (2 D "
                        "bytes per vector on disk, memory-mapped, not in RAM); 0: off")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> IndexSpec:
        if self.kind != "ivfpq" and (self.nlist or self.pq_m or self.rerank):
            raise ValueError(f"nlist / pq_m / rerank apply to kind ivfpq, not {self.kind}")
        return self

    def resolved(self, dim: int, count: int) -> IndexSpec:
        """The spec with its defaults filled for `count` vectors of `dim` dims (ValueError naming the field
        when they cannot work)."""
        if self.kind != "ivfpq":
            return self
        nlist = self.nlist or max(1, min(65536, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(count))))))
        pq_m = self.pq_m or _default_pq_m(dim)
        if dim % pq_m:
            raise ValueError(f"pq_m: {pq_m} does not divide the descriptors' {dim} dims")
        if count < nlist:
            raise ValueError(f"nlist: {nlist} lists for {count} vectors; give fewer lists or use kind flat")
        if count < 256:
            raise ValueError(f"kind ivfpq: {count} vectors cannot train its 256-entry codebooks; use kind flat")
        train_size = min(count, self.train_size or max(64 * nlist, 20_000))
        return self.model_copy(update={"nlist": nlist, "pq_m": pq_m, "train_size": train_size})

    def bytes_per_vector(self, dim: int) -> float:
        """What one vector costs in the index (codes and ids; not the lists' and graph's small overheads)."""
        if self.kind == "flat":
            return 4.0 * dim
        if self.kind == "ivfpq":
            return float(self.pq_m or _default_pq_m(dim)) + 8.0
        return 4.0 * dim + 8.0 * self.hnsw_m


class SearchParams(BaseModel):
    """Search-time settings of a loaded index (None: the index's own): IVF-PQ lists visited, HNSW candidates
    kept, IVF-PQ shortlist re-ranked exactly (0: none)."""

    model_config = ConfigDict(extra="forbid")
    nprobe: int | None = Field(None, ge=1)
    ef_search: int | None = Field(None, ge=8)
    rerank: int | None = Field(None, ge=0)


def _default_pq_m(dim: int) -> int:
    m = max(8, dim // 16)
    while dim % m:
        m -= 1
    return max(1, m)


def _faiss():
    import faiss

    return faiss


def new_index(spec: IndexSpec, dim: int):
    """An empty index of a resolved spec."""
    faiss = _faiss()
    if spec.kind == "flat":
        return faiss.IndexFlatL2(dim)
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m)
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
        return index
    index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, spec.nlist, spec.pq_m, 8)
    index.nprobe = spec.nprobe
    return index


def needs_training(index) -> bool:
    return not index.is_trained


def train(index, sample: np.ndarray, seed: int = 0) -> None:
    """Train an IVF-PQ index (its coarse quantizer and product quantizer) on (n, D) float32 vectors."""
    index.cp.seed = seed  # the coarse quantizer's k-means
    index.pq.cp.seed = seed  # the sub-quantizers' k-means
    index.train(np.ascontiguousarray(sample, dtype=np.float32))


# What one `add` call may allocate for its working tables (bytes): FAISS's IVF-PQ encoder builds an
# n x pq_m x 256 float32 distance table for a batch of n vectors (dims per sub-quantizer >= 16), 5.2 GB for
# 20,000 vectors at pq_m 256, so the store's batches are fed to it in blocks sized to this.
ADD_WORKSPACE_BYTES = 256 * 2**20


def add_rows_per_call(index, workspace_bytes: int = ADD_WORKSPACE_BYTES) -> int:
    """How many vectors one `index.add` call takes so that its working tables stay under `workspace_bytes`."""
    faiss = _faiss()
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index: flat and HNSW need no per-batch tables
        ivf = None
    pq = getattr(faiss.downcast_index(ivf), "pq", None) if ivf is not None else None
    per_vector = 4 * index.d
    if pq is not None:
        per_vector += 4 * pq.M * pq.ksub + 4 * index.d  # distance tables + the residual
    return max(256, workspace_bytes // per_vector)


def add(index, vectors: np.ndarray, workspace_bytes: int = ADD_WORKSPACE_BYTES) -> None:
    """Add (n, D) vectors to `index` in blocks whose working memory stays under `workspace_bytes`."""
    block = add_rows_per_call(index, workspace_bytes)
    for start in range(0, len(vectors), block):
        index.add(np.ascontiguousarray(vectors[start : start + block], dtype=np.float32))


def configure_search(index, spec: IndexSpec) -> None:
    """Apply the spec's search parameters (nprobe, efSearch) to a loaded index (or every shard of one)."""
    faiss = _faiss()
    for part in _parts(index):
        if spec.kind == "ivfpq":
            faiss.extract_index_ivf(part).nprobe = spec.nprobe
        elif spec.kind == "hnsw":
            faiss.downcast_index(part).hnsw.efSearch = spec.ef_search


def _parts(index) -> list:
    faiss = _faiss()
    if isinstance(index, faiss.IndexShards):
        return [faiss.downcast_index(index.at(i)) for i in range(index.count())]
    return [index]


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, k) float32 squared L2 distances (inf where fewer than k) and int64 row numbers (-1 there)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != index.d:
        raise ValueError(f"queries of shape {q.shape} for an index of {index.d} dims")
    d, i = index.search(q, k)
    d = d.astype(np.float32)
    d[i < 0] = np.inf
    return d, i.astype(np.int64)


def serialize(index) -> bytes:
    return _faiss().serialize_index(index).tobytes()


def deserialize(data: bytes):
    return _faiss().deserialize_index(np.frombuffer(data, dtype=np.uint8))


def join_shards(shards: list):
    """One index searching `shards` in parallel threads, ids successive (shard 0's rows first). The shards
    stay owned by their Python objects: keep them referenced as long as the joined index is used."""
    faiss = _faiss()
    if len(shards) == 1:
        return shards[0]
    joined = faiss.IndexShards(shards[0].d, True, True)  # threaded, successive ids
    for shard in shards:
        joined.add_shard(shard)
    return joined

"""Exact search over a database too large for one machine: Ray actors each hold one shard, search it,
and return their top-k; the driver merges them. The merged ranking equals one flat index over the whole
database (ties broken by the smaller database row, as in `merge_topk`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import ray

from sare_core.evaluation.search import SearchResult, build_flat_index, merge_topk

from .. import ray_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """One contiguous range of database rows: `load()` returns them as (n, D) float32, and they are rows
    row_offset .. row_offset + n - 1 of the whole database."""

    load: Callable[[], np.ndarray]
    row_offset: int


class ShardSearcher:
    """Holds one shard in a flat FAISS index (on its GPU when the actor has one) and searches it."""

    def __init__(self, shard: Shard, use_gpu: bool = False):
        db = np.ascontiguousarray(shard.load(), dtype=np.float32)
        self.rows = len(db)
        self.row_offset = shard.row_offset
        self.index = build_flat_index(db, mode="gpu_shards" if use_gpu else "flat") if self.rows else None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        m = len(queries)
        if self.index is None:
            return np.full((m, 0), np.inf, np.float32), np.full((m, 0), -1, np.int64)
        d, i = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, self.rows))
        d = d.astype(np.float32)
        d[i < 0] = np.inf
        return d, np.where(i >= 0, i + self.row_offset, -1).astype(np.int64)


def ray_sharded_search(
    queries: np.ndarray, shards: Sequence[Shard], k: int, use_gpu: bool | None = None, cpus_per_shard: float = 1
) -> SearchResult:
    """Search (M, D) queries against all shards with one Ray actor per shard; returns the merged top-k.

    Starts a local Ray instance when none is running. `use_gpu` None means: when the cluster has GPUs.
    """
    ray_session.connect(log_to_driver=False)
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    actor_cls = ray.remote(num_cpus=cpus_per_shard, num_gpus=1 if use_gpu else 0)(ShardSearcher)
    actors = [actor_cls.remote(shard, use_gpu) for shard in shards]
    q_ref = ray.put(np.ascontiguousarray(queries, dtype=np.float32))
    owner = {}
    for actor in actors:
        owner[actor.search.remote(q_ref, k)] = actor
    pending = list(owner)
    best_d = np.full((len(queries), 0), np.inf, np.float32)
    best_i = np.full((len(queries), 0), -1, np.int64)
    # Merge as shards finish, so the driver holds at most two top-k lists at once, and release each
    # finished actor at once: with more shards than free CPUs/GPUs, later actors start in its place.
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        d, i = ray.get(done[0])
        ray.kill(owner.pop(done[0]))
        best_d, best_i = merge_topk(best_d, best_i, d, i, k)
    if best_d.shape[1] < k:
        pad = k - best_d.shape[1]
        best_d = np.concatenate([best_d, np.full((len(queries), pad), np.inf, np.float32)], 1)
        best_i = np.concatenate([best_i, np.full((len(queries), pad), -1, np.int64)], 1)
    log.info("ray search: %d queries against %d shards", len(queries), len(shards))
    return SearchResult(best_d, best_i, "ray")

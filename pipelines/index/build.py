"""`sare index build`: a localisation index over a descriptor store's database rows.

    run(IndexBuildConfig(store="runs/demo/stores/trained", out="runs/demo/index", kind="flat"))

The store is read streaming (a batch at a time): IVF-PQ is trained on a seeded sample of the database
drawn in one pass, then every shard adds its share of the store's parts to a copy of the trained empty
index. With `shards` > 1 the shards are built in parallel Ray tasks (one per shard, on any node), so a
database larger than one machine's memory is indexed piece by piece; `sare locate` and `sare serve`
search the shards together (ids successive). The index records the store's model hash: it refuses
descriptors of any other model.
"""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel, ConfigDict, Field

from sare_core.index.faiss_index import IndexSpec

from .. import ray_session

log = logging.getLogger(__name__)


class IndexBuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store: str = Field(description="descriptor store of the database (local or s3://)")
    out: str = Field(description="index folder to write (local or s3://)")
    spec: IndexSpec = Field(default_factory=IndexSpec, description="kind (flat | ivfpq | hnsw) and parameters")
    split: str | None = Field(None, description="index only this split's database rows")
    shards: int = Field(1, ge=1, description="shards, built in parallel Ray tasks when more than one")
    images_root: str | None = Field(None, description="where the store's image ids resolve to files (default: "
                                    "the folder of the dataset the store was extracted from)")
    ray_address: str | None = None


def run(config: IndexBuildConfig) -> dict:
    """Build and write the index; returns its index.json record."""
    import numpy as np

    from sare_core.index.faiss_index import serialize
    from sare_core.index.store_index import (
        allocate_refine,
        build_shard,
        database_parts,
        index_record,
        trained_empty_index,
        write_index,
    )
    from sare_core.store import open_store

    started = time.perf_counter()
    store = open_store(config.store)
    count = store.num_rows(role="database", split=config.split)
    if count == 0:
        raise ValueError(f"store {config.store}: no database rows" + (f" in split {config.split!r}" if config.split
                                                                       else ""))
    spec = config.spec.resolved(store.dim, count)
    empty = serialize(trained_empty_index(store, spec, config.split))
    parts = database_parts(store, config.split)
    groups = [list(g) for g in np.array_split(np.array(parts, dtype=object), min(config.shards, len(parts)))]
    refine = allocate_refine(config.out, store, spec, config.split, groups)
    if len(groups) == 1:
        built = [build_shard(config.store, empty, groups[0], config.split, refine=refine[0])]
    else:
        import ray

        started_ray = ray_session.connect(config.ray_address)
        try:
            task = ray.remote(num_cpus=1)(build_shard)
            empty_ref = ray.put(empty)
            # With rerank, the tasks write their rows into the one refine file in config.out: a local folder the
            # tasks share (one node, or a shared file system).
            built = ray.get([task.remote(config.store, empty_ref, group, config.split, None, r)
                             for group, r in zip(groups, refine)])
        finally:
            if started_ray:
                ray.shutdown()
    record = index_record(store, spec, config.split, config.images_root, time.perf_counter() - started)
    record = write_index(config.out, [b for b, _ in built], [t for _, t in built], record)
    log.info("index %s: %s over %d vectors of %d dims in %d shard(s), %.1f s", config.out, spec.kind,
             record["count"], store.dim, len(built), record["build_seconds"])
    return record

"""Validation Recall@N after each epoch, in memory or through a Parquet descriptor store.

In memory (default): every worker embeds its share of the validation split, all get every descriptor, and
the recall is computed from them. With `val_store_dir` (sweeps set it), epoch E's descriptors become the
store `{val_store_dir}/epoch_{EEE}`: each worker writes its share as one part, rank 0 commits the store and
scores it with `sare_core.evaluation.store_search.score_stores`, exactly as `sare eval` scores stores, and
every worker reports rank 0's figures. An epoch redone after a restart first clears its old store.
"""

from __future__ import annotations

import logging

import numpy as np

from ..data.image_rows import dataset_root, default_dataset_name, image_rows
from ..data.place_dataset import PlaceDataset
from ..evaluation.recall import recall_at_n
from ..evaluation.store_search import score_stores
from ..models.inference import embed_paths
from ..models.io import model_hash
from ..store import PartInfo, PartWriter, StoreMetadata, clear_store, commit
from .collective import LocalCollective
from .config import TrainConfig

log = logging.getLogger(__name__)


def validation_queries(val: PlaceDataset, max_queries: int | None, seed: int) -> np.ndarray:
    """The validation query rows every epoch uses: all, or a sorted seeded sample of `max_queries`."""
    if max_queries and val.num_q > max_queries:
        return np.sort(np.random.default_rng(seed).choice(val.num_q, max_queries, replace=False))
    return np.arange(val.num_q)


def val_store_uri(directory: str, epoch: int) -> str:
    """Where epoch `epoch`'s validation store lives under `val_store_dir` (epoch 0: the initial model)."""
    return f"{directory.rstrip('/')}/epoch_{epoch:03d}"


def split_image_rows(dataset: PlaceDataset, root: str, q_rows: np.ndarray | None = None):
    """One split's images as store rows (`sare_core.data.image_rows`: ids as `sare extract` makes them):
    the database, then the queries `q_rows` (default all). An Arrow table of ROW_SCHEMA."""
    rows = image_rows([dataset], root)
    if q_rows is None:
        return rows
    keep = np.concatenate([np.arange(dataset.num_db), dataset.num_db + np.asarray(q_rows, np.int64)])
    return rows.take(keep)


def write_store_share(model, rows, uri: str, metadata: StoreMetadata, collective: LocalCollective,
                      batch_size: int, task_id: str) -> list[PartInfo]:
    """Embed this worker's contiguous share of `rows` (ROW_SCHEMA table) and write it as one part of the
    (uncommitted) store at `uri`; returns the part written (none for an empty share)."""
    share = collective.share(rows.num_rows)
    if len(share) == 0:
        return []
    mine = rows.take(share)
    desc = embed_paths(model, mine.column("path").to_pylist(), batch_size=batch_size, device=collective.device,
                       cache=collective.cache_for(model))
    utm = np.column_stack([mine.column("utm_east").to_numpy(), mine.column("utm_north").to_numpy()])
    labels = mine.column("label").to_numpy()
    geographic = bool(np.isfinite(utm).all())
    writer = PartWriter(uri, metadata, task_id=task_id)
    writer.write(ids=mine.column("id").to_pylist(), roles=mine.column("role").to_pylist(), descriptors=desc,
                 splits=mine.column("split").to_pylist(), utm=utm if geographic else None,
                 labels=None if geographic else labels)
    return writer.parts


def write_split_store(model, rows, uri: str, metadata: StoreMetadata, collective: LocalCollective,
                      batch_size: int, task_id: str) -> None:
    """The store at `uri` made anew from `rows`: rank 0 clears what was there, every worker writes its
    share, rank 0 commits all the parts."""
    if collective.rank == 0 and clear_store(uri):
        log.info("replacing the store %s left by an earlier attempt", uri)
    collective.broadcast(None)  # nobody writes before the old store is gone
    parts = write_store_share(model, rows, uri, metadata, collective, batch_size, f"{task_id}-rank{collective.rank}")
    gathered = collective.gather([p.to_dict() for p in parts])
    if collective.rank == 0:
        commit(uri, [PartInfo.from_dict(p) for share in gathered for p in share], metadata)


def store_metadata(model, source: str, provenance: dict) -> StoreMetadata:
    """Metadata of a store of `model`'s descriptors of the dataset at `source`."""
    return StoreMetadata(dim=model.descriptor_dim, dataset=default_dataset_name(source), model_hash=model_hash(model),
                         model_config=model.config.model_dump(mode="json"), provenance=provenance)


def validate(model, val: PlaceDataset, config: TrainConfig, epoch: int,
             collective: LocalCollective | None = None) -> dict:
    """{"val_recall@N": fraction for N in config.val_ns} of `model` on `val` (plus "val_store" when scored
    through a store), the same on every worker."""
    collective = collective or LocalCollective()
    q_rows = validation_queries(val, config.max_val_queries, config.seed)
    if config.val_store_dir is None:
        db = collective.embed(model, val.db_paths, config.extract_batch_size)
        q = collective.embed(model, [val.q_paths[i] for i in q_rows], config.extract_batch_size)
        positives = val.positives()
        recalls = recall_at_n(q, db, [positives[i] for i in q_rows], ns=config.val_ns, mode="flat")
        return {f"val_recall@{n}": r for n, r in recalls.items()}
    source = config.eval_dataset or config.dataset
    uri = val_store_uri(config.val_store_dir, epoch)
    metadata = store_metadata(model, source, {
        "stage": "train-validation", "run": config.name, "epoch": epoch, "split": config.val_split,
        "pos_dist_thr": float(val.pos_dist_thr), "seed": config.seed, "train_config": config.model_dump(mode="json")})
    rows = split_image_rows(val, dataset_root(source), q_rows)
    write_split_store(model, rows, uri, metadata, collective, config.extract_batch_size, f"epoch{epoch}")
    recalls = None
    if collective.rank == 0:
        recalls = score_stores(f"epoch {epoch}", uri, ns=list(config.val_ns), split=config.val_split).evaluation.recalls
    recalls = collective.broadcast(recalls)
    return {**{f"val_recall@{n}": r for n, r in recalls.items()}, "val_store": uri}

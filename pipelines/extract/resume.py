"""What a store already holds when an extraction starts, and adopting the parts of a run that died.

An extraction commits once, at its end; its worker tasks write parts as they go. A run that is killed
leaves complete but uncommitted parts behind (each part file is written atomically). The next run over
the same store:

1. reads the committed manifest (if any) and checks that it was made by the same model and dataset;
   the ids it lists (descriptors and failures) are done;
2. looks at every uncommitted part: one written for another model/dataset/dimension can never join this
   store and is deleted; one whose ids are all new is adopted (committed with this run's parts, not
   recomputed); one that repeats an id already committed or adopted (a task retried after writing its
   part, or a run that died between its commit and its clean-up) is deleted, and any of its ids that
   nothing else holds are simply extracted again;
3. extracts the rows whose ids are neither committed nor adopted.

So a finished store holds every id exactly once, whatever the interruptions. One extraction at a time
per store: a second run would adopt or delete the parts of a live one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from sare_core.store import (
    IncompatiblePartError,
    PartInfo,
    StoreLocation,
    StoreMetadata,
    StoreNotCommittedError,
    find_uncommitted_parts,
    open_store,
)
from sare_core.store.parts import open_part, part_summary

log = logging.getLogger(__name__)


@dataclass
class StoreState:
    """The store at the start of a run.

    committed: whether a manifest exists (then `commit_update` adds to it, else `commit` creates it).
    version: its version (0 when not committed). done_ids: ids committed as descriptors or failures.
    adopted: uncommitted parts to commit with this run's own; adopted_ids: their ids.
    deleted: names of uncommitted parts removed (incompatible or repeating ids).
    """

    committed: bool = False
    version: int = 0
    done_ids: set[str] = field(default_factory=set)
    committed_rows: int = 0
    committed_failures: int = 0
    adopted: list[PartInfo] = field(default_factory=list)
    adopted_ids: set[str] = field(default_factory=set)
    adopted_rows: int = 0
    adopted_failures: int = 0
    deleted: list[str] = field(default_factory=list)

    @property
    def skip_ids(self) -> set[str]:
        return self.done_ids | self.adopted_ids


def _part_ids(location: StoreLocation, part: PartInfo, metadata: StoreMetadata) -> list[str] | None:
    """The ids of an uncommitted part, or None when it does not fit a store with `metadata`."""
    source = location.display(part.name)
    try:
        with open_part(location, part.name) as parquet:
            part_metadata, _ = part_summary(parquet, source)
            mismatches = metadata.mismatches(part_metadata)
            if mismatches:
                log.warning("%s was written for another store (%s)", source, "; ".join(mismatches))
                return None
            return parquet.read(columns=["id"]).column("id").to_pylist()
    except (IncompatiblePartError, pa.ArrowInvalid, KeyError) as error:
        log.warning("%s is not a usable part: %s", source, error)
        return None


def inspect_store(uri: str, metadata: StoreMetadata, storage_options: dict | None = None,
                  adopt: bool = True) -> StoreState:
    """The state of the store at `uri` for an extraction writing descriptors described by `metadata`.

    ValueError (before any work) when a committed store was made by another model, for another dataset,
    or with another dimension or dtype. adopt=False deletes every uncommitted part instead of adopting.
    """
    state = StoreState()
    location = StoreLocation.from_uri(uri, storage_options)
    try:
        store = open_store(uri, storage_options=storage_options)
    except StoreNotCommittedError:
        store = None
    if store is not None:
        mismatches = metadata.mismatches(store.metadata)
        if mismatches:
            raise ValueError(f"out: the store {store.uri} was made with other settings ({'; '.join(mismatches)}); "
                             f"resuming would mix descriptors: choose another output")
        state.committed, state.version = True, store.version
        state.done_ids.update(store.ids_arrow().to_pylist())
        state.committed_rows = len(state.done_ids)
        failed = store.failures().column("id").to_pylist()
        state.committed_failures = len(failed)
        state.done_ids.update(failed)
    for part in find_uncommitted_parts(uri, storage_options=storage_options):
        ids = _part_ids(location, part, metadata) if adopt else None
        if ids is None or not ids or any(i in state.done_ids or i in state.adopted_ids for i in ids):
            reason = "not adopting" if not adopt else ("incompatible" if ids is None else "repeats ids")
            log.info("deleting uncommitted part %s (%s)", location.display(part.name), reason)
            location.delete(part.name)
            state.deleted.append(part.name)
            continue
        state.adopted.append(part)
        state.adopted_ids.update(ids)
        if part.kind == "descriptors":
            state.adopted_rows += len(ids)
        else:
            state.adopted_failures += len(ids)
    if state.adopted:
        log.info("adopting %d uncommitted parts of an earlier run (%d descriptors, %d failures)",
                 len(state.adopted), state.adopted_rows, state.adopted_failures)
    return state


def delete_parts_of_run(uri: str, task_id: str, storage_options: dict | None = None) -> list[str]:
    """Delete the uncommitted parts this run's tasks wrote (task id `task_id`) that it did not commit:
    leftovers of tasks Ray retried after they had written a part."""
    location = StoreLocation.from_uri(uri, storage_options)
    doomed = [p.name for p in find_uncommitted_parts(uri, storage_options=storage_options) if p.task_id == task_id]
    for name in doomed:
        location.delete(name)
    if doomed:
        log.info("deleted %d parts written by retried tasks of this run", len(doomed))
    return doomed


def count_missing(ids: pa.Array | pa.ChunkedArray, uri: str, storage_options: dict | None = None) -> dict:
    """Check the committed store against the ids a run should have produced: {'missing': n,
    'in_both': n (ids both extracted and failed), 'rows': descriptors, 'failures': n, 'examples': [...]}."""
    store = open_store(uri, storage_options=storage_options)
    have = store.ids_arrow()
    failed = store.failures().column("id")
    wanted = pa.chunked_array([ids]) if isinstance(ids, pa.Array) else ids
    present = pa.chunked_array(list(have.chunks) + list(failed.chunks), pa.string())
    missing_mask = pc.invert(pc.is_in(wanted, present))
    missing = pc.filter(wanted, missing_mask)
    in_both = pc.filter(failed, pc.is_in(failed, have)) if len(failed) and len(have) else pa.array([], pa.string())
    return {"missing": len(missing), "in_both": len(in_both), "rows": len(have), "failures": len(failed),
            "examples": missing.to_pylist()[:5]}

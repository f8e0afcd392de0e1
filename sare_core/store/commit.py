"""Committing parts: the step that makes written parts visible, by writing the manifest last.

`commit` makes version 1 of a store from parts that tasks wrote; `commit_update` adds parts to a committed
store (resume after an interruption, extend a database) by rewriting the manifest as version + 1. Both
check every new part before writing the manifest: it exists with the size the writer reported, its
columns and footer fit the store (dimension, dtype, model hash, dataset), and its ids are new to the
store. The manifest is written conditionally (`StoreLocation.write_bytes_if`: S3 conditional PUTs, a lock
locally): of two writers racing on one store exactly one commit wins; the other fails with
StoreVersionConflictError (or StoreExistsError for two first commits) and loses nothing: its parts stay
in the store, uncommitted, and a rerun adopts them.

`find_uncommitted_parts` lists the complete parts that no manifest lists (from tasks of a run that died
before its commit), so a resumed run can commit them instead of recomputing them.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from .errors import (
    DuplicateIdsError,
    IncompatiblePartError,
    StoreCorruptError,
    StoreError,
    StoreExistsError,
    StoreNotCommittedError,
    StoreVersionConflictError,
)
from .location import TEMP_SUFFIX, StoreLocation
from .manifest import (
    MANIFEST_NAME,
    CommitRecord,
    Manifest,
    PartInfo,
    part_kind_of,
    read_manifest,
)
from .metadata import StoreMetadata, detect_git_revision, json_normalised, utc_now_iso
from .parts import check_part, open_part, part_info_from_footer
from .reader import DescriptorStore
from .schema import rows_by_role_split

logger = logging.getLogger(__name__)
DUPLICATE_EXAMPLES = 10


def _as_names(parts: Iterable[PartInfo | str]) -> list[tuple[str, PartInfo | None]]:
    """(file name, reported PartInfo or None) for parts given as PartInfo or plain names."""
    named = [(p.name, p) if isinstance(p, PartInfo) else (str(p), None) for p in parts]
    repeated = sorted(name for name, count in Counter(name for name, _ in named).items() if count > 1)
    if repeated:
        raise ValueError(f"parts given more than once: {repeated[:5]}")
    return named


def _verified_part(location: StoreLocation, name: str, reported: PartInfo | None, sizes: dict[str, int],
                   metadata: StoreMetadata) -> tuple[PartInfo, pa.ChunkedArray | None]:
    """The part's PartInfo as found on storage and its id column (None for failure parts)."""
    source = location.display(name)
    kind = part_kind_of(name)
    if kind is None or "/" in name:
        raise ValueError(f"{source}: not a part name (part-*.parquet or failures-*.parquet)")
    if name not in sizes:
        raise StoreError(f"{source}: part not found (written to another store, or deleted?)")
    if reported is not None and (reported.kind != kind or reported.size_bytes != sizes[name]):
        raise StoreError(f"{source}: the writer reported a {reported.kind} part of {reported.size_bytes} "
                         f"bytes, storage holds a {kind} part of {sizes[name]} bytes")
    try:
        with open_part(location, name) as parquet:
            check_part(parquet, kind, metadata, source)
            columns = ["id", "role", "split"] if kind == "descriptors" else []
            table = parquet.read(columns=columns) if columns else None
            num_rows = parquet.metadata.num_rows
    except FileNotFoundError:
        raise StoreError(f"{source}: part not found (deleted during the commit?)") from None
    except pa.ArrowInvalid as error:
        raise IncompatiblePartError(f"{source}: unreadable Parquet part ({error})") from None
    if reported is not None and reported.num_rows != num_rows:
        raise StoreError(f"{source}: the writer reported {reported.num_rows} rows, the file holds {num_rows}")
    counts = rows_by_role_split(table.column("role"), table.column("split")) if table is not None else {}
    part = PartInfo(name=name, kind=kind, num_rows=num_rows, size_bytes=sizes[name], rows_by_role_split=counts,
                    task_id=reported.task_id if reported is not None else "")
    return part, table.column("id") if table is not None else None


def _check_unique(location: StoreLocation, new_ids: list[pa.ChunkedArray], old_ids: pa.ChunkedArray | None):
    """DuplicateIdsError naming some ids that appear twice among the new and already committed rows."""
    chunks = [chunk for column in new_ids for chunk in column.chunks]
    if old_ids is not None:
        chunks += old_ids.chunks
    ids = pa.chunked_array(chunks, pa.string())
    if pc.count_distinct(ids).as_py() == len(ids):
        return
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()
    examples = sorted(repeated)[:DUPLICATE_EXAMPLES]
    raise DuplicateIdsError(f"{location.uri}: commit rejected, {len(repeated)} ids would appear more than once "
                            f"(already committed, or written by two tasks), e.g. {examples}", examples, len(repeated))


def _commit(location: StoreLocation, base: Manifest | None, parts: Iterable[PartInfo | str],
            metadata: StoreMetadata, check_duplicates: bool, provenance: dict | None,
            base_tag: str | None = None) -> Manifest:
    named = _as_names(parts)
    committed = {p.name for p in base.parts + base.failures} if base is not None else set()
    again = [name for name, _ in named if name in committed]
    if again:
        raise StoreError(f"{location.uri}: parts already committed: {again[:5]}")
    sizes = location.list_sizes()
    verified = [_verified_part(location, name, reported, sizes, metadata) for name, reported in named]
    new_parts = [part for part, _ in verified if part.kind == "descriptors"]
    new_failures = [part for part, _ in verified if part.kind == "failures"]
    if check_duplicates:
        old_ids = None
        if base is not None and base.num_rows():
            old_ids = DescriptorStore(location, base).ids_arrow()
        _check_unique(location, [ids for _, ids in verified if ids is not None], old_ids)
    git_revision = detect_git_revision()
    record = CommitRecord(version=(base.version + 1) if base else 1, committed_at=utc_now_iso(),
                          parts_added=len(new_parts), rows_added=sum(p.num_rows for p in new_parts),
                          failures_added=sum(p.num_rows for p in new_failures), git_revision=git_revision,
                          provenance=json_normalised(dict(provenance or {}), "provenance"))
    if base is None:
        manifest = Manifest(version=1, metadata=metadata, parts=new_parts, failures=new_failures, history=[record])
    else:
        manifest = Manifest(version=base.version + 1, metadata=base.metadata, parts=base.parts + new_parts,
                            failures=base.failures + new_failures, history=base.history + [record])
    if not location.write_bytes_if(MANIFEST_NAME, manifest.to_json(), base_tag):
        kept = f"this commit's {len(named)} parts stay in the store, uncommitted: rerun to adopt them"
        if base is None:
            raise StoreExistsError(f"descriptor store {location.uri}: another writer committed it first; {kept}")
        raise StoreVersionConflictError(f"{location.uri}: another writer committed a new version after version "
                                        f"{base.version} was read; {kept}")
    logger.info("committed %s version %d: +%d parts, +%d rows, +%d failures (%d rows in all)", location.uri,
                manifest.version, record.parts_added, record.rows_added, record.failures_added,
                manifest.num_rows())
    return manifest


def commit(uri: str | os.PathLike, parts: Iterable[PartInfo | str], metadata: StoreMetadata, *,
           storage_options: dict | None = None, check_duplicates: bool = True,
           provenance: dict | None = None) -> Manifest:
    """Make the store at `uri` exist: check `parts` (from `PartWriter`s, or file names) and write the
    manifest, version 1. StoreExistsError when a manifest is already there (see `commit_update`);
    DuplicateIdsError when an id appears twice. `provenance` goes into the commit's history record."""
    location = StoreLocation.from_uri(uri, storage_options)
    try:
        existing = read_manifest(location)
    except StoreNotCommittedError:
        existing = None
    except StoreCorruptError:
        raise StoreExistsError(f"{location.display(MANIFEST_NAME)} exists (and is unreadable)") from None
    if existing is not None:
        raise StoreExistsError(f"descriptor store {location.uri} is already committed (version "
                               f"{existing.version}); add parts with commit_update")
    return _commit(location, None, parts, metadata, check_duplicates, provenance)


def commit_update(uri: str | os.PathLike, parts: Iterable[PartInfo | str], *, expected_version: int | None = None,
                  storage_options: dict | None = None, check_duplicates: bool = True,
                  provenance: dict | None = None) -> Manifest:
    """Add `parts` to the committed store at `uri`: the manifest is rewritten as version + 1.

    The parts must fit the store's metadata and bring only new ids. expected_version: fail with
    StoreVersionConflictError unless the store is at this version (guards a read-modify-commit cycle).
    """
    location = StoreLocation.from_uri(uri, storage_options)
    tag = location.tag(MANIFEST_NAME)  # before the content: a newer content then only causes a conflict
    base = read_manifest(location)
    if expected_version is not None and base.version != expected_version:
        raise StoreVersionConflictError(f"{location.uri}: store is at version {base.version}, "
                                        f"expected {expected_version}")
    return _commit(location, base, parts, base.metadata, check_duplicates, provenance, base_tag=tag)


def find_uncommitted_parts(uri: str | os.PathLike, *, storage_options: dict | None = None) -> list[PartInfo]:
    """Complete part files under `uri` that the manifest (if any) does not list, sorted by name.

    Part files are written atomically, so each one found is whole; one whose footer cannot be read is
    skipped with a warning. Commit them with `commit`/`commit_update` (which checks them), or remove them
    with `delete_uncommitted_files`.
    """
    location = StoreLocation.from_uri(uri, storage_options)
    try:
        manifest = read_manifest(location)
        committed = {p.name for p in manifest.parts + manifest.failures}
    except StoreNotCommittedError:
        committed = set()
    found = []
    for name, size in sorted(location.list_sizes().items()):
        if part_kind_of(name) is None or name in committed:
            continue
        try:
            with open_part(location, name) as parquet:
                found.append(part_info_from_footer(parquet, name, size, location.display(name)))
        except (pa.ArrowInvalid, FileNotFoundError, ValueError) as error:
            logger.warning("skipping unreadable uncommitted part %s: %s", location.display(name), error)
    return found


def delete_uncommitted_files(uri: str | os.PathLike, *, storage_options: dict | None = None) -> list[str]:
    """Delete part files no manifest lists and leftover temporary files; returns their names.

    Only while no writer works on the store: it would delete the parts a running task has written.
    """
    location = StoreLocation.from_uri(uri, storage_options)
    try:
        manifest = read_manifest(location)
        committed = {p.name for p in manifest.parts + manifest.failures}
    except StoreNotCommittedError:
        committed = set()
    doomed = [name for name in sorted(location.list_sizes())
              if (part_kind_of(name) is not None and name not in committed)
              or (name.startswith(".") and name.endswith(TEMP_SUFFIX))]
    for name in doomed:
        location.delete(name)
    return doomed


def clear_store(uri: str | os.PathLike, storage_options: dict | None = None) -> list[str]:
    """Remove whatever is at `uri`: the manifest first (from then on readers find no store, never a mix
    of an old and a new one), then every other file. Returns the names removed."""
    location = StoreLocation.from_uri(uri, storage_options)
    names = sorted(location.list_sizes())
    if MANIFEST_NAME in names:
        location.delete(MANIFEST_NAME)
    for name in names:
        if name != MANIFEST_NAME:
            location.delete(name)
    return names

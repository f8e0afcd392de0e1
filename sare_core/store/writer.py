"""Writing parts: many independent tasks each write their own uniquely named parts, then one commit.

A `PartWriter` lives in one task (a Ray Data worker, a plain loop). Each `write` call makes one immutable
Parquet part named `part-{task_id}-{token}-{seq}.parquet` (the random token keeps a resumed or retried run
from overwriting a committed part) and returns its `PartInfo`; the task hands those back to the driver,
which commits them (`commit.commit` / `commit.commit_update`). Until then no reader sees the parts.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Sequence

from .commit import commit
from .location import StoreLocation
from .manifest import PART_PREFIX, PART_SUFFIX, PartInfo
from .metadata import StoreMetadata
from .parts import serialize_part
from .reader import DescriptorStore
from .schema import descriptor_table, failures_table


def _safe_task_id(task_id: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.]+", "_", str(task_id)).strip("._")
    return cleaned[:64] or "task"


class PartWriter:
    """Writes parts of the store at `uri` for one task; never touches the manifest.

    metadata: the store's metadata (the driver makes it once and passes it to every task). task_id: a
    label for the part names (e.g. a Ray task or block index); a random token is added, so it need not
    be unique. storage_options: see `location.StoreLocation`.
    """

    def __init__(self, uri: str | os.PathLike, metadata: StoreMetadata, *, task_id: str | None = None,
                 storage_options: dict | None = None):
        self.location = StoreLocation.from_uri(uri, storage_options)
        self.metadata = metadata
        self.task_id = _safe_task_id(task_id) if task_id is not None else ""
        token = uuid.uuid4().hex[:12]
        self._name_stem = f"{self.task_id}-{token}" if self.task_id else token
        self._sequence = 0
        self.parts: list[PartInfo] = []

    def _write(self, table, kind: str) -> PartInfo:
        name = f"{PART_PREFIX[kind]}{self._name_stem}-{self._sequence:05d}{PART_SUFFIX}"
        data, counts = serialize_part(table, kind, self.metadata, self.task_id)
        self.location.write_bytes_atomic(name, data)
        self._sequence += 1
        part = PartInfo(name=name, kind=kind, num_rows=table.num_rows, size_bytes=len(data),
                        rows_by_role_split=counts, task_id=self.task_id)
        self.parts.append(part)
        return part

    def write(self, *, ids: Sequence[str], roles: str | Sequence[str], descriptors, splits=None, utm=None,
              labels=None) -> PartInfo:
        """Write n descriptor rows as one new part; returns its PartInfo.

        ids: n unique strings (unique across the store: the commit checks). roles: "database"/"query",
        one for all or n. descriptors: (n, D) array-like, cast to the store dtype. splits: None, one
        string or n. utm: None or (n, 2) metres (east, north). labels: None or n integers (-1: none).
        """
        table = descriptor_table(ids=ids, roles=roles, descriptors=descriptors, dim=self.metadata.dim,
                                 dtype=self.metadata.dtype, splits=splits, utm=utm, labels=labels)
        return self._write(table, "descriptors")

    def write_failures(self, ids: Sequence[str], paths: Sequence[str], errors: Sequence[str]) -> PartInfo:
        """Write one failure part: for each image that could not be processed, its id, path and error."""
        return self._write(failures_table(ids, paths, errors), "failures")


def write_store(uri: str | os.PathLike, metadata: StoreMetadata, *, ids: Sequence[str],
                roles: str | Sequence[str], descriptors, splits=None, utm=None, labels=None,
                failures: Iterable[tuple[str, str, str]] = (), rows_per_part: int = 100_000,
                storage_options: dict | None = None) -> DescriptorStore:
    """Write in-memory descriptors as a new committed store and open it (for stores that fit in memory).

    Arguments as for `PartWriter.write`; rows are split into parts of at most `rows_per_part` rows.
    failures: (id, path, error) records. Raises StoreExistsError when `uri` already holds a store.
    """
    if rows_per_part < 1:
        raise ValueError(f"rows_per_part must be positive, got {rows_per_part}")
    writer = PartWriter(uri, metadata, task_id="main", storage_options=storage_options)
    n = len(ids)

    def rows(values, start: int, stop: int):
        return values if values is None or isinstance(values, str) else values[start:stop]

    for start in range(0, n, rows_per_part):
        stop = min(start + rows_per_part, n)
        writer.write(ids=ids[start:stop], roles=rows(roles, start, stop), descriptors=descriptors[start:stop],
                     splits=rows(splits, start, stop), utm=rows(utm, start, stop),
                     labels=rows(labels, start, stop))
    failure_records = list(failures)
    if failure_records:
        writer.write_failures(*(list(column) for column in zip(*failure_records, strict=True)))
    commit(uri, writer.parts, metadata, storage_options=storage_options)
    return DescriptorStore.open(uri, storage_options=storage_options)

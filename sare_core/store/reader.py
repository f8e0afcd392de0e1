"""Reading a committed store, streaming: batches of rows filtered by role and split, chosen columns.

Only parts listed in the committed manifest are read. Parts and row groups that cannot hold the wanted
role/split (manifest counts, Parquet statistics) are skipped without reading their data, and at most about
two batches of rows are in memory at a time, so a store larger than memory can be searched batch by batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import StoreCorruptError
from .location import StoreLocation
from .manifest import Manifest, PartInfo, read_manifest
from .metadata import StoreMetadata
from .parts import expected_schema, open_part
from .schema import DESCRIPTOR_COLUMNS, FAILURES_SCHEMA, descriptors_from_arrow, same_column_types

DEFAULT_BATCH_SIZE = 65536  # rows per batch at most, when the caller gives no batch size
DEFAULT_BATCH_BYTES = 64 << 20  # ... and about this many bytes of descriptors (4,096 rows at D=4096)


def default_batch_rows(metadata: StoreMetadata) -> int:
    """Rows per batch when none is given: DEFAULT_BATCH_SIZE, fewer for wide descriptors so that a batch
    holds about DEFAULT_BATCH_BYTES (65,536 rows of 256 float32 dims; 4,096 rows of 4,096)."""
    itemsize = 4 if metadata.dtype == "float32" else 2
    return max(1024, min(DEFAULT_BATCH_SIZE, DEFAULT_BATCH_BYTES // (metadata.dim * itemsize)))


def _column(data: pa.RecordBatch | pa.Table, name: str) -> pa.Array | None:
    if name not in data.schema.names:
        return None
    column = data.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


@dataclass
class DescriptorBatch:
    """n rows of a store as numpy arrays; a column that was not read is None.

    ids, roles, splits: (n,) object arrays of str. descriptors: (n, D) float32, C-contiguous (read-only
    when it views Arrow memory). utm: (n, 2) float64 metres (east, north), NaN for label datasets.
    labels: (n,) int64, -1 where none.
    """

    ids: np.ndarray | None
    descriptors: np.ndarray | None
    roles: np.ndarray | None
    splits: np.ndarray | None
    utm: np.ndarray | None
    labels: np.ndarray | None

    def __len__(self) -> int:
        for array in (self.ids, self.descriptors, self.roles, self.splits, self.utm, self.labels):
            if array is not None:
                return len(array)
        return 0

    @classmethod
    def from_arrow(cls, data: pa.RecordBatch | pa.Table) -> DescriptorBatch:
        """Convert store rows (any subset of the descriptor columns) to numpy."""
        def strings(name):
            column = _column(data, name)
            return None if column is None else column.to_numpy(zero_copy_only=False)

        east, north, labels, descriptors = (_column(data, n) for n in ("utm_east", "utm_north", "label",
                                                                       "descriptor"))
        utm = None
        if east is not None and north is not None:
            utm = np.column_stack([east.to_numpy(zero_copy_only=False), north.to_numpy(zero_copy_only=False)])
        return cls(
            ids=strings("id"),
            descriptors=None if descriptors is None else descriptors_from_arrow(descriptors),
            roles=strings("role"),
            splits=strings("split"),
            utm=utm,
            labels=None if labels is None else labels.to_numpy(zero_copy_only=False),
        )


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def rebatch(batches: Iterable[pa.RecordBatch], batch_size: int) -> Iterator[pa.RecordBatch]:
    """Regroup record batches into batches of exactly `batch_size` rows (the last one may be shorter).

    Slices are zero-copy; rows are copied only where one output batch joins pieces of several inputs.
    """
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        offset = 0
        while offset < batch.num_rows:
            take = min(batch_size - pending_rows, batch.num_rows - offset)
            pending.append(batch.slice(offset, take))
            pending_rows += take
            offset += take
            if pending_rows == batch_size:
                yield _concat(pending)
                pending, pending_rows = [], 0
    if pending_rows:
        yield _concat(pending)


def _matching_row_groups(parquet: pq.ParquetFile, role: str | None, split: str | None) -> list[int]:
    """Row groups whose min/max statistics allow rows with this role and split."""
    metadata = parquet.metadata
    if metadata.num_row_groups == 0:
        return []
    index = {metadata.row_group(0).column(i).path_in_schema: i for i in range(metadata.num_columns)}
    keep = []
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        possible = row_group.num_rows > 0
        for name, value in (("role", role), ("split", split)):
            if value is None or not possible:
                continue
            stats = row_group.column(index[name]).statistics
            if stats is not None and stats.has_min_max and not stats.min <= value <= stats.max:
                possible = False
        if possible:
            keep.append(group)
    return keep


class DescriptorStore:
    """A committed descriptor store (local directory or s3:// prefix), as of one manifest version.

    Open with `open_store(uri)` / `DescriptorStore.open(uri)`. A store object reads the manifest once;
    open it again to see later commits. Picklable (to hand to Ray tasks that each read some parts).
    """

    def __init__(self, location: StoreLocation, manifest: Manifest):
        self.location = location
        self.manifest = manifest

    @classmethod
    def open(cls, uri: str | os.PathLike, *, storage_options: dict | None = None,
             verify: bool = True) -> DescriptorStore:
        """Read the committed manifest at `uri`; StoreNotCommittedError when there is none,
        StoreCorruptError when it is malformed or (verify=True, one listing) a listed part is missing or
        has another size than committed."""
        location = StoreLocation.from_uri(uri, storage_options)
        store = cls(location, read_manifest(location))
        if verify:
            store.verify()
        return store

    @property
    def uri(self) -> str:
        return self.location.uri

    @property
    def metadata(self) -> StoreMetadata:
        return self.manifest.metadata

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def dim(self) -> int:
        return self.metadata.dim

    @property
    def dtype(self) -> str:
        return self.metadata.dtype

    @property
    def parts(self) -> list[PartInfo]:
        return list(self.manifest.parts)

    def __len__(self) -> int:
        return self.manifest.num_rows()

    def __repr__(self) -> str:
        return (f"DescriptorStore({self.uri!r}, version={self.version}, rows={len(self)}, dim={self.dim}, "
                f"dtype={self.dtype!r})")

    def num_rows(self, role: str | None = None, split: str | None = None) -> int:
        """Rows with this role and split (None: any), from the manifest, without reading data."""
        return self.manifest.num_rows(role, split)

    def verify(self) -> None:
        """StoreCorruptError unless every committed part exists with its committed size (one listing)."""
        sizes = self.location.list_sizes()
        listed = self.manifest.parts + self.manifest.failures
        missing = [p.name for p in listed if p.name not in sizes]
        if missing:
            raise StoreCorruptError(f"descriptor store {self.uri}: {len(missing)} parts listed in its manifest "
                                    f"are missing, e.g. {self.location.display(missing[0])}")
        changed = [p.name for p in listed if sizes[p.name] != p.size_bytes]
        if changed:
            part = next(p for p in listed if p.name == changed[0])
            raise StoreCorruptError(f"descriptor store {self.uri}: {len(changed)} parts changed since commit, "
                                    f"e.g. {self.location.display(part.name)} has {sizes[part.name]} bytes, "
                                    f"committed with {part.size_bytes}")

    def _part_batches(self, part: PartInfo, columns: list[str], role: str | None, split: str | None,
                      batch_size: int) -> Iterator[pa.RecordBatch]:
        """Record batches of one part with the rows matching role/split, columns `columns` + filters."""
        source = self.location.display(part.name)
        try:
            with open_part(self.location, part.name) as parquet:
                if not same_column_types(parquet.schema_arrow, expected_schema(part.kind, self.metadata)):
                    raise StoreCorruptError(f"{source}: columns do not match the store's schema "
                                            f"({parquet.schema_arrow.names})")
                if parquet.metadata.num_rows != part.num_rows:
                    raise StoreCorruptError(f"{source}: {parquet.metadata.num_rows} rows, committed with "
                                            f"{part.num_rows}")
                groups = _matching_row_groups(parquet, role, split) if part.kind == "descriptors" else None
                if groups == []:
                    return
                for batch in parquet.iter_batches(batch_size=batch_size, row_groups=groups, columns=columns):
                    mask = None
                    for name, value in (("role", role), ("split", split)):
                        if value is not None:
                            equal = pc.equal(batch.column(name), value)
                            mask = equal if mask is None else pc.and_(mask, equal)
                    yield batch if mask is None else batch.filter(mask)
        except FileNotFoundError:
            raise StoreCorruptError(f"descriptor store {self.uri}: part {source} listed in its manifest is "
                                    f"missing") from None
        except pa.ArrowInvalid as error:
            raise StoreCorruptError(f"descriptor store {self.uri}: part {source} is unreadable ({error})") from None

    def _filtered_batches(self, role: str | None, split: str | None, columns: Sequence[str] | None,
                          batch_size: int, parts: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
        """Matching rows part by part, in record batches of at most `batch_size` rows (not regrouped)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        wanted = list(DESCRIPTOR_COLUMNS) if columns is None else list(columns)
        unknown = [c for c in wanted if c not in DESCRIPTOR_COLUMNS]
        if unknown:
            raise ValueError(f"unknown columns {unknown}; a store has {list(DESCRIPTOR_COLUMNS)}")
        wanted = [c for c in DESCRIPTOR_COLUMNS if c in wanted]
        filters = [name for name, value in (("role", role), ("split", split)) if value is not None]
        read_columns = [c for c in DESCRIPTOR_COLUMNS if c in wanted or c in filters]
        selected = self.manifest.parts
        if parts is not None:
            by_name = {p.name: p for p in self.manifest.parts}
            unknown_parts = [name for name in parts if name not in by_name]
            if unknown_parts:
                raise ValueError(f"{self.uri}: not committed descriptor parts: {unknown_parts[:5]}")
            selected = [by_name[name] for name in parts]
        for part in selected:
            if part.rows(role, split) == 0:
                continue
            for batch in self._part_batches(part, read_columns, role, split, batch_size):
                if batch.num_rows:
                    yield batch.select(wanted) if read_columns != wanted else batch

    def iter_arrow_batches(self, role: str | None = None, split: str | None = None,
                           columns: Sequence[str] | None = None, batch_size: int | None = None,
                           parts: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of exactly `batch_size` rows (the last may be shorter) with role == `role` and
        split == `split` (None: any), holding `columns` (default: all) in schema order.

        parts: read only these committed part names (e.g. one shard's share of `self.parts`).
        batch_size: default `default_batch_rows` (about 64 MiB of descriptors).
        Memory: about 2 * batch_size rows (D * 4 bytes of descriptor each, in float32).
        """
        batch_size = default_batch_rows(self.metadata) if batch_size is None else batch_size
        return rebatch(self._filtered_batches(role, split, columns, batch_size, parts), batch_size)

    def iter_batches(self, role: str | None = None, split: str | None = None,
                     columns: Sequence[str] | None = None, batch_size: int | None = None,
                     parts: Sequence[str] | None = None) -> Iterator[DescriptorBatch]:
        """As `iter_arrow_batches`, each batch converted to a `DescriptorBatch` of numpy arrays."""
        for batch in self.iter_arrow_batches(role, split, columns, batch_size, parts):
            yield DescriptorBatch.from_arrow(batch)

    def read_arrow(self, role: str | None = None, split: str | None = None,
                   columns: Sequence[str] | None = None) -> pa.Table:
        """All matching rows as one Arrow table (for stores, or selections, that fit in memory)."""
        batches = list(self._filtered_batches(role, split, columns, DEFAULT_BATCH_SIZE, None))
        if batches:
            return pa.Table.from_batches(batches).combine_chunks()
        schema = expected_schema("descriptors", self.metadata)
        names = columns if columns is not None else DESCRIPTOR_COLUMNS
        return schema.empty_table().select([c for c in DESCRIPTOR_COLUMNS if c in names])

    def read(self, role: str | None = None, split: str | None = None,
             columns: Sequence[str] | None = None) -> DescriptorBatch:
        """All matching rows as numpy arrays (see `DescriptorBatch`)."""
        return DescriptorBatch.from_arrow(self.read_arrow(role, split, columns))

    def ids_arrow(self, role: str | None = None, split: str | None = None) -> pa.ChunkedArray:
        """The ids of the matching rows as an Arrow string column (compact: no Python objects)."""
        batches = self._filtered_batches(role, split, ["id"], DEFAULT_BATCH_SIZE, None)
        chunks = [batch.column("id") for batch in batches]
        return pa.chunked_array(chunks, pa.string())

    def ids(self, role: str | None = None, split: str | None = None) -> np.ndarray:
        """The ids of the matching rows, (n,) object array of str (e.g. to skip them when resuming)."""
        return self.ids_arrow(role, split).to_numpy()

    def failures(self) -> pa.Table:
        """The failures table: columns id, path, error (strings), one row per image that failed."""
        batches = []
        for part in self.manifest.failures:
            batches.extend(self._part_batches(part, list(FAILURES_SCHEMA.names), None, None, DEFAULT_BATCH_SIZE))
        batches = [batch for batch in batches if batch.num_rows]
        return pa.Table.from_batches(batches).combine_chunks() if batches else FAILURES_SCHEMA.empty_table()

    def failed_ids(self) -> np.ndarray:
        """Ids in the failures table, (n,) object array of str."""
        return self.failures().column("id").to_numpy()


def open_store(uri: str | os.PathLike, *, storage_options: dict | None = None,
               verify: bool = True) -> DescriptorStore:
    """Open the committed store at `uri` (local path or s3://bucket/prefix); see `DescriptorStore.open`."""
    return DescriptorStore.open(uri, storage_options=storage_options, verify=verify)

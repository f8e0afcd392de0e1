"""Part files: one Arrow table serialised as Parquet, its footer carrying the store metadata.

The footer's key-value metadata holds the store metadata (so a part found without a manifest can be
checked and adopted) and the part's own summary (kind, rows by role and split, task id).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import IncompatiblePartError
from .location import StoreLocation
from .manifest import PartInfo
from .metadata import StoreMetadata
from .schema import FAILURES_SCHEMA, descriptor_schema, rows_by_role_split, same_column_types

METADATA_KEY = b"sare.store.metadata"
PART_KEY = b"sare.store.part"
ROW_GROUP_BYTES = 64 << 20  # about this many bytes of descriptors per row group
DICTIONARY_COLUMNS = ["role", "split"]
STATISTICS_COLUMNS = ["id", "role", "split", "label", "path"]


def expected_schema(kind: str, metadata: StoreMetadata) -> pa.Schema:
    return descriptor_schema(metadata.dim, metadata.dtype) if kind == "descriptors" else FAILURES_SCHEMA


def row_group_rows(metadata: StoreMetadata) -> int:
    """Rows per row group so that one holds about ROW_GROUP_BYTES of descriptors (4096 rows at D=4096)."""
    itemsize = 4 if metadata.dtype == "float32" else 2
    return max(1024, ROW_GROUP_BYTES // (metadata.dim * itemsize))


def serialize_part(table: pa.Table, kind: str, metadata: StoreMetadata, task_id: str) -> tuple[bytes, dict]:
    """Parquet bytes of `table` (a descriptor or failure table) and its rows by role and split."""
    counts = rows_by_role_split(table.column("role"), table.column("split")) if kind == "descriptors" else {}
    summary = {"kind": kind, "rows_by_role_split": counts, "task_id": task_id}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata.to_dict()),
                                           PART_KEY: json.dumps(summary)})
    buffer = io.BytesIO()
    columns = set(table.column_names)
    pq.write_table(
        table, buffer,
        row_group_size=row_group_rows(metadata),
        compression={name: ("none" if name == "descriptor" else "zstd") for name in table.column_names},
        use_dictionary=[c for c in DICTIONARY_COLUMNS if c in columns],
        write_statistics=[c for c in STATISTICS_COLUMNS if c in columns],
    )
    return buffer.getvalue(), counts


@contextmanager
def open_part(location: StoreLocation, name: str) -> Iterator[pq.ParquetFile]:
    """The Parquet file `name` of the store, open for reading (FileNotFoundError when absent)."""
    with location.open_read(name) as f:
        yield pq.ParquetFile(f)


def part_summary(parquet: pq.ParquetFile, source: str) -> tuple[StoreMetadata, dict]:
    """The store metadata and part summary written in a part's footer."""
    kv = parquet.schema_arrow.metadata or {}
    try:
        return StoreMetadata.from_dict(json.loads(kv[METADATA_KEY])), json.loads(kv[PART_KEY])
    except (KeyError, TypeError, ValueError) as error:
        raise IncompatiblePartError(f"{source}: not a descriptor store part (footer metadata: {error})") from None


def check_part(parquet: pq.ParquetFile, kind: str, metadata: StoreMetadata, source: str) -> None:
    """IncompatiblePartError unless the part's columns and footer metadata fit a store with `metadata`."""
    if not same_column_types(parquet.schema_arrow, expected_schema(kind, metadata)):
        raise IncompatiblePartError(f"{source}: columns {parquet.schema_arrow.names} of types "
                                    f"{[str(t) for t in parquet.schema_arrow.types]} do not fit a {kind} part "
                                    f"of dim {metadata.dim}, dtype {metadata.dtype}")
    part_metadata, summary = part_summary(parquet, source)
    mismatches = metadata.mismatches(part_metadata)
    if mismatches:
        raise IncompatiblePartError(f"{source}: written for another store ({'; '.join(mismatches)})")
    if summary.get("kind") != kind:
        raise IncompatiblePartError(f"{source}: footer says kind {summary.get('kind')!r}, expected {kind!r}")


def part_info_from_footer(parquet: pq.ParquetFile, name: str, size_bytes: int, source: str) -> PartInfo:
    """A PartInfo rebuilt from a part's footer (for parts found on storage but never committed)."""
    _, summary = part_summary(parquet, source)
    return PartInfo.from_dict({"name": name, "kind": summary.get("kind", ""),
                               "num_rows": parquet.metadata.num_rows, "size_bytes": size_bytes,
                               "rows_by_role_split": summary.get("rows_by_role_split", {}),
                               "task_id": summary.get("task_id", "")})

"""Arrow schemas of the store's tables, and conversions between numpy arrays and Arrow columns.

Descriptor rows: id (string, unique in the store), role ("database" | "query"), split (string, "" when the
dataset has none), utm_east, utm_north (float64 metres, NaN for label datasets), label (int64, -1 when
none), descriptor (fixed-size list of D float32, or float16 when the store's dtype says so).
Failure rows: id, path, error (strings): images that extraction could not turn into descriptors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROLES = ("database", "query")
DESCRIPTOR_COLUMNS = ("id", "role", "split", "utm_east", "utm_north", "label", "descriptor")
FAILURE_COLUMNS = ("id", "path", "error")
NO_LABEL = -1

_ARROW_FLOAT = {"float32": pa.float32(), "float16": pa.float16()}
_NUMPY_FLOAT = {"float32": np.float32, "float16": np.float16}

FAILURES_SCHEMA = pa.schema([pa.field(name, pa.string(), nullable=False) for name in FAILURE_COLUMNS])


def descriptor_schema(dim: int, dtype: str) -> pa.Schema:
    """The Arrow schema of descriptor rows for D = `dim` and element type `dtype` (float32 | float16)."""
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("utm_east", pa.float64(), nullable=False),
        pa.field("utm_north", pa.float64(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("descriptor", pa.list_(pa.field("element", _ARROW_FLOAT[dtype], nullable=False), dim),
                 nullable=False),
    ])


def same_column_types(actual: pa.Schema, expected: pa.Schema) -> bool:
    """True when `actual` has the column names and types of `expected` (ignoring list child names,
    nullability and metadata, which Parquet does not round-trip exactly)."""
    if actual.names != expected.names:
        return False
    for a, e in zip(actual.types, expected.types, strict=True):
        if pa.types.is_fixed_size_list(e):
            if not (pa.types.is_fixed_size_list(a) and a.list_size == e.list_size and a.value_type == e.value_type):
                return False
        elif a != e:
            return False
    return True


def _strings(values, n: int, what: str) -> pa.Array:
    """`values` (one str for all rows, or n strings) as an Arrow string array of length n."""
    if isinstance(values, str):
        return pa.array([values] * n, pa.string())
    try:
        array = pa.array(list(values), pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ValueError(f"{what} must be strings: {error}") from None
    if len(array) != n:
        raise ValueError(f"{what}: {len(array)} values for {n} rows")
    if array.null_count:
        raise ValueError(f"{what} must not contain None")
    return array


def descriptors_to_arrow(descriptors, dim: int, dtype: str) -> pa.FixedSizeListArray:
    """(n, D) array-like (numpy, CPU torch tensor) -> fixed-size list column of `dtype`; ValueError on a
    wrong shape or a value that is not finite after the cast (float16 overflows above 65504)."""
    array = np.asarray(descriptors)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"descriptors must have shape (n, {dim}), got {array.shape}")
    with np.errstate(over="ignore"):  # overflow is reported below, naming the row
        array = np.ascontiguousarray(array, dtype=_NUMPY_FLOAT[dtype])
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ValueError(f"descriptors must be finite in {dtype}: row {bad} is not")
    values = pa.array(array.reshape(-1), _ARROW_FLOAT[dtype])
    return pa.FixedSizeListArray.from_arrays(values, dim)


def descriptors_from_arrow(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Fixed-size list column of n rows -> (n, D) float32, C-contiguous.

    float32 data is not copied when the column is one chunk: the result is a read-only view of Arrow
    memory (copy it before writing into it). float16 data is converted, which copies.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_fixed_size_list(column.type):
        raise ValueError(f"descriptor column must be a fixed-size list, got {column.type}")
    if column.null_count:
        raise ValueError("descriptor column holds null rows")
    dim = column.type.list_size
    values = column.flatten()  # honours the slice offset, unlike .values
    if values.null_count:
        raise ValueError("descriptor column holds null elements")
    flat = values.to_numpy(zero_copy_only=True)
    matrix = flat.reshape(len(column), dim)
    if matrix.dtype != np.float32:
        matrix = matrix.astype(np.float32)
    return np.ascontiguousarray(matrix)


def descriptor_table(*, ids, roles, descriptors, dim: int, dtype: str, splits=None, utm=None,
                     labels=None) -> pa.Table:
    """Validated descriptor rows as an Arrow table of `descriptor_schema(dim, dtype)`.

    ids: n unique non-empty strings. roles: "database"/"query", one for all rows or n of them.
    descriptors: (n, D). splits: None (""), one string or n strings. utm: None (NaN) or (n, 2) metres as
    (east, north). labels: None (-1) or n integers.
    """
    if isinstance(ids, str):
        raise ValueError("ids must be a sequence of strings, got one string")
    n = len(ids)
    ids_array = _strings(ids, n, "ids")
    if n and pc.min(pc.utf8_length(ids_array)).as_py() == 0:
        raise ValueError("ids must be non-empty strings")
    if pc.count_distinct(ids_array).as_py() != n:
        counts = pc.value_counts(ids_array)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()
        raise ValueError(f"ids repeat within one part: {repeated[:5]}")
    roles_array = _strings(roles, n, "roles")
    unknown = set(pc.unique(roles_array).to_pylist()) - set(ROLES)
    if unknown:
        raise ValueError(f"roles must be one of {ROLES}, got {sorted(unknown)[:5]}")
    splits_array = _strings("" if splits is None else splits, n, "splits")
    if utm is None:
        utm_array = np.full((n, 2), np.nan)
    else:
        utm_array = np.asarray(utm, dtype=np.float64)
        if utm_array.shape != (n, 2):
            raise ValueError(f"utm must have shape ({n}, 2) (east, north), got {utm_array.shape}")
    if labels is None:
        labels_array = np.full(n, NO_LABEL, dtype=np.int64)
    else:
        raw = np.asarray(labels)
        if raw.shape != (n,) or not (np.issubdtype(raw.dtype, np.integer) or raw.size == 0):
            raise ValueError(f"labels must be {n} integers, got shape {raw.shape} of {raw.dtype}")
        labels_array = raw.astype(np.int64)
    descriptor_array = descriptors_to_arrow(descriptors, dim, dtype)
    if len(descriptor_array) != n:
        raise ValueError(f"descriptors: {len(descriptor_array)} rows for {n} ids")
    columns = [ids_array, roles_array, splits_array, pa.array(utm_array[:, 0]), pa.array(utm_array[:, 1]),
               pa.array(labels_array), descriptor_array]
    return pa.Table.from_arrays(columns, schema=descriptor_schema(dim, dtype))


def failures_table(ids: Sequence[str], paths: Sequence[str], errors: Sequence[str]) -> pa.Table:
    """Failure rows (one per image that could not be processed) as an Arrow table of `FAILURES_SCHEMA`."""
    n = len(ids)
    columns = [_strings(ids, n, "failure ids"), _strings(paths, n, "failure paths"),
               _strings([str(e) for e in errors], n, "failure errors")]
    return pa.Table.from_arrays(columns, schema=FAILURES_SCHEMA)


def rows_by_role_split(roles: pa.Array | pa.ChunkedArray, splits: pa.Array | pa.ChunkedArray) -> dict:
    """{role: {split: row count}} of the rows whose role and split columns are given."""
    table = pa.table({"role": roles, "split": splits}).group_by(["role", "split"]).aggregate([([], "count_all")])
    counts: dict[str, dict[str, int]] = {}
    for role, split, count in zip(*(table.column(c).to_pylist() for c in ("role", "split", "count_all")),
                                  strict=True):
        counts.setdefault(role, {})[split] = count
    return counts

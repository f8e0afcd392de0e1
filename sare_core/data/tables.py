"""Tabular input helpers shared by the CSV/Parquet readers: typed columns with errors that name the file,
the field and the offending rows (0-based data rows, header excluded)."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

MAX_LISTED_ROWS = 10


def rows_text(rows) -> str:
    """'[3, 7, 9]' or '[3, 7, ... (25 rows)]' for error messages."""
    rows = [int(r) for r in rows]
    if len(rows) <= MAX_LISTED_ROWS:
        return str(rows)
    return f"[{', '.join(map(str, rows[:MAX_LISTED_ROWS]))}, ... ({len(rows)} rows)]"


def read_csv_table(path: str, required=(), stream=None) -> pa.Table:
    """Read a CSV with a header row, every column as strings (ids such as '0012ab' keep their zeros).

    `stream`: an already opened binary file (remote storage); otherwise `path` is opened locally.
    Raises ValueError naming the file when it is not parseable CSV or lacks a `required` column.
    """
    source = stream if stream is not None else path
    try:
        if stream is None:
            with open(path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), None)
        else:
            data = stream.read()
            header = next(csv.reader(data.decode("utf-8").splitlines()), None)
            source = pa.BufferReader(data)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text CSV ({exc})") from exc
    if not header:
        raise ValueError(f"{path}: empty CSV (no header row)")
    header = [h.strip() for h in header]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise ValueError(f"{path}: column(s) {duplicated} appear more than once in the header")
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{path}: malformed CSV ({exc})") from exc
    require_columns(table, required, path)
    return table


def require_columns(table: pa.Table, required, path: str) -> None:
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (columns: {table.column_names})")


def _strings(column) -> np.ndarray:
    return np.asarray(column.to_pylist(), dtype=object)


def column_strings(table: pa.Table, column: str, path: str) -> list[str]:
    """A column as str; raises ValueError listing rows that are null or empty."""
    values = table.column(column).cast(pa.string()).to_pylist()
    bad = [i for i, v in enumerate(values) if v is None or not v.strip()]
    if bad:
        raise ValueError(f"{path}: field {column!r} is empty in rows {rows_text(bad)}")
    return [v.strip() for v in values]


def column_floats(table: pa.Table, column: str, path: str) -> np.ndarray:
    """A column as float64 (nulls and blank cells -> NaN); raises ValueError listing unparseable rows."""
    col = table.column(column)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type):
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    values = _strings(col.cast(pa.string()))
    out = np.full(len(values), np.nan)
    bad = []
    for i, v in enumerate(values):
        if v is None or not v.strip():
            continue
        try:
            out[i] = float(v)
        except ValueError:
            bad.append(i)
    if bad:
        raise ValueError(f"{path}: field {column!r} is not a number in rows {rows_text(bad)}")
    return out


def column_ints(table: pa.Table, column: str, path: str) -> np.ndarray:
    """A column as int64; raises ValueError listing rows that are missing or not whole numbers."""
    col = table.column(column)
    if pa.types.is_integer(col.type) and col.null_count == 0:
        return col.to_numpy().astype(np.int64)
    if col.null_count == 0:
        try:
            return pc.cast(col, pa.int64()).to_numpy().astype(np.int64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            pass  # fall through to list the offending rows
    values = col.to_pylist()
    bad = []
    for i, v in enumerate(values):
        try:
            if v is None or float(str(v)) != int(float(str(v))):
                bad.append(i)
        except (ValueError, OverflowError):
            bad.append(i)
    if not bad:  # e.g. "3.0": whole numbers written as floats
        return np.array([int(float(str(v))) for v in values], dtype=np.int64)
    raise ValueError(f"{path}: field {column!r} is missing or not an integer in rows {rows_text(bad)}")


def duplicate_rows(values) -> dict:
    """{value: [rows...]} for every value that occurs more than once (rows in ascending order)."""
    seen: dict = defaultdict(list)
    for i, v in enumerate(values):
        seen[v].append(i)
    return {v: rows for v, rows in seen.items() if len(rows) > 1}


def duplicates_text(dups: dict, limit: int = 5) -> str:
    items = list(dups.items())
    text = "; ".join(f"{v!r} in rows {rows_text(r)}" for v, r in items[:limit])
    return text + (f"; ... ({len(items)} duplicated values)" if len(items) > limit else "")

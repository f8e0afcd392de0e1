"""Manifests: one CSV or Parquet file listing the images of one or more splits with their ground truth.

Columns (one row per image):
    path        image path; relative paths are relative to the manifest's folder
    role        "database" | "query"
    split       "train" | "val" | "test" (or empty when the dataset has a single unnamed split)
    utm_east, utm_north   float metres (a frame index as utm_east, utm_north = 0, for sequences), or
    label       int landmark id (-1: a query without a landmark)
    positives   optional, query rows of label data only: space-separated 0-based database ordinals within
                the split (the explicit lists of `extras['q_positives']`, see gldv2.py)

Thresholds: Parquet files carry pos_dist_thr (m) and nontriv_pos_dist_sq_thr (m^2) per split in the schema
metadata; CSV files cannot, so the reader takes them as arguments (defaults 25 and 100). Database rows of a
split come before its query rows, in dataset order, so ordinals are stable across a round trip.
Manifests may be local paths or fsspec URIs (s3://bucket/prefix/manifest.parquet); image paths relative to
an s3:// manifest resolve under its prefix.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..paths import is_remote
from .names import ROLES, SPLITS
from .place_dataset import PlaceDataset
from .tables import (
    column_floats,
    column_ints,
    column_strings,
    duplicate_rows,
    duplicates_text,
    read_csv_table,
    require_columns,
    rows_text,
)

log = logging.getLogger(__name__)

DEFAULT_POS_DIST_THR = 25.0
DEFAULT_NONTRIV_POS_DIST_SQ_THR = 100.0
META_KEY = b"sare_manifest"


def manifest_format(path: str) -> str:
    """'parquet' or 'csv' from the file extension; ValueError otherwise."""
    lower = os.fspath(path).lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith(".csv"):
        return "csv"
    raise ValueError(f"{path}: a manifest must end in .csv or .parquet")


def _remote(path: str):
    """(fsspec file system, path inside it) for a URI such as s3://bucket/key."""
    import fsspec

    return fsspec.core.url_to_fs(path)


def _base_dir(path: str) -> str:
    return posixpath.dirname(path) if is_remote(path) else os.path.dirname(os.path.abspath(path))


def _relative(image: str, base: str) -> str:
    """Image path relative to `base` when it lies under it, else absolute (or the URI as given)."""
    if is_remote(image) or is_remote(base):
        prefix = base.rstrip("/") + "/"
        return image[len(prefix):] if image.startswith(prefix) else image
    image = os.path.abspath(image)
    try:
        inside = os.path.commonpath([image, base]) == base
    except ValueError:  # different drives
        inside = False
    return os.path.relpath(image, base).replace(os.sep, "/") if inside else image


def _escapes(stored: str) -> bool:
    """Whether a relative stored path leaves the folder it is relative to (a '..' that climbs out)."""
    if is_remote(stored) or os.path.isabs(stored) or posixpath.isabs(stored):
        return False
    return posixpath.normpath(stored.replace("\\", "/")).split("/")[0] == ".."


def _resolve(stored: str, base: str) -> str:
    if is_remote(stored) or os.path.isabs(stored):
        return stored
    if is_remote(base):
        return posixpath.join(base, stored)
    return os.path.normpath(os.path.join(base, stored))


def manifest_table(datasets: Sequence[PlaceDataset], base_dir: str | None = None) -> pa.Table:
    """The manifest rows of `datasets` as an Arrow table (paths relative to `base_dir` where under it).

    All datasets must be of one kind (UTM or labels) and have distinct splits.
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("write_manifest needs at least one dataset")
    splits = [d.split for d in datasets]
    dups = duplicate_rows(splits)
    if dups:
        raise ValueError(f"datasets share a split: {sorted(dups)}; a manifest holds each split once")
    bad = [s for s in splits if s not in (*SPLITS, "")]
    if bad:
        raise ValueError(f"split must be one of {SPLITS} (or empty), got {bad}")
    for d in datasets:
        dups = duplicate_rows([*d.db_paths, *d.q_paths])
        if dups:
            raise ValueError(f"{d.name}: duplicate image paths in split {d.split!r} (rows: database first, then "
                             f"queries): {duplicates_text(dups)}")
    kinds = {d.is_geographic for d in datasets}
    if len(kinds) > 1:
        raise ValueError("a manifest holds either UTM or label datasets, not both")
    geographic = kinds.pop()
    explicit = any("q_positives" in d.extras for d in datasets)

    cols: dict[str, list] = {"path": [], "role": [], "split": []}
    east, north, labels, positives = [], [], [], []
    for d in datasets:
        for role, paths in (("database", d.db_paths), ("query", d.q_paths)):
            cols["path"] += [_relative(p, base_dir) if base_dir else p for p in paths]
            cols["role"] += [role] * len(paths)
            cols["split"] += [d.split] * len(paths)
        if geographic:
            east += [d.db_utm[:, 0], d.q_utm[:, 0]]
            north += [d.db_utm[:, 1], d.q_utm[:, 1]]
        else:
            labels += [d.db_labels, d.q_labels]
        if explicit:
            positives += [None] * d.num_db + [" ".join(map(str, p.tolist())) for p in d.positives()]
    arrays = {k: pa.array(v, type=pa.string()) for k, v in cols.items()}
    if geographic:
        arrays["utm_east"] = pa.array(np.concatenate(east), type=pa.float64())
        arrays["utm_north"] = pa.array(np.concatenate(north), type=pa.float64())
    else:
        arrays["label"] = pa.array(np.concatenate(labels), type=pa.int64())
    if explicit:
        arrays["positives"] = pa.array(positives, type=pa.string())
    meta = {
        "version": 1,
        "splits": {
            d.split: {"name": d.name, "pos_dist_thr": d.pos_dist_thr,
                      "nontriv_pos_dist_sq_thr": d.nontriv_pos_dist_sq_thr}
            for d in datasets
        },
    }
    schema_meta = {
        META_KEY: json.dumps(meta).encode(),
        b"pos_dist_thr": str(datasets[0].pos_dist_thr).encode(),
        b"nontriv_pos_dist_sq_thr": str(datasets[0].nontriv_pos_dist_sq_thr).encode(),
    }
    return pa.table(arrays).replace_schema_metadata(schema_meta)


def write_manifest(path: str, datasets: PlaceDataset | Sequence[PlaceDataset]) -> str:
    """Write one manifest (CSV or Parquet, by extension) holding every dataset (one per split).

    Image paths under the manifest's folder are written relative to it, others absolute. CSV drops the
    thresholds (a warning is logged when they are not the 25 / 100 defaults). Returns the path written.
    """
    path = os.fspath(path)
    fmt = manifest_format(path)
    if isinstance(datasets, PlaceDataset):
        datasets = [datasets]
    table = manifest_table(datasets, base_dir=_base_dir(path))
    if fmt == "csv":
        table = table.replace_schema_metadata(None)
        for d in datasets:
            if (d.pos_dist_thr, d.nontriv_pos_dist_sq_thr) != (DEFAULT_POS_DIST_THR, DEFAULT_NONTRIV_POS_DIST_SQ_THR):
                log.warning("%s: CSV manifests do not store thresholds; split %r has pos_dist_thr=%g, "
                            "nontriv_pos_dist_sq_thr=%g (pass them when reading, or write Parquet)",
                            path, d.split, d.pos_dist_thr, d.nontriv_pos_dist_sq_thr)
    write = pq.write_table if fmt == "parquet" else pacsv.write_csv
    if is_remote(path):
        fs, inner = _remote(path)
        with fs.open(inner, "wb") as out:
            write(table, out)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write(table, path)
    log.info("wrote %s: %d rows, splits %s", path, table.num_rows, [d.split for d in datasets])
    return path


def _read_table(path: str) -> tuple[pa.Table, dict]:
    """The raw table (CSV columns as strings) and the per-split metadata ({} for CSV)."""
    fmt = manifest_format(path)
    data = None
    if is_remote(path):
        fs, inner = _remote(path)
        if not fs.isfile(inner):
            raise FileNotFoundError(f"{path}: manifest not found")
        with fs.open(inner, "rb") as fh:
            data = fh.read()
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: manifest not found")
    if fmt == "csv":
        stream = io.BytesIO(data) if data is not None else None
        return read_csv_table(path, required=("path", "role"), stream=stream), {}
    try:
        table = pq.read_table(pa.BufferReader(data) if data is not None else path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc
    require_columns(table, ("path", "role"), path)
    raw = table.schema.metadata or {}
    meta = {}
    if META_KEY in raw:
        try:
            meta = json.loads(raw[META_KEY])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: schema metadata {META_KEY.decode()!r} is not JSON ({exc})") from exc
    for key in (b"pos_dist_thr", b"nontriv_pos_dist_sq_thr"):
        if key in raw:
            try:
                meta.setdefault("defaults", {})[key.decode()] = float(raw[key])
            except ValueError:
                raise ValueError(f"{path}: schema metadata {key.decode()!r} is not a number: {raw[key]!r}") from None
    return table, meta


def _ground_truth_kind(table: pa.Table, path: str) -> str:
    names = table.column_names
    has_utm = "utm_east" in names or "utm_north" in names
    if has_utm and not ("utm_east" in names and "utm_north" in names):
        missing = "utm_north" if "utm_east" in names else "utm_east"
        raise ValueError(f"{path}: field {missing!r} is missing (utm_east and utm_north go together)")
    has_label = "label" in names
    if has_utm and has_label:
        label_null = table.column("label").null_count == table.num_rows
        utm_null = table.column("utm_east").null_count == table.num_rows
        if label_null == utm_null:
            raise ValueError(f"{path}: both utm_east/utm_north and label are filled; keep one kind")
        return "label" if utm_null else "utm"
    if not (has_utm or has_label):
        raise ValueError(f"{path}: needs columns utm_east, utm_north or label (columns: {names})")
    return "utm" if has_utm else "label"


def _parse_positives(text: str | None, row: int, num_db: int, path: str) -> np.ndarray:
    try:
        values = np.array([int(t) for t in (text or "").split()], dtype=np.int64)
    except ValueError:
        raise ValueError(f"{path}: field 'positives' is not space-separated integers in row {row}") from None
    if values.size and (values.min() < 0 or values.max() >= num_db):
        raise ValueError(f"{path}: field 'positives' in row {row} points outside the {num_db} database rows")
    return values


def read_manifest_splits(
    path: str,
    pos_dist_thr: float | None = None,
    nontriv_pos_dist_sq_thr: float | None = None,
) -> dict[str, PlaceDataset]:
    """Every split of a manifest as {split: PlaceDataset} (split '' when the file has no split column).

    Thresholds: explicit arguments win, then the Parquet metadata, then 25 m / 100 m^2.
    Raises ValueError naming the file, the field and the rows for a bad role or split, a missing or
    non-numeric coordinate, NaN coordinates, or a path listed twice within a split.
    """
    path = os.fspath(path)
    table, meta = _read_table(path)
    n = table.num_rows
    paths = column_strings(table, "path", path)
    roles = np.array(column_strings(table, "role", path), dtype=object)
    bad = np.flatnonzero(~np.isin(roles, ROLES))
    if len(bad):
        raise ValueError(f"{path}: field 'role' must be database or query; rows {rows_text(bad)} "
                         f"have {sorted(set(roles[bad]))[:5]}")
    if "split" in table.column_names:
        splits = np.array([(s or "").strip() for s in table.column("split").cast(pa.string()).to_pylist()],
                          dtype=object)
    else:
        splits = np.full(n, "", dtype=object)
    bad = np.flatnonzero(~np.isin(splits, (*SPLITS, "")))
    if len(bad):
        raise ValueError(f"{path}: field 'split' must be train, val or test; rows {rows_text(bad)} "
                         f"have {sorted(set(splits[bad]))[:5]}")
    kind = _ground_truth_kind(table, path)
    if kind == "utm":
        utm = np.stack([column_floats(table, "utm_east", path), column_floats(table, "utm_north", path)], axis=1)
        bad = np.flatnonzero(~np.isfinite(utm).all(axis=1))
        if len(bad):
            what = "infinite" if np.isinf(utm[bad]).any() and not np.isnan(utm[bad]).any() else "NaN, infinite or missing"
            raise ValueError(f"{path}: fields 'utm_east'/'utm_north' are {what} in rows {rows_text(bad)}")
    else:
        labels = column_ints(table, "label", path)
    positives_col = table.column("positives").to_pylist() if "positives" in table.column_names else None

    base = _base_dir(path)
    escaping = [i for i, p in enumerate(paths) if _escapes(p)]
    if escaping:
        raise ValueError(f"{path}: field 'path' climbs out of the manifest's folder ('..') in rows "
                         f"{rows_text(np.array(escaping))}: {paths[escaping[0]]!r}; give an absolute path (or URI) "
                         f"for an image outside it")
    stem = posixpath.basename(path).rsplit(".", 1)[0]
    out: dict[str, PlaceDataset] = {}
    for split in [s for s in (*SPLITS, "") if (splits == s).any()]:
        rows = np.flatnonzero(splits == split)
        dups = duplicate_rows([paths[i] for i in rows])
        if dups:
            dups = {p: rows[r].tolist() for p, r in dups.items()}
            raise ValueError(f"{path}: duplicate paths in split {split!r}: {duplicates_text(dups)}")
        db_rows = rows[roles[rows] == "database"]
        q_rows = rows[roles[rows] == "query"]
        info = meta.get("splits", {}).get(split, {})
        defaults = meta.get("defaults", {})
        thr = pos_dist_thr if pos_dist_thr is not None else info.get(
            "pos_dist_thr", defaults.get("pos_dist_thr", DEFAULT_POS_DIST_THR))
        nontriv = nontriv_pos_dist_sq_thr if nontriv_pos_dist_sq_thr is not None else info.get(
            "nontriv_pos_dist_sq_thr", defaults.get("nontriv_pos_dist_sq_thr", DEFAULT_NONTRIV_POS_DIST_SQ_THR))
        kwargs: dict = {}
        if kind == "utm":
            kwargs.update(db_utm=utm[db_rows], q_utm=utm[q_rows])
        else:
            kwargs.update(db_labels=labels[db_rows], q_labels=labels[q_rows])
            if positives_col is not None and any(positives_col[i] is not None for i in q_rows):
                kwargs["extras"] = {"q_positives": [_parse_positives(positives_col[i], int(i), len(db_rows), path)
                                                    for i in q_rows]}
        out[split] = PlaceDataset(
            name=info.get("name") or (f"{stem}_{split}" if split else stem),
            db_paths=[_resolve(paths[i], base) for i in db_rows],
            q_paths=[_resolve(paths[i], base) for i in q_rows],
            pos_dist_thr=float(thr),
            nontriv_pos_dist_sq_thr=float(nontriv),
            split=split,
            **kwargs,
        )
    if not out:
        raise ValueError(f"{path}: the manifest has no rows")
    return out


def read_manifest(
    path: str,
    split: str | None = None,
    pos_dist_thr: float | None = None,
    nontriv_pos_dist_sq_thr: float | None = None,
) -> PlaceDataset:
    """One split of a manifest. `split=None` is allowed when the file holds a single split."""
    splits = read_manifest_splits(path, pos_dist_thr, nontriv_pos_dist_sq_thr)
    if split is None:
        if len(splits) > 1:
            raise ValueError(f"{path}: holds splits {list(splits)}; choose one (split=...)")
        return next(iter(splits.values()))
    if split not in splits:
        raise ValueError(f"{path}: no split {split!r} (the file holds {list(splits)})")
    return splits[split]

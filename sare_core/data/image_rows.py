"""The rows an extraction works on: one per image of the dataset, with a stable unique id.

Built from the PlaceDataset(s) a dataset path opens to (never by listing image files), as an Arrow table
with the columns of `ROW_SCHEMA`: id, path (where to read the image), role, split, utm_east, utm_north
(NaN for label datasets), label (-1 for geographic datasets).

Ids. An image's id is its path as the dataset stores it, relative to the dataset's root (the folder of a
manifest or dbStruct file, the dataset folder itself, or `images_root`), with '/' separators:
`images/test/database/000/0000042.jpg`. Paths outside the root keep their absolute path (or URI) as id.
The same file listed in several (role, split) rows of one dataset (a database image that a query set
reuses, a database shared by two splits) would repeat an id, so every occurrence of such a path is
qualified: `query::<path>` when its roles tell the rows apart, else `<split>::<role>::<path>`.
Ids are computed over every split and role of the dataset, before any selection, so the id of an image does
not depend on which splits a run extracts: a resumed or extended run finds the same ids.
"""

from __future__ import annotations

import os
import posixpath
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..paths import is_remote
from .dbstruct import load_dbstruct
from .place_dataset import PlaceDataset
from .sources import open_splits

ID_SEPARATOR = "::"

ROW_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("role", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("utm_east", pa.float64(), nullable=False),
    pa.field("utm_north", pa.float64(), nullable=False),
    pa.field("label", pa.int64(), nullable=False),
])


def dataset_root(path: str) -> str:
    """The folder that a dataset's relative image paths (and ids) are relative to: the folder holding a
    manifest or .mat file, or the dataset folder itself."""
    path = os.fspath(path)
    if is_remote(path):
        return posixpath.dirname(path.rstrip("/")) if posixpath.splitext(path)[1] else path.rstrip("/")
    path = os.path.abspath(path)
    return path if os.path.isdir(path) else os.path.dirname(path)


def default_dataset_name(path: str) -> str:
    """'<folder>/<file>' for a dataset file (e.g. 'city_tiny/manifest.parquet'), the folder name for a
    folder: recorded in the store's metadata, which must match when a run resumes."""
    path = os.fspath(path).rstrip("/")
    if not is_remote(path):
        path = os.path.abspath(path)
        if os.path.isdir(path):
            return os.path.basename(path)
    head, tail = posixpath.split(path.replace(os.sep, "/"))
    return f"{posixpath.basename(head)}/{tail}" if head else tail


def open_dataset(path: str, images_root: str | None = None, query_root: str | None = None) -> dict[str, PlaceDataset]:
    """{split: PlaceDataset} of any dataset `sare_core.data.open_splits` knows, with image paths resolved.

    A dbStruct .mat stores names relative to image roots: database names resolve under `images_root`,
    query names under `query_root` (both default to the .mat file's folder, `query_root` to `images_root`).
    Relative paths of other formats resolve under `images_root` (default: the dataset's root).
    """
    path = os.fspath(path)
    root = images_root or dataset_root(path)
    if path.lower().endswith(".mat"):
        d = load_dbstruct(path, db_root=root, q_root=query_root or root)
        splits = {d.split: d}
    else:
        splits = open_splits(path)
    for d in splits.values():
        d.db_paths = [PlaceDataset.resolve(p, root) for p in d.db_paths]
        d.q_paths = [PlaceDataset.resolve(p, query_root or root) for p in d.q_paths]
    return splits


def relative_id(path: str, root: str) -> str:
    """`path` relative to `root` with '/' separators when it lies under it, else the path (or URI) itself."""
    if is_remote(path) or is_remote(root):
        prefix = root.rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) else path
    path = os.path.normpath(os.path.abspath(path))
    root = os.path.normpath(os.path.abspath(root))
    try:
        inside = os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        inside = False
    return os.path.relpath(path, root).replace(os.sep, "/") if inside else path.replace(os.sep, "/")


def make_ids(base_ids: Sequence[str], roles: Sequence[str], splits: Sequence[str]) -> list[str]:
    """Unique ids from per-row base ids (relative paths): a base id that occurs once is the id; every
    occurrence of a repeated one is qualified by role, or by split and role (see the module docstring).

    ValueError when two rows have the same base id, role and split (a dataset lists a path twice).
    """
    where: dict[str, list[int]] = defaultdict(list)
    for i, base in enumerate(base_ids):
        where[base].append(i)
    ids = list(base_ids)
    for base, rows in where.items():
        if len(rows) == 1:
            continue
        row_roles = [roles[i] for i in rows]
        by_role = len(set(row_roles)) == len(rows)
        for i in rows:
            ids[i] = (f"{roles[i]}{ID_SEPARATOR}{base}" if by_role
                      else f"{splits[i]}{ID_SEPARATOR}{roles[i]}{ID_SEPARATOR}{base}")
    seen: dict[str, int] = {}
    for i, image_id in enumerate(ids):
        if image_id in seen:
            raise ValueError(f"image {base_ids[i]!r} is listed twice with role {roles[i]!r} in split "
                             f"{splits[i]!r} (rows {seen[image_id]} and {i})")
        seen[image_id] = i
    return ids


def image_rows(datasets: dict[str, PlaceDataset] | Sequence[PlaceDataset], root: str) -> pa.Table:
    """Every image of `datasets` (database rows then query rows, split by split) as a `ROW_SCHEMA` table."""
    items = list(datasets.values()) if isinstance(datasets, dict) else list(datasets)
    paths: list[str] = []
    roles: list[str] = []
    splits: list[str] = []
    east, north, labels = [], [], []
    for d in items:
        for role, role_paths, utm, lab in (("database", d.db_paths, d.db_utm, d.db_labels),
                                          ("query", d.q_paths, d.q_utm, d.q_labels)):
            n = len(role_paths)
            paths += role_paths
            roles += [role] * n
            splits += [d.split] * n
            utm = np.full((n, 2), np.nan) if utm is None else np.asarray(utm, dtype=np.float64).reshape(n, 2)
            east.append(utm[:, 0])
            north.append(utm[:, 1])
            labels.append(np.full(n, -1, np.int64) if lab is None else np.asarray(lab, np.int64).reshape(n))
    ids = make_ids([relative_id(p, root) for p in paths], roles, splits)
    return pa.Table.from_arrays([
        pa.array(ids, pa.string()),
        pa.array(paths, pa.string()),
        pa.array(roles, pa.string()),
        pa.array(splits, pa.string()),
        pa.array(np.concatenate(east) if east else np.zeros(0), pa.float64()),
        pa.array(np.concatenate(north) if north else np.zeros(0), pa.float64()),
        pa.array(np.concatenate(labels) if labels else np.zeros(0, np.int64), pa.int64()),
    ], schema=ROW_SCHEMA)


def select_rows(rows: pa.Table, splits: Sequence[str] | None = None, roles: Sequence[str] | None = None) -> pa.Table:
    """The rows of the given splits and roles (None: all). ValueError naming a split the dataset lacks."""
    mask = pa.array(np.ones(rows.num_rows, dtype=bool))
    if splits is not None:
        present = set(pc.unique(rows.column("split")).to_pylist())
        missing = [s for s in splits if s not in present]
        if missing:
            raise ValueError(f"splits: the dataset has no split {missing} (it has {sorted(present)})")
        mask = pc.and_(mask, pc.is_in(rows.column("split"), pa.array(list(splits), pa.string())))
    if roles is not None:
        mask = pc.and_(mask, pc.is_in(rows.column("role"), pa.array(list(roles), pa.string())))
    return rows.filter(mask)


def without_ids(rows: pa.Table, done: set[str] | pa.Array) -> pa.Table:
    """The rows whose id is not in `done`."""
    if isinstance(done, set):
        done = pa.array(sorted(done), pa.string())
    if len(done) == 0:
        return rows
    return rows.filter(pc.invert(pc.is_in(rows.column("id"), done)))

"""NetVLAD `dbStruct` .mat files (Pitts30k/250k, Tokyo 24/7, TokyoTM): read and write.

A dbStruct is a MATLAB struct with, by name: whichSet, dbImageFns (N cell), utmDb (2, N), qImageFns (M cell),
utmQ (2, M), numImages, numQueries, posDistThr (m), posDistSqThr (m^2), nonTrivPosDistSqThr (m^2); TokyoTM
adds dbTimeStamp and qTimeStamp. Fields are read by name, never by position, so either layout loads.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io

from .place_dataset import PlaceDataset

_DB_NAMES = ("dbImageFns", "dbImage")
_Q_NAMES = ("qImageFns", "qImage")


def _field(struct: np.ndarray, names: tuple[str, ...], path: str, required: bool = True):
    for name in names:
        if name in struct.dtype.names:
            return struct[name].item() if struct.shape == () else struct[name]
    if required:
        raise ValueError(f"{path}: dbStruct has no field {' or '.join(names)} (fields: {list(struct.dtype.names)})")
    return None


def _strings(value, field: str, path: str) -> list[str]:
    arr = np.atleast_1d(np.asarray(value, dtype=object)).reshape(-1)
    out = []
    for i, item in enumerate(arr):
        while isinstance(item, np.ndarray):
            if item.size != 1:
                raise ValueError(f"{path}: dbStruct.{field}[{i}] is not a single file name")
            item = item.reshape(-1)[0]
        if not isinstance(item, str):
            raise ValueError(f"{path}: dbStruct.{field}[{i}] is {type(item).__name__}, expected a file name")
        out.append(item)
    return out


def _text(value) -> str:
    """A MATLAB char array as str; an empty char array ('') loads as an empty numpy array, not ''."""
    if isinstance(value, np.ndarray):
        return "".join(str(v) for v in value.reshape(-1))
    return str(value)


def _utm(value, count: int, field: str, path: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if count == 0:
        return np.zeros((0, 2))
    if arr.ndim == 1 and arr.size == 2 and count == 1:
        arr = arr.reshape(2, 1)
    if arr.ndim == 2 and arr.shape == (2, count):
        arr = arr.T  # MATLAB stores 2 x N
    elif not (arr.ndim == 2 and arr.shape == (count, 2)):
        raise ValueError(f"{path}: dbStruct.{field} has shape {arr.shape}, expected (2, {count}) for {count} images")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        raise ValueError(f"{path}: dbStruct.{field} has NaN/inf coordinates at images {bad[:10].tolist()}")
    return np.ascontiguousarray(arr)


def _scalar(value, field: str, path: str) -> float:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size != 1 or not np.isfinite(arr[0]):
        raise ValueError(f"{path}: dbStruct.{field} must be one finite number, got {value!r}")
    return float(arr[0])


def load_dbstruct(
    path: str,
    db_root: str | None = None,
    q_root: str | None = None,
    images_root: str | None = None,
) -> PlaceDataset:
    """Read a NetVLAD dbStruct .mat into a PlaceDataset (UTM in metres, rows = images).

    Roots: `db_root` / `q_root` are joined to the stored relative names. `images_root` is the standard
    layout shortcut: database images under it and queries under `images_root/queries_real`. Without
    roots, paths stay as stored in the file. TokyoTM's time stamps land in `extras`.

    Raises ValueError naming the file (and field) when it is not a dbStruct file or a field is malformed.
    """
    path = os.fspath(path)
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=True)
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5)
        raise ValueError(f"{path}: MATLAB v7.3 files are not supported; re-save with save(..., '-v7')") from exc
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for corrupt files
        raise ValueError(f"{path}: not a readable .mat file ({exc})") from exc
    if "dbStruct" not in mat:
        keys = [k for k in mat if not k.startswith("__")]
        raise ValueError(f"{path}: no 'dbStruct' variable in this .mat file (variables: {keys})")
    s = mat["dbStruct"]
    if not isinstance(s, np.ndarray) or s.dtype.names is None:
        raise ValueError(f"{path}: 'dbStruct' is not a MATLAB struct")
    s = s.reshape(()) if s.size == 1 else s

    which = _field(s, ("whichSet",), path, required=False)
    which = _text(which) if which is not None else ""
    db_paths = _strings(_field(s, _DB_NAMES, path), "dbImageFns", path)
    q_paths = _strings(_field(s, _Q_NAMES, path), "qImageFns", path)
    db_utm = _utm(_field(s, ("utmDb",), path), len(db_paths), "utmDb", path)
    q_utm = _utm(_field(s, ("utmQ",), path), len(q_paths), "utmQ", path)
    for count_field, expected in (("numImages", len(db_paths)), ("numQueries", len(q_paths))):
        value = _field(s, (count_field,), path, required=False)
        if value is not None and int(_scalar(value, count_field, path)) != expected:
            raise ValueError(f"{path}: dbStruct.{count_field}={value} but the file lists {expected} images")
    pos = _scalar(_field(s, ("posDistThr",), path), "posDistThr", path)
    nontriv = _field(s, ("nonTrivPosDistSqThr",), path, required=False)
    nontriv = _scalar(nontriv, "nonTrivPosDistSqThr", path) if nontriv is not None else 100.0

    extras: dict = {}
    for name, key, count in (("dbTimeStamp", "db_time_stamp", len(db_paths)), ("qTimeStamp", "q_time_stamp", len(q_paths))):
        value = _field(s, (name,), path, required=False)
        if value is not None:
            arr = np.atleast_1d(np.asarray(value)).reshape(-1)
            if len(arr) != count:
                raise ValueError(f"{path}: dbStruct.{name} has {len(arr)} entries for {count} images")
            extras[key] = arr
    pos_sq = _field(s, ("posDistSqThr",), path, required=False)
    if pos_sq is not None:
        extras["pos_dist_sq_thr"] = _scalar(pos_sq, "posDistSqThr", path)

    if images_root is not None:
        db_root = db_root or images_root
        q_root = q_root or os.path.join(images_root, "queries_real")
    db_paths = [PlaceDataset.resolve(p, db_root) for p in db_paths]
    q_paths = [PlaceDataset.resolve(p, q_root) for p in q_paths]
    name = os.path.splitext(os.path.basename(path))[0]
    return PlaceDataset(
        name=name,
        db_paths=db_paths,
        q_paths=q_paths,
        db_utm=db_utm,
        q_utm=q_utm,
        pos_dist_thr=pos,
        nontriv_pos_dist_sq_thr=nontriv,
        split=which,
        extras=extras,
    )


def save_dbstruct(path: str, dataset: PlaceDataset, which_set: str | None = None) -> None:
    """Write a geographic PlaceDataset as a NetVLAD dbStruct .mat (v5), fields in the Pitts order.

    Paths are written as stored in the dataset (make them relative to the image roots first if the file
    is to be portable). Time stamps in `extras` (db_time_stamp, q_time_stamp) are written TokyoTM-style.
    """
    if not dataset.is_geographic:
        raise ValueError(f"{dataset.name}: a dbStruct needs UTM coordinates, this dataset has labels")

    def cell(paths: list[str]) -> np.ndarray:
        arr = np.empty((len(paths), 1), dtype=object)
        for i, p in enumerate(paths):
            arr[i, 0] = p
        return arr

    struct: dict = {"whichSet": which_set if which_set is not None else dataset.split}
    struct["dbImageFns"] = cell(dataset.db_paths)
    struct["utmDb"] = np.asarray(dataset.db_utm, dtype=np.float64).T
    if "db_time_stamp" in dataset.extras:
        struct["dbTimeStamp"] = np.asarray(dataset.extras["db_time_stamp"]).reshape(1, -1)
    struct["qImageFns"] = cell(dataset.q_paths)
    struct["utmQ"] = np.asarray(dataset.q_utm, dtype=np.float64).T
    if "q_time_stamp" in dataset.extras:
        struct["qTimeStamp"] = np.asarray(dataset.extras["q_time_stamp"]).reshape(1, -1)
    struct["numImages"] = float(dataset.num_db)
    struct["numQueries"] = float(dataset.num_q)
    struct["posDistThr"] = float(dataset.pos_dist_thr)
    struct["posDistSqThr"] = float(dataset.extras.get("pos_dist_sq_thr", dataset.pos_dist_thr**2))
    struct["nonTrivPosDistSqThr"] = float(dataset.nontriv_pos_dist_sq_thr)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    scipy.io.savemat(path, {"dbStruct": struct}, do_compression=False)

"""GSV-style folders (VPR-datasets-downloader / GSV-Cities naming): coordinates in the file names.

Layout: `root/images/{train,val,test}/{database,queries}/*.jpg` (also accepted: `root/{split}/...`, or a
split folder itself holding `database/` and `queries/`). Each file name is `@`-separated fields:

    @ utm_east @ utm_north @ utm_zone_number @ utm_zone_letter @ lat @ lon @ pano_id @ ... @ .jpg

so field 1 is the UTM easting and field 2 the UTM northing, both in metres.
"""

from __future__ import annotations

import os

import numpy as np

from .image_check import list_images
from .names import SPLITS
from .place_dataset import PlaceDataset

_DB_DIR = "database"
_Q_DIR = "queries"


def parse_gsv_name(path: str) -> tuple[float, float]:
    """(utm_east, utm_north) in metres from a `@utm_east@utm_north@...` file name.

    Raises ValueError naming the file and the field when the name does not carry finite coordinates.
    """
    fields = os.path.splitext(os.path.basename(path))[0].split("@")
    if len(fields) < 3:
        raise ValueError(f"{path}: not a GSV-style name '@utm_east@utm_north@...' (field utm_east missing)")
    out = []
    for index, field_name in ((1, "utm_east"), (2, "utm_north")):
        try:
            value = float(fields[index])
        except ValueError:
            raise ValueError(f"{path}: field {field_name} is {fields[index]!r}, not a number") from None
        if not np.isfinite(value):
            raise ValueError(f"{path}: field {field_name} is {fields[index]!r}, not a finite coordinate")
        out.append(value)
    return out[0], out[1]


def _has_db_and_queries(folder: str) -> bool:
    return os.path.isdir(os.path.join(folder, _DB_DIR)) and os.path.isdir(os.path.join(folder, _Q_DIR))


def find_split_folder(root: str, split: str | None) -> str:
    """The folder that holds `database/` and `queries/` for `split` (None: `root` itself).

    Looks at root/images/split, root/split, then root. Raises FileNotFoundError listing where it looked.
    """
    root = os.fspath(root)
    candidates = [root] if not split else [os.path.join(root, "images", split), os.path.join(root, split)]
    for folder in candidates:
        if _has_db_and_queries(folder):
            return folder
    if split and _has_db_and_queries(root) and os.path.basename(os.path.normpath(root)) == split:
        return root
    raise FileNotFoundError(
        f"{root}: no GSV split folder with {_DB_DIR}/ and {_Q_DIR}/ for split {split!r} (looked in {candidates})"
    )


def gsv_splits(root: str) -> list[str]:
    """The splits (train/val/test, in that order) present under `root`; [""] for a single split folder."""
    found = []
    for split in SPLITS:
        try:
            find_split_folder(root, split)
        except FileNotFoundError:
            continue
        found.append(split)
    if not found and _has_db_and_queries(os.fspath(root)):
        return [""]
    return found


def is_gsv_folder(root: str) -> bool:
    """True when `root` holds at least one split whose database images carry `@` coordinates."""
    for split in gsv_splits(root):
        folder = os.path.join(find_split_folder(root, split or None), _DB_DIR)
        names = list_images(folder)
        if names and os.path.basename(names[0]).startswith("@"):
            return True
    return False


def _read_folder(folder: str) -> tuple[list[str], np.ndarray]:
    names = list_images(folder)
    if not names:
        raise ValueError(f"{folder}: no images found")
    paths = [os.path.join(folder, n) for n in names]
    utm = np.array([parse_gsv_name(p) for p in paths], dtype=np.float64).reshape(-1, 2)
    return paths, utm


def load_gsv_folders(
    root: str,
    split: str | None = "test",
    pos_dist_thr: float = 25.0,
    nontriv_pos_dist_sq_thr: float = 100.0,
    name: str | None = None,
) -> PlaceDataset:
    """Read one split of a GSV-style dataset into a PlaceDataset with absolute image paths.

    root: the dataset folder (holding `images/`), or a split folder when `split` is None.
    pos_dist_thr: evaluation positives radius in metres (25); nontriv_pos_dist_sq_thr: training positives
    radius squared in m^2 (100 -> 10 m). Images are sorted by relative path, so the order is stable.
    """
    folder = os.path.abspath(find_split_folder(root, split))
    db_paths, db_utm = _read_folder(os.path.join(folder, _DB_DIR))
    q_paths, q_utm = _read_folder(os.path.join(folder, _Q_DIR))
    base = name or os.path.basename(os.path.normpath(os.path.abspath(root)))
    return PlaceDataset(
        name=f"{base}_{split}" if split and not name else base,
        db_paths=db_paths,
        q_paths=q_paths,
        db_utm=db_utm,
        q_utm=q_utm,
        pos_dist_thr=pos_dist_thr,
        nontriv_pos_dist_sq_thr=nontriv_pos_dist_sq_thr,
        split=split or "",
    )

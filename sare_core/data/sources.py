"""Open any dataset the readers know from one path, as {split: PlaceDataset}.

Recognised: a manifest (.csv / .parquet), a dbStruct .mat, a Google Landmarks v2 folder (retrieval CSVs, or
train.csv), a GSV-style folder (`@utm_east@utm_north@` names), or a folder of aligned traverses (sub-folders
whose images share file names; the first sorted sub-folder is the database).
"""

from __future__ import annotations

import logging
import os

from ..paths import is_remote
from .aligned import find_traverses, load_aligned_traverses
from .dbstruct import load_dbstruct
from .gldv2 import is_gldv2_folder, load_gldv2_retrieval, load_gldv2_train
from .gsv import gsv_splits, is_gsv_folder, load_gsv_folders
from .manifest import read_manifest_splits
from .place_dataset import PlaceDataset

log = logging.getLogger(__name__)


def detect_format(path: str) -> str:
    """'manifest' | 'dbstruct' | 'gldv2' | 'gsv' | 'aligned'; ValueError when none fits."""
    path = os.fspath(path)
    lower = path.lower()
    if lower.endswith((".csv", ".parquet", ".pq")):
        return "manifest"
    if lower.endswith(".mat"):
        return "dbstruct"
    if not is_remote(path) and not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        if is_gldv2_folder(path):
            return "gldv2"
        if is_gsv_folder(path):
            return "gsv"
        if find_traverses(path):
            return "aligned"
    raise ValueError(f"{path}: not a dataset the readers recognise (a .csv/.parquet manifest, a dbStruct .mat, "
                     "a GSV images/ folder, a Google Landmarks v2 folder, or a folder of aligned traverses)")


def open_splits(path: str, tolerance_frames: float = 2) -> dict[str, PlaceDataset]:
    """Read `path` (any recognised format) into {split: PlaceDataset}, with each reader's defaults.

    tolerance_frames applies to aligned traverses only.
    """
    path = os.fspath(path)
    fmt = detect_format(path)
    if fmt == "manifest":
        return read_manifest_splits(path)
    if fmt == "dbstruct":
        d = load_dbstruct(path)
        return {d.split: d}
    if fmt == "gldv2":
        if os.path.isfile(os.path.join(path, "index.csv")):
            d = load_gldv2_retrieval(path)
        else:
            d = load_gldv2_train(os.path.join(path, "train.csv"))
        return {d.split: d}
    if fmt == "gsv":
        return {s: load_gsv_folders(path, s or None) for s in gsv_splits(path)}
    traverses = find_traverses(path)
    log.info("%s: aligned traverses; database %s, queries %s", path, os.path.basename(traverses[0]),
             [os.path.basename(t) for t in traverses[1:]])
    d = load_aligned_traverses(traverses[0], traverses[1:], tolerance_frames=tolerance_frames)
    return {d.split: d}

"""Aligned traverses (Nordland-style): folders of frames where the same file name is the same place.

One folder is the database (e.g. summer), the others are query traverses (winter, ...). Each frame gets a
place index along the route, stored as `utm_east` (with `utm_north` = 0), so the geographic machinery works
unchanged with "metres" read as "frames":

- index_by="position" (default): the frame's rank in the sorted sequence of all file names (sorted by the
  number in the name). Tolerance counts files: in nordland_dev, which keeps every 10th video frame
  (images-00180.png, images-00190.png, ...), +-2 means the two files before and after, i.e. +-20 video frames.
- index_by="frame_number": the number in the name divided by `frame_step` (default: the smallest gap between
  consecutive numbers, 10 for nordland_dev). Same result as "position" when no frame is missing; when some
  are missing, distances follow the video rather than the file list.

Ground truth: positives within `tolerance_frames` places (pos_dist_thr = tolerance_frames); training
positives within `train_tolerance_frames` (nontriv_pos_dist_sq_thr = its square). A tolerance of 0 (same
file name only) becomes a radius of 0.5 so that the thresholds stay positive.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from .image_check import list_images
from .place_dataset import PlaceDataset

_NUMBER = re.compile(r"(\d+)")


def frame_number(name: str) -> int | None:
    """The last run of digits in the file's stem ("images-00180.png" -> 180), or None."""
    digits = _NUMBER.findall(os.path.splitext(os.path.basename(name))[0])
    return int(digits[-1]) if digits else None


def _radius(frames: float, what: str) -> float:
    if not np.isfinite(frames) or frames < 0:
        raise ValueError(f"{what} must be a non-negative number of frames, got {frames}")
    return float(frames) if frames > 0 else 0.5


def _place_index(names: list[str], index_by: str, frame_step: float | None) -> dict[str, float]:
    """Map every distinct file name to its place index along the route."""
    numbers = {n: frame_number(n) for n in names}
    if index_by == "position":
        if all(v is not None for v in numbers.values()):
            ordered = sorted(names, key=lambda n: (numbers[n], n))
        else:
            ordered = sorted(names)
        return {n: float(i) for i, n in enumerate(ordered)}
    if index_by == "frame_number":
        missing = [n for n, v in numbers.items() if v is None]
        if missing:
            raise ValueError(f"index_by='frame_number' needs a number in every file name; none in {missing[:5]}")
        distinct = np.unique(np.array(list(numbers.values()), dtype=np.int64))
        if frame_step is None:
            gaps = np.diff(distinct)
            frame_step = float(gaps.min()) if len(gaps) else 1.0
        if not frame_step > 0:
            raise ValueError(f"frame_step must be > 0, got {frame_step}")
        return {n: v / frame_step for n, v in numbers.items()}
    raise ValueError(f"index_by must be 'position' or 'frame_number', got {index_by!r}")


def load_aligned_traverses(
    db_folder: str,
    query_folders: str | Sequence[str],
    tolerance_frames: float = 2,
    train_tolerance_frames: float | None = None,
    index_by: str = "position",
    frame_step: float | None = None,
    name: str | None = None,
    split: str = "",
) -> PlaceDataset:
    """Read aligned traverses into a PlaceDataset whose `utm_east` is the place index (see module doc).

    db_folder: the database traverse; query_folders: one or more query traverses (their frames are
    concatenated in folder order, then by place index). train_tolerance_frames defaults to tolerance_frames.
    extras: `q_traverse` (M,) folder name of each query, `db_traverse` the database folder name.
    """
    if isinstance(query_folders, (str, os.PathLike)):
        query_folders = [query_folders]
    db_folder = os.path.abspath(os.fspath(db_folder))
    query_folders = [os.path.abspath(os.fspath(f)) for f in query_folders]
    if not query_folders:
        raise ValueError("aligned traverses need at least one query folder")
    if db_folder in query_folders:
        raise ValueError(f"{db_folder}: the database folder is also listed as a query folder")
    pos_radius = _radius(tolerance_frames, "tolerance_frames")
    train_radius = _radius(tolerance_frames if train_tolerance_frames is None else train_tolerance_frames,
                           "train_tolerance_frames")

    folder_names = {}
    for folder in [db_folder, *query_folders]:
        names = list_images(folder)
        if not names:
            raise ValueError(f"{folder}: no images found")
        folder_names[folder] = names
    index = _place_index(sorted(set().union(*folder_names.values())), index_by, frame_step)

    def rows(folder: str) -> tuple[list[str], np.ndarray]:
        names = sorted(folder_names[folder], key=lambda n: (index[n], n))
        utm = np.zeros((len(names), 2))
        utm[:, 0] = [index[n] for n in names]
        return [os.path.join(folder, n) for n in names], utm

    db_paths, db_utm = rows(db_folder)
    q_paths, q_parts, q_traverse = [], [], []
    for folder in query_folders:
        paths, utm = rows(folder)
        q_paths += paths
        q_parts.append(utm)
        q_traverse += [os.path.basename(folder)] * len(paths)
    base = os.path.basename(db_folder) + "_vs_" + "+".join(os.path.basename(f) for f in query_folders)
    return PlaceDataset(
        name=name or base,
        db_paths=db_paths,
        q_paths=q_paths,
        db_utm=db_utm,
        q_utm=np.concatenate(q_parts),
        pos_dist_thr=pos_radius,
        nontriv_pos_dist_sq_thr=train_radius**2,
        split=split,
        extras={"q_traverse": np.array(q_traverse), "db_traverse": os.path.basename(db_folder)},
    )


def find_traverses(root: str) -> list[str]:
    """Sub-folders of `root` (sorted) that hold images sharing file names with another sub-folder.

    Returns [] unless at least two aligned traverses are found; the first is the natural database.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        return []
    folders = {}
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if os.path.isdir(path):
            names = set(list_images(path, recursive=False))
            if names:
                folders[path] = names
    aligned = [f for f in folders if any(folders[f] & folders[g] for g in folders if g != f)]
    return aligned if len(aligned) >= 2 else []

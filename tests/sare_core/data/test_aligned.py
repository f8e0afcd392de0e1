"""Aligned traverses on the real Nordland frames: same file name = same place, +-2 neighbours also count."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sare_core.data import load_aligned_traverses
from sare_core.data.aligned import find_traverses, frame_number


@pytest.fixture(scope="module")
def nordland(shared_data):
    root = shared_data / "nordland_dev"
    return load_aligned_traverses(root / "summer", root / "winter", tolerance_frames=2)


def test_nordland_positives_are_same_name_and_two_neighbours(nordland):
    d = nordland
    assert d.num_db == 2382 and d.num_q == 2382
    assert d.pos_dist_thr == 2.0 and d.nontriv_pos_dist_sq_thr == 4.0
    db_names = [os.path.basename(p) for p in d.db_paths]
    q_names = [os.path.basename(p) for p in d.q_paths]
    assert db_names[0] == "images-00180.png" and db_names[-1] == "images-23990.png"
    assert q_names == db_names and d.db_paths[0].endswith("summer/images-00180.png")
    assert set(d.extras["q_traverse"]) == {"winter"}
    # a query's positives: the database frame of the same name and the 2 files before and after it
    by_name = {n: i for i, n in enumerate(db_names)}
    positives = d.positives()
    for qi in (0, 1, 2, 500, 1190, 2380, 2381):
        centre = by_name[q_names[qi]]
        expected = list(range(max(0, centre - 2), min(d.num_db, centre + 3)))
        assert positives[qi].tolist() == expected, qi
        # +-2 files in nordland_dev (every 10th video frame) = +-20 video frames
        numbers = [frame_number(db_names[i]) for i in positives[qi]]
        assert max(abs(n - frame_number(q_names[qi])) for n in numbers) <= 20
    counts = np.array([len(p) for p in positives])
    assert counts.min() == 3 and counts.max() == 5 and (counts == 5).sum() == 2382 - 4


def test_frame_number_indexing_agrees_when_no_frame_is_missing(shared_data, nordland):
    root = shared_data / "nordland_dev"
    by_number = load_aligned_traverses(root / "summer", [root / "winter"], index_by="frame_number")
    np.testing.assert_array_equal(by_number.db_utm[:3, 0], [18.0, 19.0, 20.0])  # 180/10, 190/10, ...
    assert all(np.array_equal(a, b) for a, b in zip(by_number.positives(), nordland.positives(), strict=True))


def test_missing_frames_position_vs_frame_number(tmp_path, shared_data):
    """Drop one frame from both seasons and most winter frames. Names still match; "position" counts files
    of the sequence (the missing frame closes the gap), "frame_number" keeps video distances."""
    src = shared_data / "nordland_dev"
    names = sorted(os.listdir(src / "summer"))[:30]
    for season, keep in (("summer", [n for i, n in enumerate(names) if i != 10]),
                         ("winter", [n for i, n in enumerate(names) if i % 3 == 0 and i != 10])):
        (tmp_path / season).mkdir()
        for n in keep:
            os.symlink(src / season / n, tmp_path / season / n)
    by_pos = load_aligned_traverses(tmp_path / "summer", tmp_path / "winter")
    by_num = load_aligned_traverses(tmp_path / "summer", tmp_path / "winter", index_by="frame_number")
    assert by_pos.num_db == 29 and by_pos.num_q == 10
    q9 = [os.path.basename(p) for p in by_pos.q_paths].index(names[9])
    db_pos = [os.path.basename(by_pos.db_paths[i]) for i in by_pos.positives()[q9]]
    db_num = [os.path.basename(by_num.db_paths[i]) for i in by_num.positives()[q9]]
    assert db_pos == [names[7], names[8], names[9], names[11], names[12]]  # 2 files either side
    assert db_num == [names[7], names[8], names[9], names[11]]  # names[12] is 3 frame steps away
    # winter frames missing from the query folder do not shift anything: the same name keeps its index
    assert by_pos.q_utm[q9, 0] == by_pos.db_utm[9, 0]


def test_tolerance_zero_means_same_name_only_and_multiple_query_traverses(tmp_path, shared_data):
    src = shared_data / "nordland_dev"
    names = sorted(os.listdir(src / "summer"))[:12]
    for season in ("summer", "winter", "autumn"):
        (tmp_path / season).mkdir()
        for n in names:
            os.symlink(src / ("winter" if season == "autumn" else season) / n, tmp_path / season / n)
    d = load_aligned_traverses(tmp_path / "summer", [tmp_path / "winter", tmp_path / "autumn"],
                               tolerance_frames=0)
    assert d.num_q == 24 and d.pos_dist_thr == 0.5
    assert [p.tolist() for p in d.positives()] == [[i] for i in range(12)] * 2
    assert list(d.extras["q_traverse"]) == ["winter"] * 12 + ["autumn"] * 12
    wide = load_aligned_traverses(tmp_path / "summer", tmp_path / "winter", tolerance_frames=3,
                                  train_tolerance_frames=1)
    assert wide.pos_dist_thr == 3.0 and wide.nontriv_pos_dist_sq_thr == 1.0
    assert wide.train_positives()[5].tolist() == [4, 5, 6]
    assert find_traverses(tmp_path) == [str(tmp_path / s) for s in ("autumn", "summer", "winter")]


def test_bad_arguments(tmp_path, shared_data):
    src = shared_data / "nordland_dev"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no images found"):
        load_aligned_traverses(src / "summer", tmp_path / "empty")
    with pytest.raises(ValueError, match="also listed as a query folder"):
        load_aligned_traverses(src / "summer", [src / "summer"])
    with pytest.raises(ValueError, match="tolerance_frames"):
        load_aligned_traverses(src / "summer", src / "winter", tolerance_frames=-1)
    with pytest.raises(FileNotFoundError):
        load_aligned_traverses(tmp_path / "missing", src / "winter")
    with pytest.raises(ValueError, match="index_by"):
        load_aligned_traverses(src / "summer", src / "winter", index_by="time")

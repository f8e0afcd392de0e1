"""Sequence datasets split by frame index; thresholds in frames travel through a Parquet manifest."""

import numpy as np
import pytest

from sare_core.data import PlaceDataset, open_splits, write_manifest
from sare_core.data.sequence_splits import IndexRange, split_by_index
from sare_core.mining import GroundTruthForTraining


def sequence(n=100):
    east = np.arange(n, dtype=float)
    utm = np.stack([east, np.zeros(n)], axis=1)
    return PlaceDataset(name="seq", db_paths=[f"/s/{i:05d}.png" for i in range(n)],
                        q_paths=[f"/w/{i:05d}.png" for i in range(n)], db_utm=utm, q_utm=utm,
                        extras={"q_traverse": np.array(["w"] * n), "db_traverse": "s"})


def test_split_by_index_keeps_ranges_disjoint_with_their_thresholds():
    train, val = split_by_index(sequence(), [IndexRange("train", 0, 60, pos_dist_thr=10, train_pos_radius=1),
                                             IndexRange("val", 70, 100, pos_dist_thr=2)])
    assert (train.num_db, train.num_q, val.num_db, val.num_q) == (60, 60, 30, 30)
    assert train.db_utm[:, 0].max() == 59 and val.db_utm[:, 0].min() == 70
    assert (train.pos_dist_thr, train.nontriv_pos_dist_sq_thr) == (10, 1)
    assert (val.pos_dist_thr, val.nontriv_pos_dist_sq_thr) == (2, 4)
    assert val.extras["q_traverse"].shape == (30,) and val.extras["db_traverse"] == "s"
    # evaluation: +-2 frames; training: positives within 1 frame, negatives beyond 10
    assert [len(p) for p in val.positives()[:3]] == [3, 4, 5]
    gt = GroundTruthForTraining.from_dataset(train)
    assert gt.potential_positives[30].tolist() == [29, 30, 31]
    assert gt.not_negatives[30].tolist() == list(range(20, 41))


def test_split_by_index_rejects_overlaps_and_empty_ranges():
    with pytest.raises(ValueError, match="'train' .* and 'val' .* overlap"):
        split_by_index(sequence(), [IndexRange("train", 0, 60, 10), IndexRange("val", 50, 100, 2)])
    with pytest.raises(ValueError, match="split 'test'"):
        split_by_index(sequence(), [IndexRange("test", 200, 300, 2)])
    with pytest.raises(ValueError, match="stop"):
        IndexRange("val", 10, 5, 2)


def test_thresholds_in_frames_survive_a_parquet_manifest(tmp_path):
    splits = split_by_index(sequence(), [IndexRange("train", 0, 60, pos_dist_thr=10, train_pos_radius=1),
                                         IndexRange("val", 70, 100, pos_dist_thr=2)])
    path = write_manifest(str(tmp_path / "m.parquet"), splits)
    back = open_splits(path)  # what `sare train` reads
    assert (back["train"].pos_dist_thr, back["train"].nontriv_pos_dist_sq_thr) == (10, 1)
    assert (back["val"].pos_dist_thr, back["val"].nontriv_pos_dist_sq_thr) == (2, 4)
    assert back["val"].db_utm[:, 0].tolist() == list(range(70, 100))


def test_nordland_manifest_script(shared_data, tmp_path):
    from benchmarks.nordland_manifest import main

    out = tmp_path / "nordland.parquet"
    assert main(["--root", str(shared_data / "nordland_dev"), "--out", str(out)]) == 0
    splits = open_splits(str(out))
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert (train.num_db, train.num_q, val.num_db, val.num_q, test.num_db, test.num_q) == (
        1300, 1300, 500, 500, 482, 482)
    # gaps wider than the negatives' radius (10 frames) between the ranges
    assert train.db_utm[:, 0].max() + 10 < val.db_utm[:, 0].min()
    assert val.db_utm[:, 0].max() + 10 < test.db_utm[:, 0].min()
    assert all("/summer/" in p for p in val.db_paths) and all("/winter/" in p for p in val.q_paths)
    assert val.pos_dist_thr == 2 == test.pos_dist_thr and train.pos_dist_thr == 10
    assert train.nontriv_pos_dist_sq_thr == 1

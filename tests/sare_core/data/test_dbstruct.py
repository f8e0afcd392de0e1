"""dbStruct .mat files built from the real Pitts30k-test and Tokyo 24/7 geometry, read back by name."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from sare_core.data import PlaceDataset, load_dbstruct, save_dbstruct

PITTS_FIELDS = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries",
                "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")


def brute_force_positives(q_utm: np.ndarray, db_utm: np.ndarray, radius: float, chunk: int = 64) -> list:
    """Database indices within `radius` metres of each query, by explicit pairwise distances."""
    out = []
    for start in range(0, len(q_utm), chunk):
        diff = q_utm[start:start + chunk, None, :] - db_utm[None, :, :]
        d2 = (diff**2).sum(-1)
        out += [np.flatnonzero(row <= radius**2) for row in d2]
    return out


def cell(strings) -> np.ndarray:
    arr = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        arr[i, 0] = s
    return arr


def mat_struct(values: dict) -> np.ndarray:
    """A 1x1 MATLAB struct whose fields keep the order of `values`."""
    struct = np.empty((1, 1), dtype=[(k, object) for k in values])
    for k, v in values.items():
        struct[0, 0][k] = v
    return struct


@pytest.fixture(scope="module")
def pitts(shared_data):
    gt = np.load(shared_data / "real_gt" / "pitts30k_test.npz")
    db_names = (shared_data / "real_gt" / "pitts30k_imageNames_index.txt").read_text().split()
    q_names = (shared_data / "real_gt" / "pitts30k_imageNames_query.txt").read_text().split()
    return {"utmQ": gt["utmQ"], "utmDb": gt["utmDb"], "posDistThr": float(gt["posDistThr"]),
            "db_names": db_names, "q_names": q_names}


def assert_pitts(dataset: PlaceDataset, pitts: dict) -> None:
    assert dataset.num_q == 6816 and dataset.num_db == 10000
    assert dataset.q_paths == pitts["q_names"] and dataset.db_paths == pitts["db_names"]
    np.testing.assert_array_equal(dataset.db_utm, pitts["utmDb"])
    np.testing.assert_array_equal(dataset.q_utm, pitts["utmQ"])
    assert dataset.pos_dist_thr == 25.0 and dataset.nontriv_pos_dist_sq_thr == 100.0
    assert dataset.split == "test"


def test_save_dbstruct_round_trip_pitts30k_positives_match_brute_force(tmp_path, pitts):
    original = PlaceDataset("pitts30k_test", pitts["db_names"], pitts["q_names"], db_utm=pitts["utmDb"],
                            q_utm=pitts["utmQ"], pos_dist_thr=pitts["posDistThr"], split="test")
    save_dbstruct(tmp_path / "pitts30k_test.mat", original)
    loaded = load_dbstruct(tmp_path / "pitts30k_test.mat")
    assert_pitts(loaded, pitts)
    expected = brute_force_positives(pitts["utmQ"], pitts["utmDb"], 25.0)
    got = loaded.positives()
    assert len(got) == 6816
    assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    assert min(len(p) for p in got) == 24  # every real Pitts30k test query has positives within 25 m


def test_hand_built_pitts_struct_in_original_field_order(tmp_path, pitts):
    values = {
        "whichSet": "test",
        "dbImageFns": cell(pitts["db_names"]),
        "utmDb": pitts["utmDb"].T,  # MATLAB stores 2 x N
        "qImageFns": cell(pitts["q_names"]),
        "utmQ": pitts["utmQ"].T,
        "numImages": 10000.0,
        "numQueries": 6816.0,
        "posDistThr": 25.0,
        "posDistSqThr": 625.0,
        "nonTrivPosDistSqThr": 100.0,
    }
    assert tuple(values) == PITTS_FIELDS
    scipy.io.savemat(tmp_path / "pitts30k_test.mat", {"dbStruct": mat_struct(values)})
    loaded = load_dbstruct(tmp_path / "pitts30k_test.mat")
    assert_pitts(loaded, pitts)
    assert loaded.extras["pos_dist_sq_thr"] == 625.0


def test_tokyotm_layout_with_time_stamps_reads_by_name(tmp_path, pitts):
    rng = np.random.default_rng(0)
    db_utm, q_utm = pitts["utmDb"][:300], pitts["utmQ"][:40]
    db_ts, q_ts = rng.integers(2012, 2016, 300), rng.integers(2012, 2016, 40)
    values = {  # TokyoTM adds time stamps; here also shuffled to prove fields are read by name
        "nonTrivPosDistSqThr": 100.0,
        "qTimeStamp": q_ts.reshape(1, -1).astype(float),
        "utmQ": q_utm.T,
        "qImageFns": cell(pitts["q_names"][:40]),
        "dbTimeStamp": db_ts.reshape(1, -1).astype(float),
        "utmDb": db_utm.T,
        "dbImageFns": cell(pitts["db_names"][:300]),
        "posDistThr": 25.0,
        "numQueries": 40.0,
        "numImages": 300.0,
        "whichSet": "val",
    }
    scipy.io.savemat(tmp_path / "tokyoTM_val.mat", {"dbStruct": mat_struct(values)})
    loaded = load_dbstruct(tmp_path / "tokyoTM_val.mat", images_root="/data/tokyoTM")
    assert loaded.split == "val" and loaded.num_db == 300 and loaded.num_q == 40
    np.testing.assert_array_equal(loaded.db_utm, db_utm)
    np.testing.assert_array_equal(loaded.extras["db_time_stamp"], db_ts)
    np.testing.assert_array_equal(loaded.extras["q_time_stamp"], q_ts)
    assert loaded.db_paths[0] == "/data/tokyoTM/" + pitts["db_names"][0]
    assert loaded.q_paths[0] == "/data/tokyoTM/queries_real/" + pitts["q_names"][0]
    # and save_dbstruct writes the time stamps back TokyoTM-style
    save_dbstruct(tmp_path / "again.mat", loaded)
    again = load_dbstruct(tmp_path / "again.mat")
    np.testing.assert_array_equal(again.extras["q_time_stamp"], q_ts)


def test_tokyo247_geometry(tmp_path, shared_data):
    gt = np.load(shared_data / "real_gt" / "tokyo247.npz")
    q_names = (shared_data / "real_gt" / "tokyo247_imageNames_query.txt").read_text().split()
    db_names = [f"{i // 12:05d}/{i:06d}.png" for i in range(len(gt["utmDb"]))]  # db names are not shipped
    original = PlaceDataset("tokyo247", db_names, q_names, db_utm=gt["utmDb"], q_utm=gt["utmQ"], split="test")
    save_dbstruct(tmp_path / "tokyo247.mat", original)
    loaded = load_dbstruct(tmp_path / "tokyo247.mat")
    assert loaded.num_q == 315 and loaded.num_db == 75984 and loaded.q_paths == q_names
    got = loaded.positives()
    expected = brute_force_positives(gt["utmQ"], gt["utmDb"], float(gt["posDistThr"]), chunk=16)
    assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    assert min(len(p) for p in got) > 0


def test_file_without_dbstruct_names_the_file(tmp_path):
    path = tmp_path / "not_a_dbstruct.mat"
    scipy.io.savemat(path, {"something": np.arange(3)})
    with pytest.raises(ValueError, match="not_a_dbstruct.mat.*dbStruct"):
        load_dbstruct(path)


def test_corrupt_mat_and_bad_field_name_the_file_and_field(tmp_path):
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(ValueError, match="garbage.mat"):
        load_dbstruct(garbage)
    values = {"whichSet": "test", "dbImageFns": cell(["a.jpg", "b.jpg"]), "utmDb": np.zeros((3, 2)),
              "qImageFns": cell(["q.jpg"]), "utmQ": np.zeros((2, 1)), "posDistThr": 25.0}
    scipy.io.savemat(tmp_path / "bad_shape.mat", {"dbStruct": mat_struct(values)})
    with pytest.raises(ValueError, match=r"bad_shape.mat.*utmDb"):
        load_dbstruct(tmp_path / "bad_shape.mat")
    values["utmDb"] = np.array([[0.0, np.nan], [0.0, 1.0]])
    scipy.io.savemat(tmp_path / "nan.mat", {"dbStruct": mat_struct(values)})
    with pytest.raises(ValueError, match=r"nan.mat.*utmDb.*\[1\]"):
        load_dbstruct(tmp_path / "nan.mat")
    del values["posDistThr"]
    values["utmDb"] = np.zeros((2, 2))
    scipy.io.savemat(tmp_path / "no_thr.mat", {"dbStruct": mat_struct(values)})
    with pytest.raises(ValueError, match=r"no_thr.mat.*posDistThr"):
        load_dbstruct(tmp_path / "no_thr.mat")


def test_empty_which_set_and_single_image_round_trip(tmp_path):
    one = PlaceDataset("one", ["db.jpg"], ["q.jpg"], db_utm=[[1.0, 2.0]], q_utm=[[1.0, 3.0]])
    save_dbstruct(tmp_path / "one.mat", one)
    loaded = load_dbstruct(tmp_path / "one.mat")
    assert loaded.split == ""  # an empty MATLAB char array, not "[]"
    assert loaded.db_paths == ["db.jpg"] and loaded.q_paths == ["q.jpg"]
    np.testing.assert_array_equal(loaded.q_utm, [[1.0, 3.0]])
    assert [p.tolist() for p in loaded.positives()] == [[0]]

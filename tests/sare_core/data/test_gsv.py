"""GSV-style folders built from the real toy street photos, with UTM coordinates in their names."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sare_core.data import check_images, load_gsv_folders
from sare_core.data.gsv import gsv_splits, is_gsv_folder, parse_gsv_name

EAST0, NORTH0 = 584_000.0, 4_477_000.0  # somewhere in Pittsburgh's UTM zone 17T


def gsv_name(east: float, north: float, pano: str) -> str:
    """The VPR-datasets-downloader naming: @utm_east@utm_north@zone@letter@lat@lon@pano@...@.jpg"""
    return f"@{east:.2f}@{north:.2f}@17@T@40.44@-79.99@{pano}@@0@@@@201901@@.jpg"


def make_gsv_split(root, split: str, toy: list, db_xy: np.ndarray, q_xy: np.ndarray) -> None:
    """Link the toy photos into root/images/<split>/{database,queries} under @utm@ names."""
    db_files = [p for p in toy if p.parent.name == "database"]
    q_files = [p for p in toy if p.parent.name == "queries"]
    for role, files, xy in (("database", db_files, db_xy), ("queries", q_files, q_xy)):
        folder = root / "images" / split / role
        folder.mkdir(parents=True)
        for i, (src, (x, y)) in enumerate(zip(files, xy, strict=False)):
            os.symlink(src, folder / gsv_name(EAST0 + x, NORTH0 + y, f"{role}{i}"))


@pytest.fixture
def gsv_root(tmp_path, toy_street_images):
    """17 database photos every 10 m along a street, 5 queries: 3 on the street, 2 far away."""
    db_xy = np.c_[np.arange(17) * 10.0, np.zeros(17)]
    q_xy = np.array([[0.0, 3.0], [50.0, -6.0], [160.0, 0.0], [500.0, 500.0], [-300.0, 0.0]])
    root = tmp_path / "toy_gsv"
    make_gsv_split(root, "test", toy_street_images, db_xy, q_xy)
    make_gsv_split(root, "val", toy_street_images, db_xy + [0.0, 1000.0], q_xy + [0.0, 1000.0])
    return root, db_xy, q_xy


def test_reads_real_photos_with_coordinates_in_names(gsv_root):
    root, db_xy, q_xy = gsv_root
    ds = load_gsv_folders(root, "test")
    assert ds.num_db == 17 and ds.num_q == 5 and ds.split == "test" and ds.name == "toy_gsv_test"
    # sorted by file name = sorted by easting here (fixed-width coordinates)
    np.testing.assert_allclose(ds.db_utm, np.c_[EAST0 + db_xy[:, 0], NORTH0 + db_xy[:, 1]])
    got = {tuple(np.round(u - [EAST0, NORTH0], 2)) for u in ds.q_utm}
    assert got == {tuple(x) for x in q_xy}
    by_query = {tuple(np.round(u - [EAST0, NORTH0], 2)): p.tolist() for u, p in zip(ds.q_utm, ds.positives(), strict=True)}
    assert by_query[(0.0, 3.0)] == [0, 1, 2]  # within 25 m: 0, 10, 20 m along the street
    assert by_query[(50.0, -6.0)] == [3, 4, 5, 6, 7]
    assert by_query[(160.0, 0.0)] == [14, 15, 16]
    assert by_query[(500.0, 500.0)] == [] and by_query[(-300.0, 0.0)] == []
    train = {tuple(np.round(u - [EAST0, NORTH0], 2)): p.tolist()
             for u, p in zip(ds.q_utm, ds.train_positives(), strict=True)}
    assert train[(50.0, -6.0)] == [5]  # within 10 m only
    assert all(os.path.isabs(p) for p in ds.db_paths)
    assert check_images(ds.db_paths + ds.q_paths).ok  # the links lead to the real JPEGs


def test_split_discovery_and_layouts(gsv_root):
    root, _, _ = gsv_root
    assert gsv_splits(root) == ["val", "test"] and is_gsv_folder(root)
    val = load_gsv_folders(root, "val", pos_dist_thr=15.0, nontriv_pos_dist_sq_thr=25.0)
    assert val.pos_dist_thr == 15.0 and val.nontriv_pos_dist_sq_thr == 25.0
    assert (val.db_utm[:, 1] == NORTH0 + 1000.0).all()
    single = load_gsv_folders(root / "images" / "test", split=None)  # a split folder itself
    assert single.num_db == 17 and single.split == ""
    with pytest.raises(FileNotFoundError, match="split 'train'"):
        load_gsv_folders(root, "train")


def test_bad_names_are_named(tmp_path, toy_street_images):
    for role in ("database", "queries"):
        (tmp_path / "images" / "test" / role).mkdir(parents=True)
    os.symlink(toy_street_images[0], tmp_path / "images/test/database" / gsv_name(1.0, 2.0, "ok"))
    os.symlink(toy_street_images[1], tmp_path / "images/test/queries" / "@584000.0@north@17@T@.jpg")
    with pytest.raises(ValueError, match=r"@584000.0@north@17@T@.jpg: field utm_north is 'north'"):
        load_gsv_folders(tmp_path, "test")
    with pytest.raises(ValueError, match="field utm_east missing"):
        parse_gsv_name("db1.jpg")
    with pytest.raises(ValueError, match="utm_east is 'nan'"):
        parse_gsv_name("@nan@1@.jpg")
    assert parse_gsv_name("/x/@0543256.96@4178906.70@10@S@37.7@-122.4@pano@@@@@@@@.jpg") == (543256.96, 4178906.70)


def test_empty_folder_is_an_error(tmp_path):
    for role in ("database", "queries"):
        (tmp_path / "images" / "test" / role).mkdir(parents=True)
    with pytest.raises(ValueError, match="database: no images found"):
        load_gsv_folders(tmp_path, "test")

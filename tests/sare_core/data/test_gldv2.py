"""Google Landmarks v2 readers on small CSVs in the released layout (images: the real toy street photos)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from sare_core.data import check_images, load_gldv2_retrieval, load_gldv2_train, read_manifest, write_manifest
from sare_core.data.gldv2 import gldv2_image_path

INDEX = ["0012345678901234", "a1b2c3d4e5f60001", "a1b2c3d4e5f60002", "ffee000000000003", "ffee000000000004",
         "b00000000000000a"]
TEST = ["c0ffee0000000001", "c0ffee0000000002", "c0ffee0000000003", "d00d000000000004", "d00d000000000005"]


def write(path, rows: list[str]) -> None:
    path.write_text("\n".join(rows) + "\n")


def make_gld_root(root, toy_street_images):
    """index.csv, test.csv, retrieval_solution_v2.1.csv and the a/b/c image trees (real photos) under root."""
    root.mkdir()
    write(root / "index.csv", ["id"] + INDEX)
    write(root / "test.csv", ["id"] + TEST)
    write(root / "retrieval_solution_v2.1.csv", [
        "id,images,Usage",
        f"{TEST[0]},{INDEX[0]} {INDEX[2]},Public",   # landmark A: index 0 and 2
        f"{TEST[1]},{INDEX[2]} {INDEX[0]},Private",  # landmark A again (listed in another order)
        f"{TEST[2]},{INDEX[3]},Private",             # landmark B: index 3
        f"{TEST[3]},None,Ignored",                   # distractor
        f"{TEST[4]},None,Ignored",
        "e000000000000009,None,Ignored",             # a row for a query trimmed from test.csv
    ])
    for ids, folder in ((INDEX, "index"), (TEST, "test")):
        for i, image_id in enumerate(ids):
            dst = gldv2_image_path(str(root / folder), image_id)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink(toy_street_images[i], dst)
    return root


@pytest.fixture
def gld_root(tmp_path, toy_street_images):
    return make_gld_root(tmp_path / "gldv2", toy_street_images)


def test_retrieval_positives_are_the_listed_index_images(gld_root):
    d = load_gldv2_retrieval(gld_root)
    assert d.num_db == 6 and d.num_q == 5 and d.split == "test"
    assert [p.tolist() for p in d.positives()] == [[0, 2], [0, 2], [3], [], []]
    assert "q_positives" not in d.extras  # labels express this solution exactly
    assert d.q_labels[0] == d.q_labels[1] != d.q_labels[2] and (d.q_labels[3:] == -1).all()
    assert d.db_labels[1] == -1 and d.db_labels[4] == -1  # listed by no query
    assert list(d.extras["q_usage"]) == ["Public", "Private", "Private", "Ignored", "Ignored"]
    assert d.db_paths[0] == str(gld_root / "index" / "0" / "0" / "1" / "0012345678901234.jpg")
    assert check_images(d.db_paths + d.q_paths).ok


def test_usage_filter_and_distractors(gld_root):
    d = load_gldv2_retrieval(gld_root, usage=("Public", "Private"))
    assert d.num_q == 3 and [p.tolist() for p in d.positives()] == [[0, 2], [0, 2], [3]]
    d = load_gldv2_retrieval(gld_root, keep_distractors=False)
    assert d.num_q == 3


def test_overlapping_lists_keep_explicit_positives(gld_root, tmp_path):
    write(gld_root / "retrieval_solution_v2.1.csv", [
        "id,images,Usage",
        f"{TEST[0]},{INDEX[0]} {INDEX[2]},Public",
        f"{TEST[1]},{INDEX[2]} {INDEX[3]},Public",  # shares index 2 with query 0 but not index 0
        f"{TEST[2]},{INDEX[5]},Private",
        f"{TEST[3]},None,Ignored",
        f"{TEST[4]},{INDEX[1]} zzzz000000000000,Private",  # an id missing from index.csv
    ])
    d = load_gldv2_retrieval(gld_root)
    assert "q_positives" in d.extras
    assert [p.tolist() for p in d.positives()] == [[0, 2], [2, 3], [5], [], [1]]
    assert d.q_labels[0] == d.q_labels[1]  # one component, but each keeps its own list
    write_manifest(tmp_path / "gld.parquet", d)
    back = read_manifest(tmp_path / "gld.parquet")
    assert [p.tolist() for p in back.positives()] == [[0, 2], [2, 3], [5], [], [1]]


def test_missing_positive_ids_are_dropped_with_a_warning(gld_root, caplog):
    write(gld_root / "index.csv", ["id"] + INDEX[1:])  # a trimmed index without INDEX[0]
    with caplog.at_level(logging.WARNING):
        d = load_gldv2_retrieval(gld_root)
    assert "2 listed positives are not in" in caplog.text
    assert [p.tolist() for p in d.positives()][:3] == [[1], [1], [2]]


@pytest.mark.parametrize("which, rows, message", [
    ("index.csv", ["image", INDEX[0]], r"index.csv: missing column\(s\) \['id'\]"),
    ("index.csv", ["id", INDEX[0], INDEX[1], INDEX[0]], r"index.csv: duplicate ids: '0012345678901234' in rows \[0, 2\]"),
    ("test.csv", ["id"] + TEST + ["f000000000000000"], r"test.csv: test ids without a row in .*rows \[5\]"),
    ("retrieval_solution_v2.1.csv", ["id,Usage", f"{TEST[0]},Public"], r"missing column\(s\) \['images'\]"),
    ("retrieval_solution_v2.1.csv", ["id,images,Usage"] + [f"{t},,Public" for t in TEST],
     r"field 'images' is empty in rows \[0, 1, 2, 3, 4\]"),
])
def test_malformed_csvs_name_file_and_field(gld_root, which, rows, message):
    write(gld_root / which, rows)
    with pytest.raises(ValueError, match=message):
        load_gldv2_retrieval(gld_root)


def test_no_solution_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no retrieval solution"):
        load_gldv2_retrieval(tmp_path)


def test_train_csv_label_dataset(tmp_path):
    rows = ["id,url,landmark_id"]
    landmarks = {7: 4, 3: 1, 12: 2, 5: 3}  # landmark -> number of images
    ids = []
    for lm, count in landmarks.items():
        for k in range(count):
            ids.append(f"{lm:04x}{k:012x}")
            rows.append(f"{ids[-1]},http://example/{ids[-1]}.jpg,{lm}")
    write(tmp_path / "train.csv", rows)
    d = load_gldv2_train(tmp_path / "train.csv", seed=3)
    # one query per landmark with >= 2 images; landmark 3 (single image) stays in the database
    assert sorted(d.q_labels.tolist()) == [5, 7, 12] and d.num_db == 10 - 3
    for q, pos in zip(d.q_labels, d.positives(), strict=True):
        assert len(pos) == landmarks[q] - 1 and (d.db_labels[pos] == q).all()
    assert d.db_paths[0].startswith(str(tmp_path / "train" / ids[0][0] / ids[0][1] / ids[0][2]))
    again = load_gldv2_train(tmp_path / "train.csv", seed=3)
    assert again.q_paths == d.q_paths  # seeded
    two = load_gldv2_train(tmp_path / "train.csv", queries_per_landmark=5, seed=0)
    assert np.bincount(two.q_labels).tolist()[7] == 3  # at most all but one image of a landmark
    write(tmp_path / "bad.csv", ["id,url,landmark_id", "abc1,u,7", "abc2,u,seven"])
    with pytest.raises(ValueError, match=r"bad.csv: field 'landmark_id' is missing or not an integer in rows \[1\]"):
        load_gldv2_train(tmp_path / "bad.csv")

"""`sare data convert | inspect | synth` through pipelines.cli.main, on the real test data."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from pipelines.cli import main
from sare_core.data import (
    PlaceDataset,
    load_aligned_traverses,
    load_dbstruct,
    load_gldv2_retrieval,
    load_gsv_folders,
    read_manifest,
    read_manifest_splits,
    save_dbstruct,
    write_manifest,
)
from tests.sare_core.data.test_gldv2 import make_gld_root
from tests.sare_core.data.test_gsv import make_gsv_split
from tests.sare_core.data.test_manifest import assert_same


@pytest.fixture(scope="module")
def pitts_mats(shared_data, tmp_path_factory):
    """val.mat and test.mat cut from the real Pitts30k-test geometry and image names."""
    gt = np.load(shared_data / "real_gt" / "pitts30k_test.npz")
    db_names = (shared_data / "real_gt" / "pitts30k_imageNames_index.txt").read_text().split()
    q_names = (shared_data / "real_gt" / "pitts30k_imageNames_query.txt").read_text().split()
    folder = tmp_path_factory.mktemp("pitts")
    paths = {}
    for split, db, q in (("val", slice(0, 5000), slice(0, 3000)), ("test", slice(5000, 10000), slice(3000, 6816))):
        ds = PlaceDataset(f"pitts30k_{split}", db_names[db], q_names[q], db_utm=gt["utmDb"][db],
                          q_utm=gt["utmQ"][q], split=split)
        paths[split] = folder / f"pitts30k_{split}.mat"
        save_dbstruct(paths[split], ds)
    return paths


def test_inspect_dbstruct_prints_counts_and_writes_map(tmp_path, pitts_mats, capsys):
    out_png = tmp_path / "maps" / "pitts.png"
    rc = main(["data", "inspect", str(pitts_mats["test"]), "--map", str(out_png), "--json", str(tmp_path / "s.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "5000" in out and "3816" in out and "positives per query (within 25 m)" in out
    test = load_dbstruct(pitts_mats["test"])
    without = sum(len(p) == 0 for p in test.positives())  # cut by database index, some queries lose theirs
    assert without > 0 and f"queries without positives: {without} of 3816" in out and "|" in out
    with Image.open(out_png) as img:
        assert img.format == "PNG"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["splits"][0]["num_db"] == 5000 and summary["splits"][0]["queries_without_positives"] == without


def test_inspect_default_map_paths(tmp_path, pitts_mats, shared_data, monkeypatch, capsys):
    write_manifest(tmp_path / "pitts.parquet", [load_dbstruct(p) for p in pitts_mats.values()])
    assert main(["data", "inspect", str(tmp_path / "pitts.parquet")]) == 0
    assert (tmp_path / "pitts_map.png").is_file()  # next to the input file
    out = capsys.readouterr().out
    assert "val" in out and "test" in out and "5000" in out
    monkeypatch.chdir(tmp_path)
    assert main(["data", "inspect", str(shared_data / "nordland_dev")]) == 0  # a read-only folder
    assert (tmp_path / "nordland_dev_map.png").is_file()  # goes to the current directory
    assert "2382" in capsys.readouterr().out


def test_convert_dbstruct_splits_reads_back_equal(tmp_path, pitts_mats, capsys):
    out = tmp_path / "pitts.parquet"
    rc = main(["data", "convert", "--format", "dbstruct", "--input", str(pitts_mats["val"]),
               str(pitts_mats["test"]), "--out", str(out)])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    splits = read_manifest_splits(out)
    for split, mat in pitts_mats.items():
        original = load_dbstruct(mat)
        # relative names in the .mat are relative to the current directory; the manifest stores them absolute
        original.db_paths = [os.path.abspath(p) for p in original.db_paths]
        original.q_paths = [os.path.abspath(p) for p in original.q_paths]
        assert_same(original, splits[split])


def test_convert_gsv_to_csv(tmp_path, toy_street_images):
    db_xy = np.c_[np.arange(17) * 10.0, np.zeros(17)]
    q_xy = np.array([[0.0, 3.0], [50.0, -6.0], [160.0, 0.0], [500.0, 500.0], [-300.0, 0.0]])
    make_gsv_split(tmp_path / "toy", "test", toy_street_images, db_xy + 5e5, q_xy + 5e5)
    out = tmp_path / "toy" / "manifest.csv"
    assert main(["data", "convert", "--format", "gsv", "--input", str(tmp_path / "toy"), "--out", str(out),
                 "--check-images"]) == 0
    assert "images/test/database/@" in out.read_text()  # relative to the manifest's folder
    assert_same(load_gsv_folders(tmp_path / "toy", "test"), read_manifest(out, "test"))


def test_convert_aligned_nordland_keeps_frame_thresholds(tmp_path, shared_data):
    root = shared_data / "nordland_dev"
    out = tmp_path / "nordland.parquet"
    assert main(["data", "convert", "--format", "aligned", "--input", str(root / "summer"), "--queries",
                 str(root / "winter"), "--tolerance-frames", "2", "--split", "test", "--out", str(out)]) == 0
    back = read_manifest(out, "test")
    original = load_aligned_traverses(root / "summer", root / "winter", tolerance_frames=2, split="test")
    assert_same(original, back)
    assert back.pos_dist_thr == 2.0 and back.positives()[100].tolist() == [98, 99, 100, 101, 102]


def test_convert_gldv2_retrieval(tmp_path, toy_street_images, capsys):
    root = make_gld_root(tmp_path / "gld", toy_street_images)
    out = tmp_path / "gld.parquet"
    assert main(["data", "convert", "--format", "gldv2", "--input", str(root), "--usage", "Public,Private",
                 "--out", str(out), "--check-images", "--decode-images"]) == 0
    back = read_manifest(out)
    assert_same(load_gldv2_retrieval(root, usage=("Public", "Private")), back)
    assert [p.tolist() for p in back.positives()] == [[0, 2], [0, 2], [3]]
    assert main(["data", "inspect", str(out), "--map", str(tmp_path / "gld.png")]) == 0
    assert "same label" in capsys.readouterr().out and (tmp_path / "gld.png").is_file()


def test_convert_manifest_csv_to_parquet_with_thresholds(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("path,role,split,utm_east,utm_north\na.jpg,database,test,0,0\nb.jpg,database,test,30,0\n"
                   "q.jpg,query,test,1,0\n")
    assert main(["data", "convert", "--format", "manifest", "--input", str(src), "--out",
                 str(tmp_path / "out.parquet"), "--pos-dist-thr", "40"]) == 0
    back = read_manifest(tmp_path / "out.parquet")
    assert back.pos_dist_thr == 40.0 and back.positives()[0].tolist() == [0, 1]
    assert back.db_paths == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]


def test_bad_input_is_one_line_naming_file_and_field(tmp_path, capsys):
    rc = main(["data", "convert", "--format", "dbstruct", "--input", str(tmp_path / "nope.mat"), "--out",
               str(tmp_path / "m.parquet")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.mat" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("path,role,utm_east,utm_north\na.jpg,database,1,2\nb.jpg,query,nan,2\n")
    assert main(["data", "inspect", str(bad), "--map", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "utm_east" in err and "rows [1]" in err
    assert not (tmp_path / "x.png").exists()
    # --check-images fails before writing anything
    src = tmp_path / "in.csv"
    src.write_text("path,role,utm_east,utm_north\nmissing_db.jpg,database,0,0\nmissing_q.jpg,query,0,0\n")
    assert main(["data", "convert", "--format", "manifest", "--input", str(src), "--out",
                 str(tmp_path / "never.parquet"), "--check-images"]) == 2
    err = capsys.readouterr().err
    assert "2 missing" in err and "missing_db.jpg" in err and not (tmp_path / "never.parquet").exists()
    assert main(["data", "convert", "--format", "gsv", "--input", str(tmp_path), "--out", str(tmp_path / "m.txt")]) == 2
    assert "must end in .csv or .parquet" in capsys.readouterr().err


def test_synth_then_inspect_a_real_tiny_city(tmp_path, capsys):
    city = tmp_path / "city"
    assert main(["data", "synth", "--out", str(city), "--preset", "tiny", "--seed", "7", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "manifest.parquet" in out and "train" in out
    splits = read_manifest_splits(str(city / "manifest.parquet"))
    assert sorted(splits) == ["test", "train", "val"]
    assert all(os.path.isfile(p) for p in splits["test"].db_paths + splits["test"].q_paths)
    assert load_dbstruct(str(city / "val.mat")).num_db == splits["val"].num_db
    assert main(["data", "inspect", str(city / "manifest.parquet"), "--map", str(tmp_path / "map.png")]) == 0
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(tmp_path), "--preset", "huge"])
    assert main(["data", "synth", "--out", str(tmp_path), "--workers", "0"]) == 2

"""Manifests: CSV and Parquet round trips of several splits, relative paths, thresholds, bad input."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sare_core.data import PlaceDataset, read_manifest, read_manifest_splits, write_manifest
from sare_core.data.manifest import manifest_table


def assert_same(a: PlaceDataset, b: PlaceDataset, thresholds: bool = True) -> None:
    assert a.split == b.split
    assert a.db_paths == b.db_paths and a.q_paths == b.q_paths
    for field in ("db_utm", "q_utm", "db_labels", "q_labels"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=field)
    if thresholds:
        assert (a.pos_dist_thr, a.nontriv_pos_dist_sq_thr) == (b.pos_dist_thr, b.nontriv_pos_dist_sq_thr)
    assert all(np.array_equal(x, y) for x, y in zip(a.positives(), b.positives(), strict=True))


@pytest.fixture(scope="module")
def pitts_splits(shared_data) -> list[PlaceDataset]:
    """Three splits cut from the real Pitts30k-test geometry and names (images 'under' /data/pitts)."""
    gt = np.load(shared_data / "real_gt" / "pitts30k_test.npz")
    db_names = (shared_data / "real_gt" / "pitts30k_imageNames_index.txt").read_text().split()
    q_names = (shared_data / "real_gt" / "pitts30k_imageNames_query.txt").read_text().split()
    out = []
    for split, sl_db, sl_q in (("train", slice(0, 4000), slice(0, 2500)), ("val", slice(4000, 7000), slice(2500, 4500)),
                               ("test", slice(7000, 10000), slice(4500, 6816))):
        out.append(PlaceDataset(
            f"pitts_{split}", [os.path.normpath("/data/pitts/" + n) for n in db_names[sl_db]],
            [os.path.normpath("/data/pitts/" + n) for n in q_names[sl_q]], db_utm=gt["utmDb"][sl_db],
            q_utm=gt["utmQ"][sl_q], split=split, pos_dist_thr=25.0 if split != "val" else 30.0))
    return out


@pytest.mark.parametrize("ext", ["parquet", "csv"])
def test_round_trip_several_splits(tmp_path, pitts_splits, ext):
    path = tmp_path / f"pitts.{ext}"
    write_manifest(path, pitts_splits)
    splits = read_manifest_splits(path)
    assert list(splits) == ["train", "val", "test"]
    if ext == "csv":  # CSV carries no thresholds: the reader falls back to 25 / 100 (val used 30 m)
        assert splits["val"].pos_dist_thr == 25.0
        splits["val"] = read_manifest(path, "val", pos_dist_thr=30.0)
    for original in pitts_splits:
        assert_same(original, splits[original.split])
    if ext == "parquet":
        assert splits["val"].pos_dist_thr == 30.0 and splits["val"].name == "pitts_val"
        meta = pq.read_schema(path).metadata
        assert float(meta[b"pos_dist_thr"]) == 25.0 and float(meta[b"nontriv_pos_dist_sq_thr"]) == 100.0
    assert_same(read_manifest(path, "test"), pitts_splits[2])
    with pytest.raises(ValueError, match=r"holds splits \['train', 'val', 'test'\]"):
        read_manifest(path)
    with pytest.raises(ValueError, match="no split 'nope'"):
        read_manifest(path, "nope")


def test_paths_relative_under_the_manifest_folder_absolute_elsewhere(tmp_path):
    images = tmp_path / "set" / "images"
    inside = [str(images / "db" / f"{i}.jpg") for i in range(3)]
    outside = "/elsewhere/q0.jpg"
    ds = PlaceDataset("mixed", inside, [outside], db_utm=np.arange(6.0).reshape(3, 2), q_utm=[[0.0, 1.0]])
    path = tmp_path / "set" / "manifest.csv"
    write_manifest(path, ds)
    text = path.read_text()
    assert '"images/db/0.jpg"' in text and f'"{outside}"' in text and str(tmp_path) not in text
    back = read_manifest(path)
    assert back.db_paths == inside and back.q_paths == [outside] and back.split == ""
    # moving the folder keeps the manifest valid: relative paths follow it
    os.rename(tmp_path / "set", tmp_path / "moved")
    assert read_manifest(tmp_path / "moved" / "manifest.csv").db_paths[0] == str(tmp_path / "moved/images/db/0.jpg")


def test_label_manifest_with_explicit_positives_round_trip(tmp_path):
    ds = PlaceDataset("lab", [f"/x/d{i}.jpg" for i in range(5)], ["/x/q0.jpg", "/x/q1.jpg", "/x/q2.jpg"],
                      db_labels=[0, 0, 1, -1, 1], q_labels=[0, 1, -1], split="test",
                      extras={"q_positives": [[0], [2, 4], []]})
    for ext in ("parquet", "csv"):
        write_manifest(tmp_path / f"lab.{ext}", ds)
        back = read_manifest(tmp_path / f"lab.{ext}")
        assert_same(ds, back)
        assert [p.tolist() for p in back.positives()] == [[0], [2, 4], []]
    plain = PlaceDataset("lab", ds.db_paths, ds.q_paths, db_labels=ds.db_labels, q_labels=ds.q_labels)
    write_manifest(tmp_path / "plain.parquet", plain)
    assert "positives" not in pq.read_schema(tmp_path / "plain.parquet").names
    assert_same(plain, read_manifest(tmp_path / "plain.parquet"))


def test_frame_index_as_utm_east_serves_sequences(tmp_path):
    ds = PlaceDataset("seq", [f"/s/{i:05d}.png" for i in range(10)], [f"/w/{i:05d}.png" for i in range(10)],
                      db_utm=np.c_[np.arange(10.0), np.zeros(10)], q_utm=np.c_[np.arange(10.0), np.zeros(10)],
                      pos_dist_thr=2.0, nontriv_pos_dist_sq_thr=1.0)
    write_manifest(tmp_path / "seq.parquet", ds)
    back = read_manifest(tmp_path / "seq.parquet")
    assert back.pos_dist_thr == 2.0 and back.positives()[5].tolist() == [3, 4, 5, 6, 7]


def write_csv(path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "body, message",
    [
        ("path,split\na.jpg,test\n", r"missing column\(s\) \['role'\]"),
        ("path,role,utm_east\na.jpg,database,1\n", r"field 'utm_north' is missing"),
        ("path,role\na.jpg,database\n", r"needs columns utm_east, utm_north or label"),
        ("path,role,utm_east,utm_north\na.jpg,database,1,2\nb.jpg,queries,1,2\nc.jpg,db,1,2\n",
         r"field 'role' must be database or query; rows \[1, 2\]"),
        ("path,role,split,utm_east,utm_north\na.jpg,database,testing,1,2\n", r"field 'split'.*rows \[0\]"),
        ("path,role,utm_east,utm_north\na.jpg,database,1,2\nb.jpg,query,,2\nc.jpg,query,nan,2\n",
         r"'utm_east'/'utm_north' are NaN, infinite or missing in rows \[1, 2\]"),
        ("path,role,utm_east,utm_north\na.jpg,database,1,2\nb.jpg,query,east,2\n",
         r"field 'utm_east' is not a number in rows \[1\]"),
        ("path,role,utm_east,utm_north\na.jpg,database,1,2\nb.jpg,query,1,2\na.jpg,query,1,2\n",
         r"duplicate paths in split '': 'a.jpg' in rows \[0, 2\]"),
        ("path,role,label\na.jpg,database,1\nb.jpg,query,x\n", r"field 'label' is missing or not an integer in rows \[1\]"),
        ("path,role,label\na.jpg,database,1\n,query,1\n", r"field 'path' is empty in rows \[1\]"),
        ("path,role,role,label\na.jpg,database,database,1\n", r"\['role'\] appear more than once"),
        ('path,role,label\n"a.jpg,database,1\n', r"malformed CSV"),
        ("", r"empty CSV"),
    ],
)
def test_malformed_csv_names_file_field_and_rows(tmp_path, body, message):
    path = write_csv(tmp_path / "bad.csv", body)
    with pytest.raises(ValueError, match=message) as info:
        read_manifest_splits(path)
    assert "bad.csv" in str(info.value)


def test_duplicates_across_splits_are_fine_within_a_split_are_not(tmp_path):
    body = "path,role,split,utm_east,utm_north\ns/1.jpg,database,val,0,0\nw/1.jpg,query,val,0,0\n" \
           "s/1.jpg,database,test,0,0\nw/1.jpg,query,test,0,0\n"
    splits = read_manifest_splits(write_csv(tmp_path / "ok.csv", body))
    assert list(splits) == ["val", "test"] and splits["test"].db_paths == [str(tmp_path / "s/1.jpg")]


def test_malformed_parquet(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 but not really")
    with pytest.raises(ValueError, match="bad.parquet: not a readable Parquet"):
        read_manifest(bad)
    table = pa.table({"path": ["a.jpg", "b.jpg"], "role": ["database", "query"], "utm_east": [1.0, None],
                      "utm_north": [1.0, 2.0]})
    pq.write_table(table, tmp_path / "nan.parquet")
    with pytest.raises(ValueError, match=r"nan.parquet: fields 'utm_east'/'utm_north' are NaN, infinite or missing in rows \[1\]"):
        read_manifest(tmp_path / "nan.parquet")
    pq.write_table(table.drop(["utm_east", "utm_north"]).append_column("label", pa.array([1, None])),
                   tmp_path / "nolabel.parquet")
    with pytest.raises(ValueError, match=r"nolabel.parquet: field 'label'.*rows \[1\]"):
        read_manifest(tmp_path / "nolabel.parquet")
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match="must end in .csv or .parquet"):
        read_manifest(tmp_path / "x.txt")


def test_write_rejects_inconsistent_datasets(tmp_path):
    geo = PlaceDataset("g", ["a"], ["b"], db_utm=[[0.0, 0.0]], q_utm=[[0.0, 0.0]], split="test")
    lab = PlaceDataset("l", ["a"], ["b"], db_labels=[0], q_labels=[0], split="val")
    with pytest.raises(ValueError, match="share a split"):
        write_manifest(tmp_path / "m.parquet", [geo, geo])
    with pytest.raises(ValueError, match="either UTM or label"):
        write_manifest(tmp_path / "m.parquet", [geo, lab])
    twice = PlaceDataset("twice", ["a", "b"], ["a"], db_utm=[[0.0, 0.0]] * 2, q_utm=[[0.0, 0.0]], split="test")
    with pytest.raises(ValueError, match=r"twice: duplicate image paths in split 'test'.*'a' in rows \[0, 2\]"):
        write_manifest(tmp_path / "m.parquet", twice)
    with pytest.raises(ValueError, match="split must be one of"):
        manifest_table([PlaceDataset("g", ["a"], ["b"], db_utm=[[0.0, 0.0]], q_utm=[[0.0, 0.0]], split="dev")])


@pytest.fixture
def s3_bucket(monkeypatch):
    """A real S3 endpoint on loopback (moto's server) with an empty bucket; yields 's3://<bucket>'."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", f"http://{host}:{port}")):
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    boto3.client("s3").create_bucket(Bucket="sare-manifests")
    yield "s3://sare-manifests"
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.mark.parametrize("ext", ["parquet", "csv"])
def test_round_trip_on_s3(s3_bucket, ext):
    ds = PlaceDataset("remote", [f"{s3_bucket}/set/img/a.jpg", "/local/b.jpg"], [f"{s3_bucket}/set/q.jpg"],
                      db_utm=[[0.0, 0.0], [3.0, 4.0]], q_utm=[[0.0, 1.0]], split="val")
    write_manifest(f"{s3_bucket}/set/m.{ext}", ds)
    back = read_manifest(f"{s3_bucket}/set/m.{ext}", "val")
    assert_same(ds, back)
    import fsspec

    with fsspec.open(f"{s3_bucket}/set/m.{ext}", "rb") as fh:
        raw = fh.read()
    assert b"img/a.jpg" in raw and f"{s3_bucket}/set/img".encode() not in raw  # stored relative to the prefix
    with pytest.raises(FileNotFoundError):
        read_manifest(f"{s3_bucket}/set/none.{ext}")


def test_images_of_an_s3_manifest_are_checked_through_fsspec(s3_bucket, toy_street_images):
    import fsspec

    from sare_core.data import check_images

    with fsspec.open(f"{s3_bucket}/set/img/a.jpg", "wb") as fh:
        fh.write(toy_street_images[0].read_bytes())
    with fsspec.open(f"{s3_bucket}/set/img/broken.jpg", "wb") as fh:
        fh.write(b"not a jpeg")
    report = check_images([f"{s3_bucket}/set/img/a.jpg", f"{s3_bucket}/set/img/broken.jpg",
                           f"{s3_bucket}/set/img/gone.jpg"])
    assert report.missing == [f"{s3_bucket}/set/img/gone.jpg"]
    assert [p for p, _ in report.unreadable] == [f"{s3_bucket}/set/img/broken.jpg"]

"""Dataset summaries, the map PNG, and format detection (sources.open_splits)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sare_core.data import PlaceDataset, save_dbstruct, write_manifest
from sare_core.data.sources import detect_format, open_splits
from sare_core.data.summary import format_summary, is_sequence, plot_map, positives_histogram, summarize


@pytest.fixture(scope="module")
def tokyo(shared_data) -> PlaceDataset:
    gt = np.load(shared_data / "real_gt" / "tokyo247.npz")
    q_names = (shared_data / "real_gt" / "tokyo247_imageNames_query.txt").read_text().split()
    return PlaceDataset("tokyo247", [f"db/{i}.jpg" for i in range(len(gt["utmDb"]))], q_names,
                        db_utm=gt["utmDb"], q_utm=gt["utmQ"], split="test")


def test_summary_of_real_tokyo247(tokyo):
    s = summarize(tokyo)
    counts = np.array([len(p) for p in tokyo.positives()])
    assert (s.num_db, s.num_q, s.queries_without_positives) == (75984, 315, 0)
    assert (s.positives_min, s.positives_max) == (counts.min(), counts.max()) == (48, 240)
    assert s.positives_median == np.median(counts) and s.positives_mean == pytest.approx(counts.mean())
    assert sum(c for _, c in s.histogram) == 315 and dict(s.histogram)["0"] == 0
    assert s.unit == "m" and s.train_radius == 10.0
    text = format_summary([s])
    assert "75984" in text and "315" in text and "min 48" in text and "max 240" in text


def test_histogram_bins():
    hist = dict(positives_histogram(np.array([0, 0, 1, 2, 5, 6, 10, 11, 50, 51, 100, 101, 5000])))
    assert hist == {"0": 2, "1": 1, "2-5": 2, "6-10": 2, "11-20": 1, "21-50": 1, "51-100": 2, ">100": 2}


def test_map_png_geographic_sequence_and_labels(tmp_path, tokyo):
    far = PlaceDataset("with_orphans", tokyo.db_paths[:500], ["q0", "q1"], db_utm=tokyo.db_utm[:500],
                       q_utm=np.r_[tokyo.db_utm[:1], [[0.0, 0.0]]], split="val")
    out = plot_map({"test": tokyo, "val": far}, str(tmp_path / "maps" / "tokyo.png"))
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 100
    seq = PlaceDataset("seq", ["a", "b"], ["c"], db_utm=[[0.0, 0.0], [1.0, 0.0]], q_utm=[[1.0, 0.0]])
    assert is_sequence(seq) and not is_sequence(tokyo)
    assert summarize(seq).unit == "frames"
    lab = PlaceDataset("lab", ["a", "b"], ["c", "d"], db_labels=[1, 2], q_labels=[1, -1])
    plot_map({"": seq}, str(tmp_path / "seq.png"))
    plot_map({"": lab}, str(tmp_path / "lab.png"))
    assert (tmp_path / "seq.png").stat().st_size > 0 and (tmp_path / "lab.png").stat().st_size > 0
    assert summarize(lab).queries_without_positives == 1 and summarize(lab).train_radius is None


def test_detect_and_open_every_format(tmp_path, shared_data, tokyo):
    nordland = shared_data / "nordland_dev"
    assert detect_format(nordland) == "aligned"
    splits = open_splits(nordland, tolerance_frames=1)
    assert list(splits) == [""] and splits[""].pos_dist_thr == 1.0 and splits[""].db_paths[0].endswith(
        "summer/images-00180.png")
    small = PlaceDataset("tokyo_small", tokyo.db_paths[:2000], tokyo.q_paths, db_utm=tokyo.db_utm[:2000],
                         q_utm=tokyo.q_utm, split="test")
    save_dbstruct(tmp_path / "t.mat", small)
    assert detect_format(tmp_path / "t.mat") == "dbstruct" and open_splits(tmp_path / "t.mat")["test"].num_db == 2000
    write_manifest(tmp_path / "t.parquet", small)
    assert detect_format(tmp_path / "t.parquet") == "manifest"
    assert open_splits(tmp_path / "t.parquet")["test"].num_q == 315
    with pytest.raises(ValueError, match="not a dataset the readers recognise"):
        detect_format(shared_data / "real_gt")
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "nothing_here")


def test_detect_gsv_and_gldv2_folders(tmp_path, toy_street_images):
    from tests.sare_core.data.test_gldv2 import make_gld_root
    from tests.sare_core.data.test_gsv import make_gsv_split

    make_gsv_split(tmp_path / "gsv", "val", toy_street_images, np.c_[np.arange(17.0), np.ones(17)] * 1e5,
                   np.ones((5, 2)) * 1e5)
    assert detect_format(tmp_path / "gsv") == "gsv"
    splits = open_splits(tmp_path / "gsv")
    assert list(splits) == ["val"] and splits["val"].num_db == 17
    make_gld_root(tmp_path / "gld", toy_street_images)
    assert detect_format(tmp_path / "gld") == "gldv2"
    assert open_splits(tmp_path / "gld")["test"].num_q == 5

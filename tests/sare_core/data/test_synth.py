"""The synthetic city: files, ground truth, geography, determinism and the appearance properties that make it
a localisation problem (overlapping neighbours, night queries)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sare_core.data import load_dbstruct, positives_within
from sare_core.data.synth.city import city_is_current, generate_city, query_times
from sare_core.data.synth.layout import STRIP_RUNOUT_M, build_layout
from sare_core.data.synth.presets import PRESETS, SPLITS, get_preset
from sare_core.data.synth.streams import ImageStreams

TINY = get_preset("tiny")


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> dict:
    """The tiny city, seed 0, rendered in this process."""
    return generate_city(str(tmp_path_factory.mktemp("city")), preset="tiny", seed=0, workers=1)


@pytest.fixture(scope="module")
def splits(city) -> dict:
    root = city["out_dir"]
    return {s: load_dbstruct(city["mat"][s], db_root=root, q_root=root) for s in SPLITS}


def _digests(root: str) -> dict[str, str]:
    """sha256 of every image and .mat file under root, by relative path."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file() and path.suffix in (".jpg", ".mat"):
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _grey(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64)


def test_tiny_city_files_and_counts(city, splits):
    assert city["counts"] == {s: {"database": TINY.counts[s][0], "queries": TINY.counts[s][1]} for s in SPLITS}
    for split, dataset in splits.items():
        assert (dataset.num_db, dataset.num_q) == TINY.counts[split]
        assert dataset.split == split
        assert (dataset.pos_dist_thr, dataset.nontriv_pos_dist_sq_thr) == (25.0, 100.0)
        assert all(os.path.isfile(p) for p in dataset.db_paths + dataset.q_paths)
        with Image.open(dataset.q_paths[0]) as image:
            assert image.format == "JPEG" and image.size == TINY.image_size
    record = json.loads(Path(city["city_json"]).read_text())
    assert (record["preset"], record["seed"]) == ("tiny", 0)
    assert record["counts"] == city["counts"]
    assert sum(record["query_times"]["test"].values()) == TINY.counts["test"][1]


def test_mat_paths_are_relative_to_out_dir(city):
    stored = load_dbstruct(city["mat"]["val"])  # no roots: names as written
    assert all(not os.path.isabs(p) and p.startswith("images/val/database/") for p in stored.db_paths)
    assert all(p.startswith("images/val/queries/") for p in stored.q_paths)


def test_manifest_lists_every_split(city, splits):
    from sare_core.data.manifest import read_manifest_splits

    listed = read_manifest_splits(city["manifest"])
    assert sorted(listed) == sorted(SPLITS)
    for split, dataset in listed.items():
        assert (dataset.num_db, dataset.num_q) == TINY.counts[split]
        np.testing.assert_allclose(dataset.q_utm, splits[split].q_utm)
        assert os.path.normpath(dataset.db_paths[0]) == os.path.normpath(splits[split].db_paths[0])


def test_every_query_has_a_database_image_within_25_m(splits):
    for dataset in splits.values():
        positives = positives_within(dataset.q_utm, dataset.db_utm, 25.0)
        assert min(len(p) for p in positives) > 0


def test_splits_are_geographically_disjoint(splits):
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            pa = np.vstack([splits[a].db_utm, splits[a].q_utm])
            pb = np.vstack([splits[b].db_utm, splits[b].q_utm])
            gap = np.min(np.linalg.norm(pa[:, None, :] - pb[None, :, :], axis=2))
            assert gap > 1000.0, f"{a} and {b} come within {gap:.0f} m"


def test_same_seed_is_byte_identical_whatever_the_workers_and_batch(city, tmp_path):
    # two processes, and one image per render call instead of all of a chunk's
    again = generate_city(str(tmp_path / "again"), preset="tiny", seed=0, workers=2, batch_pixels=96 * 72)
    first, second = _digests(city["out_dir"]), _digests(again["out_dir"])
    assert len(first) == sum(sum(c) for c in TINY.counts.values()) + 3
    assert first == second


def test_another_seed_gives_another_city(city, splits, tmp_path):
    other = generate_city(str(tmp_path / "other"), preset="tiny", seed=1, workers=1)
    first, second = _digests(city["out_dir"]), _digests(other["out_dir"])
    assert first.keys() == second.keys()
    changed = sum(first[k] != second[k] for k in first)
    assert changed == len(first)
    moved = load_dbstruct(other["mat"]["test"])
    assert not np.allclose(moved.q_utm, splits["test"].q_utm)


def test_night_queries_are_darker_than_the_database(splits):
    dataset = splits["train"]
    times = np.array(query_times("tiny", 0, "train"))
    assert {"day", "night"} <= set(times.tolist())
    db_brightness = np.mean([_grey(p).mean() for p in dataset.db_paths])
    night = [_grey(p).mean() for p, t in zip(dataset.q_paths, times) if t == "night"]
    day = [_grey(p).mean() for p, t in zip(dataset.q_paths, times) if t == "day"]
    assert np.mean(night) < 0.6 * db_brightness
    assert np.mean(night) < 0.6 * np.mean(day)


def test_neighbouring_database_views_overlap(splits):
    """Same heading, places < 10 m apart: pixels correlate more than the same heading 100+ m apart, and
    an image's most correlated same-heading view of another place lies within 25 m well above chance."""
    dataset = splits["train"]
    count = dataset.num_db
    grey = np.stack([_grey(p).reshape(-1) for p in dataset.db_paths])
    grey = (grey - grey.mean(axis=1, keepdims=True)) / grey.std(axis=1, keepdims=True)
    corr = grey @ grey.T / grey.shape[1]
    dist = np.linalg.norm(dataset.db_utm[:, None] - dataset.db_utm[None], axis=2)
    place, view = np.arange(count) // TINY.views_per_place, np.arange(count) % TINY.views_per_place
    comparable = (view[:, None] == view[None, :]) & (place[:, None] != place[None, :])
    near, far = corr[comparable & (dist < 10.0)], corr[comparable & (dist > 100.0)]
    assert len(near) >= 20 and len(far) >= 20
    assert near.mean() > far.mean() + 0.05
    best = np.where(comparable, corr, -np.inf).argmax(axis=1)
    hit_rate = np.mean(dist[np.arange(count), best] <= 25.0)
    chance = np.mean(dist[comparable] <= 25.0)
    assert hit_rate > 2.0 * chance


def test_image_streams_do_not_depend_on_which_images_are_drawn_together():
    everything = ImageStreams(7, "val", "queries", np.arange(50))
    some = ImageStreams(7, "val", "queries", np.array([3, 41, 17]))
    np.testing.assert_array_equal(some.uniform(5), everything.uniform(5)[[3, 41, 17]])
    np.testing.assert_array_equal(some.normal(2), everything.normal(2)[[3, 41, 17]])
    assert not np.array_equal(everything.uniform(5), everything.uniform(6))
    assert not np.array_equal(everything.uniform(5), ImageStreams(8, "val", "queries", np.arange(50)).uniform(5))


def test_facade_strips_tile_their_streets_and_open_at_cross_streets():
    layout = build_layout(TINY, seed=0, split="val")
    bld = layout.buildings
    assert np.all(np.diff(bld.key0) > 0)
    for strip in np.unique(bld.strip):
        rows = np.flatnonzero(bld.strip == strip)
        street_length = layout.street_length[strip // 4]
        assert bld.x0[rows[0]] == -STRIP_RUNOUT_M and bld.x1[rows[-1]] == street_length + STRIP_RUNOUT_M
        np.testing.assert_array_equal(bld.x1[rows[:-1]], bld.x0[rows[1:]])  # no holes, no overlaps
        gaps = rows[bld.is_gap[rows]]
        if strip % 4 < 2:  # facades open where the cross streets meet this one; backdrops never do
            assert len(gaps) == len(layout.street_length) // 2
        else:
            assert len(gaps) == 0
        middle = 0.5 * (bld.x0[rows] + bld.x1[rows])
        np.testing.assert_array_equal(bld.lookup(np.full(len(rows), strip), middle), rows)


def test_presets_match_the_pittsburgh_counts():
    assert PRESETS["pitts30k"].counts == {"train": (10_000, 7_416), "val": (10_000, 7_608), "test": (10_000, 6_816)}
    assert PRESETS["pitts250k"].counts == {"train": (91_464, 7_824), "val": (78_648, 7_608),
                                           "test": (83_952, 8_280)}
    assert PRESETS["pitts250k"].views_per_place == 24


def test_bad_arguments_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic city preset"):
        generate_city(str(tmp_path / "x"), preset="huge")
    with pytest.raises(ValueError, match="workers"):
        generate_city(str(tmp_path / "y"), preset="tiny", workers=0)
    with pytest.raises(ValueError, match="batch_pixels"):
        generate_city(str(tmp_path / "z"), preset="tiny", batch_pixels=0)
    assert not any((tmp_path / name).exists() for name in "xyz")


def test_city_is_current_only_for_the_same_preset_parameters(city, tmp_path):
    import json
    import shutil

    assert city_is_current(city["out_dir"], "tiny", 0)
    assert not city_is_current(city["out_dir"], "tiny", 1)
    assert not city_is_current(str(tmp_path / "nothing"), "tiny", 0)
    copy = tmp_path / "older"
    shutil.copytree(city["out_dir"], copy)
    info = json.loads((copy / "city.json").read_text())
    info["parameters"]["counts"]["train"]["queries"] -= 1  # a city of an older preset definition
    (copy / "city.json").write_text(json.dumps(info))
    assert not city_is_current(str(copy), "tiny", 0)

"""`sare demo` end to end on the tiny city (the real pipeline: city, Ray Train, Ray Data, evaluation), and
its reuse of a city made with the same settings only."""

import json
import logging
import os

import pytest

from pipelines.demo import job as demo
from pipelines.demo.job import DemoConfig
from sare_core.models import load_model, model_hash
from sare_core.store import open_store

TINY_TRAIN = {
    "model": {"backbone": "tiny", "num_clusters": 8, "whitening_dim": 16, "image_size": [72, 96]},
    "epochs": 2, "chunk_size": 16, "negative_pool": 60, "num_negatives": 4, "batch_size": 2,
    "centroid_images": 40, "num_workers": 2, "val_ns": [1, 5], "select_n": 5,
    "lr_step_epochs": 1, "lr_gamma": 1e6,  # two epochs far apart: the demo must pick one on validation
}


def test_demo_end_to_end_on_the_tiny_city(tmp_path, ray_local, capsys, caplog):
    config = DemoConfig(out_dir=str(tmp_path / "demo"), preset="tiny", train=TINY_TRAIN, eval_ns=[1, 5],
                        locate_photos=3)
    summary = demo.run(config)

    printed = capsys.readouterr().out
    for row in ("off-the-shelf", "trained", "ratio trained/off-the-shelf"):
        assert row in printed
    assert "time by stage" in printed
    # It ends by locating test photos with the trained model and saying where they really were.
    assert "where 3 test photos were taken" in printed
    assert len(summary["located"]) == 3
    for row in summary["located"]:
        p, t = row["position"], row["truth"]
        assert row["error_m"] == pytest.approx(((p["utm_east"] - t["utm_east"]) ** 2
                                                + (p["utm_north"] - t["utm_north"]) ** 2) ** 0.5)
        assert os.path.basename(row["photo"]) in printed
    assert set(summary["recall@1"]) == {"off-the-shelf", "trained"}
    scored = json.loads((tmp_path / "demo" / "eval" / "eval.json").read_text())["results"]
    assert {n: scored[n]["recalls"]["1"] for n in scored} == summary["recall@1"]
    history = json.loads((tmp_path / "demo" / "runs" / "demo" / "history.json").read_text())["history"]
    recalls = {h["epoch"]: h["val_recall@5"] for h in history if h["epoch"] > 0}
    assert summary["best_epoch"] == max(recalls, key=lambda e: (recalls[e], -e))  # on validation, never epoch 0
    assert set(summary["stage_seconds"]) >= {"city", "test-area extraction (2 models)", "evaluation and report"}
    # each trained epoch's loss and gradient norms reach the summary as the history has them; epoch 0's NaN loss does not
    assert "loss" not in summary["epochs"][0]
    for row, h in zip(summary["epochs"][1:], history[1:]):
        assert {k: row[k] for k in ("loss", "grad_norm_median", "grad_norm_max", "clipped_steps")} == \
            {k: h[k] for k in ("loss", "grad_norm_median", "grad_norm_max", "clipped_steps")}
    out = tmp_path / "demo"
    for path in ("demo_summary.json", "eval/report.html", "eval/eval.json", "eval/recall_at_n.png",
                 "runs/demo/training_curves.png", "runs/demo/model.pt", "runs/demo/off_the_shelf_model.pt",
                 "index/index.json", "located/locate.json", "located/locate.html"):
        assert (out / path).is_file(), path
    assert json.loads((out / "demo_summary.json").read_text())["gain_recall@1"] == summary["gain_recall@1"]

    # A store the demo made with another model is replaced, not refused (e.g. a longer run selected
    # another epoch): here the trained store is refilled with the off-the-shelf model.
    off_model = str(out / "runs/demo/off_the_shelf_model.pt")
    demo._extract(config, str(out / "city/manifest.parquet"), {"trained": off_model},
                  {"trained": str(out / "stores/trained")}, "test")
    assert open_store(str(out / "stores/trained")).metadata.model_hash == model_hash(load_model(off_model))

    # Same settings: the city is reused and the finished run resumes without training again.
    checkpoints = sorted(p.name for p in (out / "runs" / "demo").glob("checkpoint_2*"))
    assert len(checkpoints) == 2  # two epochs
    caplog.set_level(logging.INFO, logger="pipelines.demo")
    again = demo.run(config)
    assert "reusing the synthetic city" in caplog.text
    assert sorted(p.name for p in (out / "runs" / "demo").glob("checkpoint_2*")) == checkpoints  # no new epoch
    assert again["recall@1"] == summary["recall@1"]


def test_a_city_made_with_other_settings_is_generated_again(tmp_path, caplog):
    config = DemoConfig(out_dir=str(tmp_path), preset="tiny")
    manifest = demo._city(config)
    marker = tmp_path / "city" / "city.json"
    info = json.loads(marker.read_text())
    info["parameters"]["counts"]["train"]["queries"] += 1  # as if made by an older preset
    marker.write_text(json.dumps(info))
    caplog.set_level(logging.INFO, logger="pipelines.demo")
    assert demo._city(config) == manifest
    assert "generating it again" in caplog.text
    assert json.loads(marker.read_text())["parameters"]["counts"]["train"]["queries"] == 32
    caplog.clear()
    demo._city(config)
    assert "reusing the synthetic city" in caplog.text


def test_a_training_run_made_with_other_settings_is_trained_again(tmp_path, caplog):
    from pipelines.train.driver import RUN_CONFIG_FILE, resolved, run_dir

    config = DemoConfig(out_dir=str(tmp_path), preset="tiny", train=TINY_TRAIN)
    directory = run_dir(resolved(config.train))
    os.makedirs(os.path.join(directory, "checkpoint_2026-12-02_10-00-00.000000"))
    recorded = {**resolved(config.train).model_dump(mode="json"), "epochs": 9}  # only a resumable change
    with open(os.path.join(directory, RUN_CONFIG_FILE), "w") as f:
        json.dump(recorded, f)
    assert not demo.drop_stale_training_run(config.train) and os.path.isdir(directory)  # resumed, kept

    recorded["lr"] = 0.5  # earlier demo settings
    with open(os.path.join(directory, RUN_CONFIG_FILE), "w") as f:
        json.dump(recorded, f)
    caplog.set_level(logging.INFO, logger="pipelines.demo")
    assert demo.drop_stale_training_run(config.train) and not os.path.exists(directory)
    assert "other settings (lr: 0.5 -> 0.001); training again" in caplog.text

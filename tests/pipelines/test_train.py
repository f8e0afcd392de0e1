"""Training through Ray Train on the synthetic city's tiny preset: a run, its resumption, and a worker
killed mid-run (FailureConfig restarts from the last checkpoint)."""

import json
import os
import signal
import threading
import time

import pytest
import torch

from pipelines.train import run
from pipelines.train_config import TrainConfig
from sare_core.models import load_model


def tiny_config(city, storage, name, **kw) -> TrainConfig:
    base = dict(
        name=name, storage_path=str(storage), dataset=str(city / "manifest.parquet"),
        model={"backbone": "tiny", "num_clusters": 8, "whitening_dim": 32, "image_size": [72, 96]},
        epochs=2, chunk_size=16, negative_pool=60, num_negatives=4, batch_size=2, centroid_images=40,
        num_workers=2, val_ns=[1, 5, 10],
    )
    base.update(kw)
    return TrainConfig(**base)


def test_train_then_resume(tiny_city, tmp_path, ray_local, capsys):
    config = tiny_config(tiny_city, tmp_path, "run", epochs=1)
    first = run(config)
    assert [h["epoch"] for h in first.history] == [0, 1]
    printed = capsys.readouterr().out
    assert "off-the-shelf" in printed and "ratio" in printed
    model = load_model(first.model_path)
    assert model.descriptor_dim == 32 and model.whitening is not None
    assert os.path.isfile(os.path.join(first.run_dir, "training_curves.png"))
    # The same run with more epochs resumes from its last checkpoint: epoch 1 is not trained again.
    second = run(config.model_copy(update={"epochs": 2}))
    assert [h["epoch"] for h in second.history] == [0, 1, 2]
    assert second.history[1] == first.history[1]
    saved = json.loads(open(os.path.join(second.run_dir, "history.json")).read())
    assert saved["best_epoch"] in (1, 2)
    assert second.history[2]["tuples"] > 0 and second.history[2]["loss"] > 0


def test_killed_worker_restarts_from_last_checkpoint(tiny_city, tmp_path, ray_local):
    pid_dir = tmp_path / "pids"
    config = tiny_config(tiny_city, tmp_path, "killed", epochs=3, pid_dir=str(pid_dir), max_failures=2)
    killed = {}

    def kill_rank1_after_first_checkpoint():
        deadline = time.time() + 240
        while time.time() < deadline:
            ckpts = [d for d in os.listdir(tmp_path / "killed")] if (tmp_path / "killed").is_dir() else []
            if any(d.startswith("checkpoint_") for d in ckpts) and (pid_dir / "rank1.pid").is_file():
                pid = int((pid_dir / "rank1.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.2)

    thread = threading.Thread(target=kill_rank1_after_first_checkpoint, daemon=True)
    thread.start()
    result = run(config)
    thread.join(timeout=5)
    assert killed, "the worker was never killed"
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    # The restarted worker group wrote new PIDs.
    assert int((pid_dir / "rank1.pid").read_text()) != killed["pid"]
    assert torch.isfinite(torch.tensor([h["loss"] for h in result.history[1:]])).all()


def test_bad_config_fails_before_work(tiny_city, tmp_path):
    with pytest.raises(ValueError, match="no split"):
        run(tiny_config(tiny_city, tmp_path, "bad", train_split="training"))
    with pytest.raises(ValueError, match="select_n"):
        tiny_config(tiny_city, tmp_path, "bad", select_n=3)

"""Training through Ray Train on the synthetic city's tiny preset: a run, its resumption, and a worker
killed mid-run (FailureConfig restarts from the last checkpoint)."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from pipelines.train.driver import run
from sare_core.data import open_splits
from sare_core.mining import GroundTruthForTraining, load_mining_record
from sare_core.models import embed_paths, load_model
from sare_core.models.io import model_from_payload
from sare_core.training.checkpoint import CHECKPOINT_FILE
from sare_core.training.config import TrainConfig


def tiny_config(city, storage, name, **kw) -> TrainConfig:
    base = dict(
        name=name, storage_path=str(storage), dataset=str(city / "manifest.parquet"),
        model={"backbone": "tiny", "num_clusters": 8, "whitening_dim": 32, "image_size": [72, 96]},
        epochs=2, chunk_size=16, negative_pool=60, num_negatives=4, batch_size=2, centroid_images=40,
        num_workers=2, val_ns=[1, 5, 10],
    )
    base.update(kw)
    return TrainConfig(**base)


def audit_mining(record_path: str, mining_model, train, check_hardness: bool) -> int:
    """Check one chunk's mined tuples on the city's geometry: each positive within 10 m of its query and,
    in descriptor space, the nearest potential positive; each query's negatives beyond 25 m, members of its
    pool, and (check_hardness) its hardest. Descriptors are recomputed here with `mining_model`, the model the
    workers mined with; 1e-4 absorbs their different batching. Returns the number of tuples checked."""
    pools, tuples = load_mining_record(record_path)
    assert len(tuples) > 0
    assert train.pos_dist_thr == 25.0 and train.nontriv_pos_dist_sq_thr == 100.0
    q_desc = embed_paths(mining_model, train.q_paths, batch_size=16)
    db_desc = embed_paths(mining_model, train.db_paths, batch_size=16)
    gt = GroundTruthForTraining.from_dataset(train)
    def sq_dist(rows, q):
        return ((db_desc[rows] - q_desc[q]) ** 2).sum(1)

    for q, p, negs in zip(tuples.queries, tuples.positives, tuples.negatives):
        assert np.linalg.norm(train.db_utm[p] - train.q_utm[q]) <= 10.0
        assert (np.linalg.norm(train.db_utm[negs] - train.q_utm[q], axis=1) > 25.0).all()
        assert len(set(negs.tolist())) == len(negs) and set(negs.tolist()) <= set(pools[int(q)].tolist())
        if check_hardness:
            assert sq_dist([p], q)[0] <= sq_dist(gt.potential_positives[q], q).min() + 1e-4
            kth = np.sort(sq_dist(pools[int(q)], q))[len(negs) - 1]
            assert sq_dist(negs, q).max() <= kth + 1e-4
    return len(tuples)


def test_train_then_resume(tiny_city, tmp_path, ray_local, capsys):
    config = tiny_config(tiny_city, tmp_path, "run", epochs=1, mining_log_dir=str(tmp_path / "mining"))
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

    # The distributed mining on the city: epoch 1 mined with the k-means model, epoch 2 (after the resume)
    # with epoch 1's checkpoint; a chunk after the first of an epoch mined with a model not kept, so only its
    # geometry is checked. Hard negatives of epoch 1 are in the query's epoch-2 pool.
    train = open_splits(config.dataset)["train"]
    records = sorted(os.listdir(tmp_path / "mining"))
    assert {r[:8] for r in records} == {"epoch001", "epoch002"}
    epoch1_ckpt = sorted(d for d in os.listdir(first.run_dir) if d.startswith("checkpoint_"))[0]
    saved = torch.load(os.path.join(first.run_dir, epoch1_ckpt, CHECKPOINT_FILE), weights_only=True)
    mining_models = {"epoch001": load_model(first.initial_model_path),
                     "epoch002": model_from_payload(saved["model"])}
    checked = sum(audit_mining(str(tmp_path / "mining" / r), mining_models[r[:8]], train, r.endswith("chunk000.npz"))
                  for r in records)
    assert checked >= first.history[1]["tuples"] + second.history[2]["tuples"]  # mined >= trained (whole batches)
    pools2 = {}
    for r in records:
        if r.startswith("epoch002"):
            pools2.update(load_mining_record(str(tmp_path / "mining" / r))[0])
    carried = 0
    for r in records:
        if r.startswith("epoch001"):
            tuples1 = load_mining_record(str(tmp_path / "mining" / r))[1]
            for q, negs in zip(tuples1.queries, tuples1.negatives):
                if int(q) in pools2:
                    assert set(negs.tolist()) <= set(pools2[int(q)].tolist())
                    carried += 1
    assert carried > 0  # both epochs walk the same training queries


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

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

from pipelines.train.driver import RUN_CONFIG_FILE, RunSettingsChanged, best_epoch, run, settings_changed
from sare_core.data import open_splits
from sare_core.mining import GroundTruthForTraining, load_mining_record
from sare_core.models import embed_paths, load_model, model_hash
from sare_core.models.io import model_from_payload
from sare_core.training.checkpoint import CHECKPOINT_FILE, checkpoints_by_epoch
from sare_core.training.collective import MAX_SLOWNESS
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
    # conv1 frozen: the DDP workers train through their frozen-feature caches (checked below).
    config = tiny_config(tiny_city, tmp_path, "run", epochs=1, mining_log_dir=str(tmp_path / "mining"),
                         model={"backbone": "tiny", "num_clusters": 8, "whitening_dim": 32, "image_size": [72, 96],
                                "train_from": "conv2"})
    first = run(config)
    assert [h["epoch"] for h in first.history] == [0, 1]
    printed = capsys.readouterr().out
    assert "off-the-shelf" in printed and "ratio" in printed
    model = load_model(first.model_path)
    assert model.descriptor_dim == 32 and model.whitening is not None
    assert os.path.isfile(os.path.join(first.run_dir, "training_curves.png"))
    # The same run with more epochs resumes from its last checkpoint: epoch 1 is not trained again. (Shares
    # weighted by the workers' speed may be switched on for the rest: a scheduling setting.)
    second = run(config.model_copy(update={"epochs": 2, "balance_by_speed": True}))
    assert [h["epoch"] for h in second.history] == [0, 1, 2]
    # On this one-node cluster the runs went without Ray Train's preemption watcher (ray_session.ONE_NODE_TRAIN_ENV)
    classes = {a["ActorClassName"] for a in ray_local._private.state.actors().values()}
    assert "RayTrainWorker" in classes and "PreemptionWatcher" not in classes, classes
    # Other settings on the same run folder are refused before any work, naming what changed; without
    # run_config.json (a run from before it) history.json's settings are compared.
    changed = config.model_copy(update={"epochs": 3, "lr": config.lr * 2, "model": config.model.model_copy(
        update={"num_clusters": 4})})
    with pytest.raises(RunSettingsChanged, match=r"lr: 0\.001 -> 0\.002; model\.num_clusters: 8 -> 4\).*name="):
        run(changed)
    os.remove(os.path.join(second.run_dir, RUN_CONFIG_FILE))
    assert settings_changed(changed) == ["lr: 0.001 -> 0.002", "model.num_clusters: 8 -> 4"]
    assert settings_changed(config.model_copy(update={"epochs": 5, "num_workers": 1})) == []
    assert second.history[1] == first.history[1]
    saved = json.loads(open(os.path.join(second.run_dir, "history.json")).read())
    assert saved["best_epoch"] == best_epoch(second.history, config.select_n)
    assert second.history[2]["tuples"] > 0 and second.history[2]["loss"] > 0
    # Re-mining's time and compute, timed inside the epoch: the forward passes are part of the embedding,
    # the embedding part of re-mining, and the compute share lies strictly between 0 and 1.
    row = second.history[2]
    assert 0 < row["mining_forward_seconds"] <= row["mining_embed_seconds"] <= row["mining_seconds"] < row["seconds"]
    forwards, embeds = row["mining_forward_seconds_by_worker"], row["mining_embed_seconds_by_worker"]
    assert len(forwards) == len(embeds) == config.num_workers and all(0 < f <= e for f, e in zip(forwards, embeds))
    assert embeds[0] == round(row["mining_embed_seconds"], 3) and sum(row["mined_cached_images_by_worker"]) == \
        row["mined_cached_images"]
    # epoch 1 split equally; epoch 2's later chunks by the paces both workers timed (the fastest 100)
    assert second.history[1]["mining_slowness_by_worker"] is None
    slowness = row["mining_slowness_by_worker"]
    assert len(slowness) == config.num_workers and min(slowness) == 100 and max(slowness) <= MAX_SLOWNESS
    assert 0 < row["step_compute_seconds"] < row["seconds"] and row["step_load_seconds"] > 0
    assert 0 < row["mining_compute_share"] < 1 and 0 < row["mining_fraction"] < 1
    # Epoch 2 re-mines and trains on images epoch 1 (before the resume: a new cache) or its own re-mining saw.
    assert 0 < row["trained_cached_images"] <= row["trained_images"] and row["frozen_cache_images"] > 0
    # ... and the two workers handed each other the maps they computed (train.frozen_cache_shared, on)
    assert row["frozen_cache_adopted"] > 0

    # The distributed mining on the city: epoch 1 mined with the k-means model, epoch 2 (after the resume)
    # with epoch 1's checkpoint; a chunk after the first of an epoch mined with a model not kept, so only its
    # geometry is checked. Hard negatives of epoch 1 are in the query's epoch-2 pool.
    train = open_splits(config.dataset)["train"]
    records = sorted(os.listdir(tmp_path / "mining"))
    assert {r[:8] for r in records} == {"epoch001", "epoch002"}
    epoch1_ckpt = checkpoints_by_epoch(first.run_dir)[1]
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


def test_best_epoch_is_the_highest_validation_recall_of_a_trained_epoch():
    history = [{"epoch": 0, "val_recall@5": 0.9}, {"epoch": 1, "val_recall@5": 0.5},
               {"epoch": 2, "val_recall@5": 0.7}, {"epoch": 3, "val_recall@5": 0.7}, {"epoch": 4, "val_recall@5": 0.2}]
    assert best_epoch(history, 5) == 2  # a middle epoch; ties go to the earlier; epoch 0 is never chosen


def test_the_best_validation_epoch_is_selected_and_model_pt_holds_its_weights(tiny_city, tmp_path, ray_local):
    """Three epochs, the last at a million times the learning rate; the selected epoch is the one of the
    best validation Recall@1 (on this city a middle one: epoch 2), and model.pt holds exactly its weights,
    not the last epoch's."""
    config = tiny_config(tiny_city, tmp_path, "select", epochs=3, lr_step_epochs=2, lr_gamma=1e6, select_n=1,
                         num_workers=1, model={"backbone": "tiny", "num_clusters": 8, "whitening_dim": None,
                                               "image_size": [72, 96]})
    result = run(config)
    recalls = {h["epoch"]: h["val_recall@1"] for h in result.history if h["epoch"] > 0}
    assert result.best_epoch == max(recalls, key=lambda e: (recalls[e], -e))
    by_epoch = {epoch: model_hash(model_from_payload(torch.load(os.path.join(folder, CHECKPOINT_FILE),
                                                                 weights_only=True)["model"]))
                for epoch, folder in checkpoints_by_epoch(result.run_dir).items()}
    assert sorted(by_epoch) == [1, 2, 3] and len(set(by_epoch.values())) == 3
    final = model_hash(load_model(result.model_path))
    assert final == by_epoch[result.best_epoch]
    assert [e for e, h in by_epoch.items() if h == final] == [result.best_epoch]


def test_a_nonfinite_loss_on_one_worker_is_skipped_on_all_and_counted(tiny_city, tmp_path, ray_local):
    config = tiny_config(tiny_city, tmp_path, "nan", epochs=1, inject_nonfinite=[(1, 1, 0), (1, 1, 2)])
    result = run(config)
    row = result.history[1]
    assert row["nonfinite_steps"] == 2 and np.isfinite(row["loss"])
    # Both workers skipped both steps (DDP would hang if only rank 1 did), and trained the others.
    assert row["skipped_steps_by_worker"] == [2, 2]
    assert row["tuples"] > 0 and row["tuples"] % (config.num_workers * config.batch_size) == 0
    # Past the stated limit the run stops with an error that says why.
    limited = tiny_config(tiny_city, tmp_path, "nan_limit", epochs=1, inject_nonfinite=[(0, 1, 0), (1, 1, 1)],
                          max_nonfinite_steps=1, max_failures=0)
    with pytest.raises(Exception, match="non-finite loss"):
        run(limited)


def test_killed_worker_restarts_from_last_checkpoint(tiny_city, tmp_path, ray_local):
    pid_dir = tmp_path / "pids"
    # Four epochs and a kill 0.2 s after epoch 1's reports: on a fast host an epoch of the tiny city takes
    # about half a second, and a kill that lands after the last epoch tests nothing (said below if it does).
    config = tiny_config(tiny_city, tmp_path, "killed", epochs=4, pid_dir=str(pid_dir), max_failures=2)
    killed = {}

    def kill_rank1_after_first_checkpoint():
        deadline = time.time() + 240
        log = pid_dir / "epochs.log"
        while time.time() < deadline:
            reported = [line.split()[:3] for line in log.read_text().splitlines()] if log.is_file() else []
            if sum(epoch == "1" for _, _, epoch in reported) == 2:  # both ranks reported epoch 1 (checkpointed)
                time.sleep(0.2)  # into epoch 2
                pid = int((pid_dir / "rank1.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                killed["last_epoch_reported"] = max(int(epoch) for _, _, epoch in
                                                    (line.split()[:3] for line in log.read_text().splitlines()))
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill_rank1_after_first_checkpoint, daemon=True)
    thread.start()
    result = run(config)
    thread.join(timeout=5)
    assert killed, "the worker was never killed"
    assert killed["last_epoch_reported"] < 4, f"the kill came after the last epoch: {killed}"
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3, 4]
    # The restarted worker group wrote new PIDs.
    assert int((pid_dir / "rank1.pid").read_text()) != killed["pid"]
    assert torch.isfinite(torch.tensor([h["loss"] for h in result.history[1:]])).all()
    # Epochs finished before the kill are not trained again: epoch 1 was reported once per rank, by the
    # workers that lived before the kill; the restarted workers started after the last checkpoint.
    reports = [line.split()[:3] for line in (pid_dir / "epochs.log").read_text().splitlines()]
    first_group = {pid for rank, pid, epoch in reports if epoch == "0"}
    assert killed["pid"] in {int(p) for p in first_group}
    epoch1 = [(rank, pid) for rank, pid, epoch in reports if epoch == "1"]
    assert sorted(rank for rank, _ in epoch1) == ["0", "1"] and {pid for _, pid in epoch1} <= first_group
    restarted = {pid for rank, pid, epoch in reports if pid not in first_group}
    assert restarted and not [e for rank, pid, e in reports if pid in restarted and e in ("0", "1")]
    assert [e for rank, pid, e in reports if pid in restarted and rank == "0"][-1] == "4"


def test_settings_recorded_by_another_version_are_compared_on_the_fields_both_have(tiny_city, tmp_path, caplog):
    config = tiny_config(tiny_city, tmp_path, "old")
    os.makedirs(tmp_path / "old")
    recorded = {**config.model_dump(mode="json"), "lr": 0.005, "a_field_since_removed": 1}
    (tmp_path / "old" / RUN_CONFIG_FILE).write_text(json.dumps(recorded))
    assert settings_changed(config) == ["lr: 0.005 -> 0.001"]
    assert "not valid for this version" in caplog.text and "a_field_since_removed" in caplog.text


def test_bad_config_fails_before_work(tiny_city, tmp_path):
    with pytest.raises(ValueError, match="no split"):
        run(tiny_config(tiny_city, tmp_path, "bad", train_split="training"))
    with pytest.raises(ValueError, match="select_n"):
        tiny_config(tiny_city, tmp_path, "bad", select_n=3)

"""A trial Tune restored from a checkpoint reports only the epochs after the restore; the sweep's epoch rows
and its best epoch come from the checkpoint's history for the epochs before it."""

import math

from pipelines.tune.results import _with_checkpoint_history
from sare_core.models import ModelConfig, build_model
from sare_core.training.checkpoint import TrainingState, save_checkpoint
from sare_core.training.config import TrainConfig


def _history(epochs: int) -> list[dict]:
    rows = [{"epoch": 0, "loss": math.nan, "val_recall@1": 0.3, "val_recall@5": 0.5}]
    return rows + [{"epoch": e, "loss": 2.0 - e / 10, "val_recall@1": [0.6, 0.4, 0.5][e - 1], "val_recall@5": 0.8}
                   for e in range(1, epochs + 1)]


def _checkpoint_after(epochs: int, trial_dir: str) -> None:
    """A trial's training checkpoint after `epochs` epochs, holding their history."""
    state = TrainingState.start(build_model(ModelConfig(backbone="tiny", num_clusters=4, whitening_dim=None)),
                                TrainConfig(dataset="-"))
    state.epoch, state.history = epochs, _history(epochs)
    save_checkpoint(f"{trial_dir}/train/checkpoint_2026-12-02_10-00-00.000000", state)


def test_epochs_reported_before_a_restore_are_read_from_the_checkpoint(tmp_path):
    trial_dir = str(tmp_path / "trial_00000")
    _checkpoint_after(3, trial_dir)
    reported = [{"trial": "trial_00000", "epoch": 3, "loss": 1.7, "val_recall@1": 0.5, "val_recall@5": 0.8,
                 "val_store": f"{trial_dir}/val/epoch_003", "checkpoint": None}]  # the call after the restore

    rows = _with_checkpoint_history(reported, trial_dir, "trial_00000")

    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert [r["val_recall@1"] for r in rows] == [0.3, 0.6, 0.4, 0.5]  # epoch 1, lost from Tune's log, is the best
    assert rows[0]["loss"] is None and rows[1]["loss"] == 1.9 and rows[3] is reported[0]
    assert rows[1]["val_store"] == f"{trial_dir}/val/epoch_001" and rows[1]["trial"] == "trial_00000"
    assert rows[3]["checkpoint"] is None and rows[2]["checkpoint"] is None  # only epoch 3's folder exists


def test_epochs_after_the_last_report_are_not_added(tmp_path):
    # A trial the scheduler stopped after epoch 1 may finish epoch 2 before it ends: that epoch was never
    # reported, so it is not the trial's.
    trial_dir = str(tmp_path / "trial_00002")
    _checkpoint_after(2, trial_dir)
    reported = [{"trial": "trial_00002", "epoch": e, "val_recall@1": 0.1} for e in (0, 1)]
    assert _with_checkpoint_history(reported, trial_dir, "trial_00002") == reported


def test_complete_rows_are_left_as_they_are_without_reading_a_checkpoint(tmp_path):
    reported = [{"trial": "t", "epoch": e, "val_recall@1": 0.1 * e} for e in range(3)]
    assert _with_checkpoint_history(reported, str(tmp_path / "no_such_trial"), "t") == reported

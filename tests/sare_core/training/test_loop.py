"""The collapse warning: an epoch validating well below the initial model is flagged, with its gradient norms."""

import pytest
import torch

from sare_core.data import open_splits
from sare_core.models import ModelConfig, build_model
from sare_core.training.checkpoint import TrainingState
from sare_core.training.config import TrainConfig
from sare_core.training.loop import COLLAPSE_RATIO, collapse_warning, run_epochs

MODEL = {"backbone": "tiny", "num_clusters": 8, "whitening_dim": None, "image_size": [72, 96], "train_from": "conv3"}

INITIAL = {"epoch": 0, "loss": float("nan"), "val_recall@1": 0.53, "val_recall@5": 0.8}


def test_an_epoch_far_below_the_initial_model_is_flagged_with_its_figures():
    row = {"epoch": 1, "val_recall@1": 0.415, "val_recall@5": 0.78, "grad_norm_median": 10.2, "grad_norm_max": 19.0}
    warning = collapse_warning(INITIAL, row, select_n=1)
    assert warning is not None
    for part in ("epoch 1", "Recall@1 0.415", "22% below", "0.530", "median 10.2", "max 19", "max_grad_norm"):
        assert part in warning, part
    assert collapse_warning(INITIAL, row, select_n=5) is None  # R@5 fell by 2.5% only


def test_the_threshold_is_the_collapse_ratio_of_the_initial_recall():
    just_above = {"epoch": 2, "val_recall@1": COLLAPSE_RATIO * 0.53 + 1e-9}
    just_below = {"epoch": 2, "val_recall@1": COLLAPSE_RATIO * 0.53 - 1e-3}
    assert collapse_warning(INITIAL, just_above, 1) is None
    assert collapse_warning(INITIAL, just_below, 1) is not None
    assert "nan" in collapse_warning(INITIAL, just_below, 1)  # a row without gradient norms still warns


def test_nothing_to_compare_gives_no_warning():
    assert collapse_warning({"epoch": 0, "val_recall@1": 0.0}, {"epoch": 1, "val_recall@1": 0.0}, 1) is None
    assert collapse_warning({"epoch": 0}, {"epoch": 1, "val_recall@1": 0.1}, 1) is None


@pytest.mark.parametrize("epoch1_recall, warns", [(0.3, True), (0.5, False)])
def test_a_run_logs_the_warning_when_validation_falls(tiny_city, caplog, epoch1_recall, warns):
    config = TrainConfig(dataset=str(tiny_city / "manifest.parquet"), model=MODEL, epochs=1, chunk_size=16,
                         max_train_queries=16, negative_pool=30, num_negatives=3, batch_size=4, val_ns=[1], select_n=1)
    splits = open_splits(str(tiny_city / "manifest.parquet"))
    torch.manual_seed(0)
    recalls = {0: 0.5, 1: epoch1_recall}  # stands in for validation only; training runs for real
    caplog.set_level("WARNING", logger="sare_core.training.loop")
    run_epochs(TrainingState.start(build_model(ModelConfig(**MODEL)), config), config, splits["train"],
               splits["val"], lambda row, state: None, validate_fn=lambda model, epoch: {"val_recall@1": recalls[epoch]})
    warnings = [r.getMessage() for r in caplog.records if "below the initial model" in r.getMessage()]
    assert len(warnings) == int(warns)
    if warns:
        assert "epoch 1: validation Recall@1 0.300 is 40% below" in warnings[0] and "gradient norm median" in warnings[0]

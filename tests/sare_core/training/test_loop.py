"""The collapse warning: an epoch validating well below the initial model is flagged, with its gradient norms."""

from sare_core.training.loop import COLLAPSE_RATIO, collapse_warning

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

"""A training run's epochs, in one function for every way training runs: `run_epochs` trains from the
state it is given (new, or restored from a checkpoint) to `config.epochs`, validating after each epoch
(and once before the first, epoch 0 = the initial model) and handing each epoch's row to `report`.

The Ray Train worker (`pipelines.train.worker`) calls it with a DDP collective and a `report` that saves a
checkpoint and reports to Ray Train; the single-process diagnostic (`benchmarks/train_diagnostic.py`) calls
it with the local collective.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..data.place_dataset import PlaceDataset
from ..losses import LossSpec, build_loss
from ..mining import GroundTruthForTraining
from ..models.frozen_cache import FrozenFeatureCache
from .checkpoint import TrainingState
from .collective import LocalCollective
from .config import TrainConfig
from .epoch import train_epoch
from .tuples import TupleImages
from .validation import validate

log = logging.getLogger(__name__)

Report = Callable[[dict, TrainingState], None]


def loss_function(config: TrainConfig):
    """The configured loss as a function of (q (B, D), p (B, D), n (B, N, D))."""
    loss = config.loss
    return build_loss(LossSpec(name=loss.name, kernel=loss.kernel, margin=loss.margin, temperature=loss.temperature))


COLLAPSE_RATIO = 0.9  # an epoch validating below this fraction of the initial model is flagged


def collapse_warning(initial: dict, row: dict, select_n: int) -> str | None:
    """A warning when epoch `row` validates (Recall@select_n) below COLLAPSE_RATIO of the initial model
    (`initial`, epoch 0's row), else None. Training that loses what the pretrained model knew this early
    usually steps too far (learning rate, or a long gradient: see the row's grad_norm_*)."""
    key = f"val_recall@{select_n}"
    if key not in initial or key not in row or not initial[key] > 0 or row[key] >= COLLAPSE_RATIO * initial[key]:
        return None
    return (f"epoch {row['epoch']}: validation Recall@{select_n} {row[key]:.3f} is {1 - row[key] / initial[key]:.0%} "
            f"below the initial model's {initial[key]:.3f}; training may be diverging (gradient norm median "
            f"{row.get('grad_norm_median', float('nan')):.3g}, max {row.get('grad_norm_max', float('nan')):.3g}): "
            "a lower train.lr or a train.max_grad_norm near the median may hold it")


def frozen_cache(model, config: TrainConfig, device) -> FrozenFeatureCache | None:
    """This worker's frozen-feature cache for `model`, or None where it is off or cannot apply (no frozen
    layers, or images of varying size)."""
    if not config.frozen_cache_mb or model.config.image_size is None or not len(list(model.backbone.frozen.children())):
        return None
    return FrozenFeatureCache(model.backbone.frozen, config.frozen_cache_mb * 2**20, device)


def run_epochs(state: TrainingState, config: TrainConfig, train: PlaceDataset, val: PlaceDataset, report: Report,
               collective: LocalCollective | None = None, forward: torch.nn.Module | None = None,
               validate_fn: Callable | None = None) -> TrainingState:
    """Train `state` until epoch `config.epochs`; returns it. Each epoch's row (the training figures of
    `train_epoch` and the validation recalls) is appended to `state.history` and passed to `report`
    (epoch 0, the initial model's validation, only when the state is new).

    forward: the module training steps run through (a DDP wrapper); validate_fn(model, epoch) -> metrics
    replaces the default validation (`validation.validate` on `val`).
    """
    collective = collective or LocalCollective()
    model = state.model
    model.backbone.freeze_batchnorm = config.freeze_batchnorm
    gt = GroundTruthForTraining.from_dataset(train)
    collective.frozen_cache = frozen_cache(model, config, collective.device)
    collective.balance_by_speed = config.balance_by_speed
    collective.share_cache = config.frozen_cache_shared
    images = TupleImages(train, model.preprocessor, config.color_jitter, config.seed * 1000 + collective.rank,
                         cache=collective.frozen_cache)
    loss_fn = loss_function(config)

    def validation(epoch: int) -> dict:
        if validate_fn is not None:
            return validate_fn(model, epoch)
        return validate(model, val, config, epoch, collective)

    if state.epoch == 0 and not state.history:
        row = {"epoch": 0, "loss": float("nan"), **validation(0)}
        state.history.append(row)
        report(row, state)
    for epoch in range(state.epoch + 1, config.epochs + 1):
        row = train_epoch(state, config, train, gt, images, loss_fn, epoch, collective, forward)
        if collective.frozen_cache is not None:  # this worker's
            row.update({f"frozen_cache_{k}": v for k, v in collective.frozen_cache.stats().items()})
        row.update(validation(epoch))
        state.epoch = epoch
        state.history.append(row)
        if collective.rank == 0:
            log.info("epoch %d: loss %.4f, val %s, %.1f tuples/s, mining %.0f%% of the epoch, gradient norm "
                     "median %.3g max %.3g (%d steps clipped)", epoch, row["loss"],
                     {k: round(v, 4) for k, v in row.items() if k.startswith("val_recall@")}, row["tuples_per_s"],
                     100 * row["mining_fraction"], row["grad_norm_median"], row["grad_norm_max"], row["clipped_steps"])
            warning = collapse_warning(state.history[0], row, config.select_n) if state.history[0]["epoch"] == 0 else None
            if warning:
                log.warning(warning)
        report(row, state)
    return state

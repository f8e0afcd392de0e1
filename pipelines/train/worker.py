"""The Ray Train side of a training run: what each DDP worker of the TorchTrainer runs (NCCL on GPUs, gloo
on CPUs). A thin adapter around `sare_core.training.loop.run_epochs`: it restores the state from Ray
Train's latest checkpoint (or starts from the initial model), wraps the model in DDP, and after every epoch
saves the checkpoint (rank 0) and reports the epoch's row to Ray Train (Tune, when a sweep drives it)."""

from __future__ import annotations

import logging
import os
import tempfile

import ray
import ray.train
import ray.train.torch
import torch

from sare_core.allocator import keep_freed_memory
from sare_core.data.sources import open_splits
from sare_core.models.io import load_model
from sare_core.paths import join
from sare_core.training.checkpoint import (
    TrainingState,
    checkpoints_by_epoch,
    load_state,
    place_optimizer_state,
    save_checkpoint,
)
from sare_core.training.collective import collective_for
from sare_core.training.config import TrainConfig
from sare_core.training.loop import run_epochs

log = logging.getLogger(__name__)


def _resumed_state(config: TrainConfig, rank: int) -> TrainingState | None:
    """The state of the run's latest checkpoint: the newer of Ray Train's (a worker group restarted after
    a failure) and the newest complete one in the run's folder (a rerun after the driver ended or was
    killed, or a restart before Ray Train registered the last report); None for a new run."""
    candidates = dict(checkpoints_by_epoch(join(config.storage_path, config.name)))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and not candidates:
        return None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(directory, config)
        if state.epoch >= max(candidates, default=0):
            log.info("rank %d: resumed after epoch %d (Ray Train's checkpoint)", rank, state.epoch)
            return state
    latest = max(candidates)
    state = load_state(candidates[latest], config)
    log.info("rank %d: resumed after epoch %d from %s", rank, state.epoch, candidates[latest])
    return state


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's per-worker function: `loop_config` holds the TrainConfig (as JSON-ready data) and the
    path of the initial model. A run resumes from its latest checkpoint (`_resumed_state`)."""
    keep_freed_memory()  # forward and backward passes reuse freed activations (sare_core.allocator)
    config = TrainConfig(**loop_config["config"])
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    if config.pid_dir:
        os.makedirs(config.pid_dir, exist_ok=True)
        with open(os.path.join(config.pid_dir, f"rank{rank}.pid"), "w") as f:
            f.write(str(os.getpid()))

    splits = open_splits(config.dataset)
    if config.eval_dataset:
        splits = {**splits, **open_splits(config.eval_dataset), config.train_split: splits[config.train_split]}
    state = _resumed_state(config, rank) or TrainingState.start(load_model(loop_config["initial_model"]), config)
    forward = ray.train.torch.prepare_model(state.model)  # to the device; DDP when world > 1
    place_optimizer_state(state.optimizer)  # a resumed run's momentum follows the model to the device

    # Reports name the worker group's placement group, so that a driver which stops this run from outside
    # (Ray Tune's early stopping) can release it (pipelines.tune.cleanup); the history does not keep it.
    placement_group = ray.get_runtime_context().get_placement_group_id()
    worker_group = {"placement_group": placement_group} if placement_group else {}

    def report(row: dict, state: TrainingState) -> None:
        if row["epoch"] == 0:
            ray.train.report({**row, **worker_group})
        else:
            with tempfile.TemporaryDirectory() as directory:
                if rank == 0:
                    save_checkpoint(directory, state)
                    ray.train.report({**row, **worker_group},
                                     checkpoint=ray.train.Checkpoint.from_directory(directory))
                else:
                    ray.train.report({**row, **worker_group})
        if config.pid_dir:  # after the report: the epoch (and its checkpoint) is Ray Train's now
            with open(os.path.join(config.pid_dir, "epochs.log"), "a") as f:
                f.write(f"{rank} {os.getpid()} {row['epoch']} {config.storage_path}/{config.name}\n")

    run_epochs(state, config, splits[config.train_split], splits[config.val_split], report,
               collective_for(device), forward)

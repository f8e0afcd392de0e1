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

from sare_core.data.sources import open_splits
from sare_core.models.io import load_model
from sare_core.training.checkpoint import TrainingState, load_state, save_checkpoint
from sare_core.training.collective import collective_for
from sare_core.training.config import TrainConfig
from sare_core.training.loop import run_epochs

log = logging.getLogger(__name__)


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's per-worker function: `loop_config` holds the TrainConfig (as JSON-ready data) and the
    path of the initial model."""
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
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        state = TrainingState.start(load_model(loop_config["initial_model"]), config)
    else:
        with checkpoint.as_directory() as directory:
            state = load_state(directory, config)
        log.info("rank %d: resumed after epoch %d", rank, state.epoch)
    forward = ray.train.torch.prepare_model(state.model)  # to the device; DDP when world > 1

    # Reports name the worker group's placement group, so that a driver which stops this run from outside
    # (Ray Tune's early stopping) can release it (pipelines.tune.cleanup); the history does not keep it.
    placement_group = ray.get_runtime_context().get_placement_group_id()
    worker_group = {"placement_group": placement_group} if placement_group else {}

    def report(row: dict, state: TrainingState) -> None:
        if row["epoch"] == 0:
            ray.train.report({**row, **worker_group})
            return
        with tempfile.TemporaryDirectory() as directory:
            if rank == 0:
                save_checkpoint(directory, state)
                ray.train.report({**row, **worker_group}, checkpoint=ray.train.Checkpoint.from_directory(directory))
            else:
                ray.train.report({**row, **worker_group})

    run_epochs(state, config, splits[config.train_split], splits[config.val_split], report,
               collective_for(device), forward)

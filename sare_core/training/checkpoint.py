"""Training state and its checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is a folder holding `checkpoint.pt` (local or any fsspec URI), written by rank 0 after each
epoch: the model payload (`sare_core.models.io`), optimiser and scheduler state, the last finished epoch,
the mining state (each query's previous hard negatives), the history of per-epoch rows and the count of
steps skipped for a non-finite loss. Only tensors and plain values: it loads with weights_only=True.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field

import torch

from ..mining import MiningState
from ..models.embedding import EmbeddingModel
from ..models.io import model_from_payload, model_payload
from ..paths import join, list_names, read_bytes, read_text
from .config import TrainConfig
from .optim import make_optimizer, make_scheduler

CHECKPOINT_FILE = "checkpoint.pt"
EPOCH_FILE = "epoch.json"  # beside it: {"epoch": E}, to find a run's checkpoints without loading them


@dataclass
class TrainingState:
    """The model and everything else that changes during training. epoch: the last finished one (0: none)."""

    model: EmbeddingModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    mining: MiningState = field(default_factory=MiningState)
    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    nonfinite_steps: int = 0

    @classmethod
    def start(cls, model: EmbeddingModel, config: TrainConfig) -> TrainingState:
        """A new run from `model` (the initial model; in channels-last memory format after this when
        `config.channels_last`)."""
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model.trainable_parameters(), config)
        return cls(model, optimizer, make_scheduler(optimizer, config))


def place_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Put each parameter's optimiser state tensors of its shape (SGD's momentum buffers) on its device and
    in its memory layout. `load_state_dict` places them where the parameters were when it ran; call this
    after the model moved (Ray Train's `prepare_model` to a GPU) or changed layout (a resume that switched
    `channels_last`)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            saved = optimizer.state.get(param, {})
            for key, value in saved.items():
                if torch.is_tensor(value) and value.shape == param.shape:
                    saved[key] = torch.empty_like(param).copy_(value)


def save_checkpoint(directory: str, state: TrainingState) -> str:
    """Write `state` as `directory`/checkpoint.pt (a local folder, created); returns the file's path."""
    arrays = state.mining.to_arrays()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CHECKPOINT_FILE)
    torch.save({
        "model": model_payload(state.model),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "epoch": state.epoch,
        "mining_queries": torch.from_numpy(arrays["queries"]),
        "mining_negatives": torch.from_numpy(arrays["negatives"]),
        "history": state.history,
        "nonfinite_steps": state.nonfinite_steps,
    }, path)
    with open(os.path.join(directory, EPOCH_FILE), "w") as f:
        json.dump({"epoch": state.epoch}, f)
    return path


def checkpoints_by_epoch(run_dir: str) -> dict[int, str]:
    """{epoch: checkpoint folder} of the complete checkpoints under `run_dir` (local or URI): folders holding
    both files; for an epoch saved twice (a run resumed before it), the latest by name (Ray names them by
    time)."""
    found = {}
    for name in list_names(run_dir):
        if not name.startswith("checkpoint_"):
            continue
        folder = join(run_dir, name)
        if CHECKPOINT_FILE not in list_names(folder):
            continue
        text = read_text(join(folder, EPOCH_FILE))
        if text is not None:
            found[int(json.loads(text)["epoch"])] = folder
    return found


def read_checkpoint(directory: str) -> dict:
    """The raw content of `directory`/checkpoint.pt (local folder or URI), loaded with weights_only=True."""
    return torch.load(io.BytesIO(read_bytes(join(directory, CHECKPOINT_FILE))), map_location="cpu",
                      weights_only=True)


def model_from_checkpoint(directory: str) -> EmbeddingModel:
    """The model saved in the checkpoint folder `directory`."""
    saved = read_checkpoint(directory)
    return model_from_payload(saved["model"], source=f"{directory} (epoch {saved.get('epoch')})")


def load_state(directory: str, config: TrainConfig) -> TrainingState:
    """The training state saved in `directory`, with an optimiser and schedule of `config` restored into."""
    saved = read_checkpoint(directory)
    model = model_from_payload(saved["model"], source=f"{directory} (epoch {saved.get('epoch')})")
    state = TrainingState.start(model, config)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.mining = MiningState.from_arrays(saved["mining_queries"].numpy(), saved["mining_negatives"].numpy())
    state.history = list(saved["history"])
    state.epoch = int(saved["epoch"])
    state.nonfinite_steps = int(saved["nonfinite_steps"])
    return state

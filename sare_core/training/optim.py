"""The optimiser and learning-rate schedule of a training run (SGD with momentum, step decay per epoch)."""

from __future__ import annotations

import torch

from .config import TrainConfig


def make_optimizer(parameters, config: TrainConfig) -> torch.optim.SGD:
    """SGD over `parameters` (the model's trainable ones) with the config's lr, momentum and weight decay."""
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.StepLR:
    """The learning rate times `lr_gamma` every `lr_step_epochs` epochs (stepped once per epoch)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma)

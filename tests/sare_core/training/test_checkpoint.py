"""A training state's start and restore: the model in the configured memory layout, and optimiser state
(SGD's momentum buffers) placed like the parameters after the model moved or changed layout."""

import torch

from sare_core.models import ModelConfig, build_model
from sare_core.training.checkpoint import TrainingState, place_optimizer_state
from sare_core.training.config import TrainConfig

MODEL = {"backbone": "tiny", "num_clusters": 4, "whitening_dim": None, "image_size": [32, 48], "train_from": "conv2"}


def _state(channels_last: bool) -> TrainingState:
    torch.manual_seed(0)
    return TrainingState.start(build_model(ModelConfig(**MODEL)), TrainConfig(dataset="-", lr=0.01, channels_last=channels_last))


def _step(state: TrainingState) -> None:
    state.model.train()
    state.optimizer.zero_grad()
    state.model(torch.rand(3, 3, 32, 48)).square().sum().backward()
    state.optimizer.step()


def _spatial_weights(model) -> list[torch.nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
            and m.weight.requires_grad]


def test_a_state_starts_in_the_configured_layout():
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _spatial_weights(_state(True).model))
    first = _spatial_weights(_state(False).model)
    assert first and all(not w.is_contiguous(memory_format=torch.channels_last) for w in first)


def test_restored_momentum_is_placed_like_the_parameters():
    saved = _state(False)
    _step(saved)  # momentum buffers, channels-first
    restored = _state(True)  # a resume that switched to channels-last
    restored.optimizer.load_state_dict(saved.optimizer.state_dict())
    weights = _spatial_weights(restored.model)
    buffers = [restored.optimizer.state[w]["momentum_buffer"] for w in weights]
    assert not any(b.is_contiguous(memory_format=torch.channels_last) for b in buffers)
    place_optimizer_state(restored.optimizer)
    for w, before in zip(weights, buffers):
        after = restored.optimizer.state[w]["momentum_buffer"]
        assert after.is_contiguous(memory_format=torch.channels_last) and after.device == w.device
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    _step(restored)  # and the optimiser steps with them

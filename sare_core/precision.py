"""Half-precision guards: layers whose arithmetic half precision breaks run in float32 even under
`torch.autocast`, which GPU extraction turns on (docs/BENCHMARKS.md, "GPU path"). NetVLAD's aggregation loses
the assignment weights of clusters far from every local descriptor; PCA whitening's centred values are small
and it scales the low-variance directions up by 1/sqrt(eigenvalue)."""

from __future__ import annotations

import functools

import torch


def autocast_enabled(device_type: str) -> bool:
    """Whether `torch.autocast` is on for `device_type` ("cuda", "cpu") here."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def computed_in_float32(method):
    """Decorator for a module method whose first argument is a tensor x: under `torch.autocast` the method
    runs with autocast off on x in float32 (its output is float32). A module whose `float32_under_autocast`
    attribute is False is left to autocast: benchmarks/gpu_tuning.py and the tests measure what the guard
    buys that way."""

    @functools.wraps(method)
    def guarded(module, x: torch.Tensor, *args, **kwargs):
        if getattr(module, "float32_under_autocast", True) and autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return method(module, x.float(), *args, **kwargs)
        return method(module, x, *args, **kwargs)

    return guarded

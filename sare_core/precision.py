"""Half-precision guards. Layers whose arithmetic half precision breaks (NetVLAD's soft assignment, PCA
whitening's small centred values scaled up by 1/sqrt(eigenvalue)) run in float32 even under `torch.autocast`,
which GPU extraction turns on (docs/BENCHMARKS.md, "GPU path")."""

from __future__ import annotations

import torch


def autocast_enabled(device_type: str) -> bool:
    """Whether `torch.autocast` is on for `device_type` ("cuda", "cpu") here."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()

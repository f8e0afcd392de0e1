"""Generalised-mean (GeM) pooling (Radenovic et al., TPAMI 2018): the simple alternative to NetVLAD."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class GeM(nn.Module):
    """(B, C, H, W) non-negative feature maps -> (B, C) L2-normalised descriptors.

    Each channel is pooled as (mean_i x_i^p)^(1/p) with a learnable exponent p (p=1: average, p->inf: max).
    Activations are clamped to `eps` first so the power is defined.
    """

    def __init__(self, dim: int, p: float = 3.0, eps: float = 1e-6, learn_p: bool = True):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learn_p)

    @property
    def output_dim(self) -> int:
        return self.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"GeM expects (B, {self.dim}, H, W), got {tuple(x.shape)}")
        pooled = F.avg_pool2d(x.clamp_min(self.eps).pow(self.p), kernel_size=x.shape[-2:]).pow(1.0 / self.p)
        return F.normalize(pooled.flatten(1), p=2, dim=1)

"""PCA whitening of global descriptors (truncation to fewer dimensions: `sare_core.descriptors.truncate`).

Fitted on training database descriptors (the NetVLAD recipe): centre on their mean, project on the top k
principal directions, divide each by the square root of its eigenvalue (whitening), then L2-normalise.
A fitted whitening is a module of the saved model, so extraction applies it. It computes in float32 under
`torch.autocast` (GPU extraction): centred descriptor values are small (float16 makes many of them
subnormal) and whitening scales the low-variance directions up by 1/sqrt(eigenvalue); 32,768 -> 4,096 dims
costs 0.27 GFLOP per image against the backbone's 188.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sare_core.precision import computed_in_float32


class PCAWhitening(nn.Module):
    """(B, D) descriptors -> (B, k) whitened, L2-normalised descriptors.

    Buffers: mean (D,) and projection (D, k), whose column j is the j-th principal direction divided by
    sqrt(eigenvalue_j + eps) (or not divided when whiten=False), in descending eigenvalue order.
    """

    def __init__(self, mean: torch.Tensor, projection: torch.Tensor):
        super().__init__()
        if mean.dim() != 1 or projection.dim() != 2 or projection.shape[0] != mean.shape[0]:
            raise ValueError(f"whitening: mean (D,) and projection (D, k) expected, got {tuple(mean.shape)} "
                             f"and {tuple(projection.shape)}")
        self.register_buffer("mean", mean.float().contiguous())
        self.register_buffer("projection", projection.float().contiguous())

    @property
    def input_dim(self) -> int:
        return int(self.projection.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.projection.shape[1])

    @computed_in_float32
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize((x - self.mean) @ self.projection, p=2, dim=1)


def fit_pca_whitening(descriptors, dim: int, whiten: bool = True, eps: float = 1e-9) -> PCAWhitening:
    """Fit PCA (whitening) from (N, D) descriptors to `dim` output dimensions.

    Works in float64. Uses the (N, N) Gram matrix when N < D (e.g. 10k images of 32k-dim NetVLAD), else
    the (D, D) covariance, so memory is O(min(N, D)^2). `dim` must not exceed the data's rank bound
    min(N - 1, D): directions beyond it are noise and would be scaled by 1/sqrt(eps).
    """
    x = torch.as_tensor(np.asarray(descriptors), dtype=torch.float64)
    if x.dim() != 2:
        raise ValueError(f"whitening: descriptors must be (N, D), got {tuple(x.shape)}")
    n, d = x.shape
    if not 1 <= dim <= min(n - 1, d):
        raise ValueError(f"whitening dim={dim} must be between 1 and min(N-1, D) = {min(n - 1, d)} "
                         f"for {n} descriptors of {d} dims; fit on more images or lower model.whitening_dim")
    if not torch.isfinite(x).all():
        raise ValueError("whitening: descriptors contain NaN or inf")
    mean = x.mean(dim=0)
    xc = x - mean
    if n < d:
        gram = xc @ xc.T  # (N, N) = U S^2 U^T
        evals, evecs = torch.linalg.eigh(gram)
        order = torch.argsort(evals, descending=True)[:dim]
        evals, evecs = evals[order].clamp_min(0), evecs[:, order]
        directions = xc.T @ evecs / evals.sqrt().clamp_min(1e-300)  # (D, dim), unit columns
    else:
        cov = xc.T @ xc
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)[:dim]
        evals, directions = evals[order].clamp_min(0), evecs[:, order]
    variances = evals / max(n - 1, 1)
    projection = directions / (variances + eps).sqrt() if whiten else directions
    return PCAWhitening(mean, projection)

"""NetVLAD pooling (Arandjelovic et al., CVPR 2016) in the "vlad_preL2_intra" variant.

Local descriptors x_i (C channels at each of the H*W positions) are L2-normalised, softly assigned to K
clusters, a_k(x_i) = softmax_k(w_k . x_i + b_k), and their residuals to the cluster centres c_k summed:
    V[k] = sum_i a_k(x_i) (x_i - c_k)                                           (K, C)
then each cluster's residual is L2-normalised (intra-normalisation) and the flattened (K*C,) vector is
L2-normalised. The layout is cluster-major: element k*C + j is channel j of cluster k.

Under `torch.autocast` (the GPU extraction path) the layer still computes in float32. A cluster far from
every local descriptor can get assignment weights far below float16's smallest step (6e-8): the half-precision
product that sums the weighted descriptors loses them while the subtracted (sum of weights) x centre term
does not, so the cluster's residual is wrong, and intra-normalisation (which scales every cluster's block to
norm 1) makes it a full block unlike float32's (VGG16-NetVLAD 64 at 480x640 on an H200: float16 descriptors
at cosine 0.925 to float32 ones, 0.999999 with this layer in float32). bfloat16 keeps float32's range but
only 8 bits of mantissa. The layer costs about 0.16 GFLOP of the 188 of a VGG16 forward at 480x640
(benchmarks/gpu_tuning.py measures what float32 here buys).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sare_core.precision import computed_in_float32


class NetVLAD(nn.Module):
    """(B, C, H, W) feature maps -> (B, K*C) L2-normalised, intra-normalised, cluster-major descriptors.

    Args:
        num_clusters: K.
        dim: C, the channels of the incoming feature map.
        alpha: sharpness of the soft assignment used by `init_from_centroids` (the NetVLAD paper's alpha).
        normalize_input: L2-normalise each local descriptor first (the "preL2" of vlad_preL2_intra).
    """

    def __init__(self, num_clusters: int = 64, dim: int = 512, alpha: float = 100.0, normalize_input: bool = True):
        super().__init__()
        if num_clusters < 1 or dim < 1:
            raise ValueError(f"NetVLAD needs num_clusters >= 1 and dim >= 1, got {num_clusters}, {dim}")
        self.num_clusters = num_clusters
        self.dim = dim
        self.alpha = float(alpha)
        self.normalize_input = normalize_input
        self.assignment = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=True)
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))
        # Until centroids are set from data, a usable random initialisation consistent with them.
        self.init_from_centroids(F.normalize(torch.randn(num_clusters, dim), dim=1))

    @property
    def output_dim(self) -> int:
        return self.num_clusters * self.dim

    @torch.no_grad()
    def init_from_centroids(self, centroids, alpha: float | None = None) -> None:
        """Set the NetVLAD-paper initialisation from (K, C) cluster centres c_k.

        Assignment weights w_k = 2 alpha c_k, biases b_k = -alpha |c_k|^2 (so the soft assignment is a
        softmax of -alpha |x - c_k|^2 up to a per-x constant), residual centres = c_k. `alpha` overrides
        (and replaces) the module's alpha.
        """
        c = torch.as_tensor(np.asarray(centroids) if not torch.is_tensor(centroids) else centroids)
        c = c.to(dtype=self.centroids.dtype, device=self.centroids.device)
        if c.shape != (self.num_clusters, self.dim):
            raise ValueError(f"centroids must be ({self.num_clusters}, {self.dim}), got {tuple(c.shape)}")
        if alpha is not None:
            self.alpha = float(alpha)
        self.centroids.copy_(c)
        self.assignment.weight.copy_((2.0 * self.alpha * c).reshape(self.num_clusters, self.dim, 1, 1))
        self.assignment.bias.copy_(-self.alpha * c.pow(2).sum(dim=1))

    def soft_assignment(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) (already input-normalised) -> (B, K, H*W) assignment weights summing to 1 over K."""
        logits = self.assignment(x).flatten(2)
        return F.softmax(logits, dim=1)

    @computed_in_float32
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"NetVLAD expects (B, {self.dim}, H, W), got {tuple(x.shape)}")
        if self.normalize_input:
            x = F.normalize(x, p=2, dim=1)
        a = self.soft_assignment(x)  # (B, K, HW)
        flat = x.flatten(2)  # (B, C, HW)
        # sum_i a_ik (x_i - c_k) = (A X^T)_k - (sum_i a_ik) c_k, without the (B, K, C, HW) residual tensor.
        vlad = torch.bmm(a, flat.transpose(1, 2)) - a.sum(dim=2, keepdim=True) * self.centroids.unsqueeze(0)
        vlad = F.normalize(vlad, p=2, dim=2)  # intra-normalisation, per cluster
        return F.normalize(vlad.flatten(1), p=2, dim=1)


def netvlad_alpha(descriptors: np.ndarray, centroids: np.ndarray) -> float:
    """The NetVLAD code's data-driven alpha: -log(0.01) / mean(d_2^2 - d_1^2).

    With it, a local descriptor's assignment weight to its second-nearest centre is on average 1% of the
    weight to its nearest. descriptors (N, C) and centroids (K, C), K >= 2; squared L2 distances.
    """
    x = np.asarray(descriptors, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    if c.shape[0] < 2:
        raise ValueError("netvlad_alpha needs at least 2 centroids")
    d2 = (x**2).sum(1, keepdims=True) - 2 * x @ c.T + (c**2).sum(1)[None]
    two = np.partition(d2, 1, axis=1)[:, :2]
    gap = float(np.mean(two[:, 1] - two[:, 0]))
    if not gap > 0:
        raise ValueError("netvlad_alpha: nearest and second-nearest centroids are equally far on average")
    return float(-np.log(0.01) / gap)

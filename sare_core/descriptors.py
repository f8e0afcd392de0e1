"""Operations on global descriptors (rows of an (N, D) array), without torch unless given tensors."""

from __future__ import annotations

import numpy as np


def truncate(descriptors, k: int):
    """The first k elements of each (N, D) descriptor, re-L2-normalised: the seed's recipe for smaller
    embeddings after PCA (its leading components carry the most variance). Returns the input's type: a
    numpy float32 array for arrays, a tensor for torch tensors."""
    if type(descriptors).__module__.startswith("torch"):
        import torch.nn.functional as F

        if descriptors.dim() != 2 or not 1 <= k <= descriptors.shape[1]:
            raise ValueError(f"truncate: need (N, D) descriptors and 1 <= k <= D, got "
                             f"{tuple(descriptors.shape)} and k={k}")
        return F.normalize(descriptors[:, :k], p=2, dim=1)
    x = np.asarray(descriptors)
    if x.ndim != 2 or not 1 <= k <= x.shape[1]:
        raise ValueError(f"truncate: need (N, D) descriptors and 1 <= k <= D, got {x.shape} and k={k}")
    head = np.ascontiguousarray(x[:, :k], dtype=np.float32)
    norms = np.linalg.norm(head.astype(np.float64), axis=1, keepdims=True)
    return (head / np.maximum(norms, 1e-12)).astype(np.float32)

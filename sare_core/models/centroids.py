"""NetVLAD centroid initialisation: k-means (FAISS) over local descriptors sampled from training images."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .embedding import EmbeddingModel
from .netvlad import NetVLAD, netvlad_alpha

log = logging.getLogger(__name__)


@torch.no_grad()
def sample_local_descriptors(
    model: EmbeddingModel,
    image_batches: Iterable[torch.Tensor],
    per_image: int = 100,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Sample `per_image` local descriptors from each image's feature map (without replacement).

    image_batches: preprocessed (B, 3, H, W) batches. Returns (N, C) float32 descriptors, L2-normalised
    as NetVLAD sees them (normalize_input), C = model.local_dim.
    """
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for images in image_batches:
            feats = model.local_features(images.to(device))  # (B, C, h, w)
            feats = F.normalize(feats, p=2, dim=1).flatten(2).transpose(1, 2)  # (B, hw, C)
            hw = feats.shape[1]
            for one in feats:
                take = rng.choice(hw, size=min(per_image, hw), replace=False)
                chunks.append(one[torch.as_tensor(take, device=one.device)].float().cpu().numpy())
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("sample_local_descriptors: no images were given")
    return np.concatenate(chunks).astype(np.float32)


def kmeans_centroids(descriptors: np.ndarray, k: int, niter: int = 100, seed: int = 0) -> np.ndarray:
    """(K, C) float32 k-means centres of (N, C) descriptors, with FAISS (N must be >= K)."""
    import faiss

    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if x.ndim != 2 or len(x) < k:
        raise ValueError(f"k-means needs at least k={k} descriptors of shape (N, C), got {x.shape}")
    kmeans = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False, max_points_per_centroid=10_000)
    kmeans.train(x)
    return np.asarray(kmeans.centroids, dtype=np.float32)


def init_netvlad_centroids(
    model: EmbeddingModel,
    image_batches: Iterable[torch.Tensor],
    per_image: int = 100,
    seed: int = 0,
    data_driven_alpha: bool = False,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Initialise the model's NetVLAD layer from k-means of sampled local descriptors; returns (K, C) centroids.

    With `data_driven_alpha`, alpha follows the NetVLAD code's rule (second-nearest centre gets 1% of the
    nearest's weight on average) instead of the configured value.
    """
    if not isinstance(model.pool, NetVLAD):
        raise ValueError("init_netvlad_centroids: the model pools with GeM, not NetVLAD")
    descs = sample_local_descriptors(model, image_batches, per_image=per_image, seed=seed, device=device)
    centroids = kmeans_centroids(descs, model.pool.num_clusters, seed=seed)
    alpha = netvlad_alpha(descs, centroids) if data_driven_alpha else None
    model.pool.init_from_centroids(torch.from_numpy(centroids), alpha=alpha)
    log.info("NetVLAD: %d centroids from %d local descriptors (alpha %.1f)", len(centroids), len(descs), model.pool.alpha)
    return centroids

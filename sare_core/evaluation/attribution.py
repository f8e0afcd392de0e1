"""Where a global descriptor draws its evidence: per-location contributions of NetVLAD / GeM pooling.

Both poolings are, once their normalisations are fixed, sums over the feature map's locations i:

    NetVLAD   v = sum_i r_i,  r_i[k] = s_k w_i a_k(x_i) (x_i - c_k),  s_k = 1 / (|V_k| * Z)
    GeM       g = sum_i r_i,  r_i[c] = g_c w_i x_ic^p / sum_j w_j x_jc^p

where V_k = sum_i w_i a_k(x_i) (x_i - c_k) is cluster k's aggregated residual, |V_k| its intra-normalisation,
Z the norm of the intra-normalised vector (so v is exactly the module's output), and w_i a location
weight (1 everywhere by default; a location of weight 0 is left out, exactly as if the feature map lacked
it). So the descriptor splits exactly into location terms r_i, and

* `contribution_maps` gives |r_i| / sum_j |r_j|: how much of the pooled vector each location supplies
  (non-negative, summing to 1 per image); computed before whitening, on the pooled vector itself.
* `similarity_maps` gives each location's share of the cosine similarity with a target descriptor t of the
  model's output space (e.g. the best database match): with whitening y = (v - mu) P / n,
  <y, t> = sum_i <r_i, P t / n> - <mu, P t / n>, so maps (B, h, w) sum, together with the returned bias
  (B,) (0 without whitening), to the similarity exactly. Positive locations pull towards the target.

Nothing (B, K, C, H*W)-sized is formed: both maps come from (B, K, H*W) products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.embedding import EmbeddingModel
from ..models.gem import GeM
from ..models.netvlad import NetVLAD

EPS = 1e-12  # as F.normalize


def _weights(weights: torch.Tensor | None, batch: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(B, H*W) location weights from None (ones), (h, w) or (B, h, w)."""
    if weights is None:
        return torch.ones(batch, h * w, dtype=like.dtype, device=like.device)
    wt = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if wt.shape == (h, w):
        wt = wt.expand(batch, h, w)
    if wt.shape != (batch, h, w):
        raise ValueError(f"weights must be ({h}, {w}) or ({batch}, {h}, {w}), got {tuple(wt.shape)}")
    if (wt < 0).any():
        raise ValueError("weights must be non-negative")
    return wt.reshape(batch, h * w)


def netvlad_terms(features: torch.Tensor, pool: NetVLAD, weights=None):
    """The pieces of NetVLAD's location terms for (B, C, h, w) feature maps.

    Returns (x (B, C, HW) input-normalised features, a (B, K, HW) weighted soft assignments, scale (B, K)
    = s_k). sum_i scale_k a_ik (x_i - c_k) reproduces `pool(features)` (with weights: over the kept
    locations).
    """
    b, c, h, w = features.shape
    x = F.normalize(features, p=2, dim=1) if pool.normalize_input else features
    a = pool.soft_assignment(x)  # (B, K, HW)
    a = a * _weights(weights, b, h, w, a).unsqueeze(1)
    flat = x.flatten(2)
    vlad = torch.bmm(a, flat.transpose(1, 2)) - a.sum(dim=2, keepdim=True) * pool.centroids.unsqueeze(0)
    intra = vlad.norm(dim=2).clamp_min(EPS)  # (B, K)
    total = (vlad / intra.unsqueeze(2)).flatten(1).norm(dim=1).clamp_min(EPS)  # (B,)
    return flat, a, 1.0 / (intra * total.unsqueeze(1))


def netvlad_from_terms(x: torch.Tensor, a: torch.Tensor, scale: torch.Tensor, pool: NetVLAD) -> torch.Tensor:
    """(B, K*C) descriptor summed from the location terms (equals the NetVLAD output)."""
    vlad = torch.bmm(a, x.transpose(1, 2)) - a.sum(dim=2, keepdim=True) * pool.centroids.unsqueeze(0)
    return (vlad * scale.unsqueeze(2)).flatten(1)


def _netvlad_norms(x, a, scale, pool: NetVLAD) -> torch.Tensor:
    """(B, HW) |r_i| from |x_i - c_k|^2 = |x_i|^2 - 2 x_i.c_k + |c_k|^2."""
    c = pool.centroids
    d2 = (x.pow(2).sum(1, keepdim=True) - 2 * torch.einsum("kc,bci->bki", c, x)
          + c.pow(2).sum(1).view(1, -1, 1)).clamp_min(0)
    return (scale.unsqueeze(2).pow(2) * a.pow(2) * d2).sum(1).sqrt()


def _netvlad_dots(x, a, scale, pool: NetVLAD, u: torch.Tensor) -> torch.Tensor:
    """(B, HW) <r_i, u> for directions u (B, K*C)."""
    uk = u.reshape(u.shape[0], pool.num_clusters, pool.dim)
    dots = torch.einsum("bkc,bci->bki", uk, x) - (uk * pool.centroids.unsqueeze(0)).sum(2, keepdim=True)
    return (scale.unsqueeze(2) * a * dots).sum(1)


def gem_terms(features: torch.Tensor, pool: GeM, weights=None):
    """GeM's location terms: (share (B, C, HW) = w_i x_ic^p / sum_j w_j x_jc^p, g (B, C) pooled output)."""
    b, c, h, w = features.shape
    xp = features.clamp_min(pool.eps).pow(pool.p).flatten(2)
    wt = _weights(weights, b, h, w, xp)
    weighted = xp * wt.unsqueeze(1)
    total = weighted.sum(2, keepdim=True)
    mean = total.squeeze(2) / wt.sum(1, keepdim=True).clamp_min(EPS)
    g = F.normalize(mean.pow(1.0 / pool.p), p=2, dim=1)
    share = torch.where(total > 0, weighted / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
    return share, g


def _pooled_parts(model: EmbeddingModel, images: torch.Tensor, weights):
    features = model.local_features(images)
    h, w = features.shape[-2:]
    if isinstance(model.pool, NetVLAD):
        return "netvlad", netvlad_terms(features, model.pool, weights), (h, w)
    if isinstance(model.pool, GeM):
        return "gem", gem_terms(features, model.pool, weights), (h, w)
    raise ValueError(f"no attribution for pooling {type(model.pool).__name__}")


@torch.no_grad()
def contribution_maps(model: EmbeddingModel, images: torch.Tensor, weights=None) -> torch.Tensor:
    """(B, h, w) share of each feature-map location in the pooled (pre-whitening) descriptor: |r_i| divided
    by sum_j |r_j|, so each map is non-negative and sums to 1 (a map of zeros if every term vanishes).
    images: preprocessed (B, 3, H, W); weights: optional (h, w) or (B, h, w) location weights."""
    kind, terms, (h, w) = _pooled_parts(model, images, weights)
    if kind == "netvlad":
        norms = _netvlad_norms(*terms, model.pool)
    else:
        share, g = terms
        norms = (share * g.unsqueeze(2)).norm(dim=1)
    maps = norms / norms.sum(1, keepdim=True).clamp_min(EPS)
    return maps.reshape(-1, h, w)


@torch.no_grad()
def similarity_maps(model: EmbeddingModel, images: torch.Tensor, targets: torch.Tensor,
                    weights=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps (B, h, w), bias (B,)): each location's share of the cosine similarity between the model's
    descriptor of images[b] and targets[b] (B, D) (unit vectors in the model's output space, e.g. database
    descriptors); maps[b].sum() + bias[b] == <model(images)[b], targets[b]>. bias is the whitening mean's
    share (0 without whitening)."""
    kind, terms, (h, w) = _pooled_parts(model, images, weights)
    if kind == "netvlad":
        pooled = netvlad_from_terms(*terms, model.pool)
    else:
        share, g = terms
        pooled = g
    targets = torch.as_tensor(targets, dtype=pooled.dtype, device=pooled.device)
    if targets.shape != (pooled.shape[0], model.descriptor_dim):
        raise ValueError(f"targets must be ({pooled.shape[0]}, {model.descriptor_dim}), got {tuple(targets.shape)}")
    if model.whitening is not None:
        wh = model.whitening
        n = ((pooled - wh.mean) @ wh.projection).norm(dim=1, keepdim=True).clamp_min(EPS)
        u = (targets @ wh.projection.T) / n  # (B, D_pooled)
        bias = -(wh.mean.unsqueeze(0) * u).sum(1)
    else:
        u = targets
        bias = torch.zeros(pooled.shape[0], dtype=pooled.dtype, device=pooled.device)
    if kind == "netvlad":
        maps = _netvlad_dots(*terms, model.pool, u)
    else:
        maps = ((share * g.unsqueeze(2)) * u.unsqueeze(2)).sum(1)
    return maps.reshape(-1, h, w), bias

"""Metric-learning losses for place recognition: SARE (ind / joint, three kernels), triplet, contrastive.

All losses take a query batch q (B, D), one positive per query p (B, D) and negatives n (B, N, D), and are
computed from squared Euclidean distances d^2 = |q - x|^2 (no expansion trick, so gradients are exact).

SARE (Liu, Li, Dai, ICCV 2019) turns distances into kernel similarities of the scaled squared distance
u = d^2 / t (t: the temperature; t = 1 is the paper's loss):
    gaussian     s = exp(-u)          log s = -u
    cauchy       s = 1 / (1 + u)      log s = -log1p(u)
    exponential  s = exp(-sqrt(u))    log s = -sqrt(u)
With L2-normalised descriptors d^2 lies in [0, 4], so at t = 1 the gaussian kernel's softmax over -d^2 is
soft (exp(-d^2) is proportional to exp(2 cos)); a smaller t sharpens it (at t = 0.1 it is a softmax of
20 cos, the scale of the usual InfoNCE temperatures).
and matches the query's "which image is the same place" distribution to the ground truth:
    ind   (one softmax per negative):  sum_k -log(s_p / (s_p + s_k)) = sum_k softplus(log s_k - log s_p)
    joint (one softmax over all):       -log(s_p / (s_p + sum_k s_k)) = logsumexp(log s_p, log s_1..N) - log s_p
Both forms are evaluated in log space, so distances of any size give finite losses and gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

KERNELS = ("gaussian", "cauchy", "exponential")
MODES = ("ind", "joint")
REDUCTIONS = ("mean", "sum", "none")

# Below this, sqrt(d^2) for the exponential kernel is clamped: d = |q - x| has an infinite derivative at 0.
_SQRT_EPS = 1e-12


def _check_shapes(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> None:
    if q.dim() != 2 or p.shape != q.shape:
        raise ValueError(f"q and p must both be (B, D); got q {tuple(q.shape)}, p {tuple(p.shape)}")
    if n.dim() != 3 or n.shape[0] != q.shape[0] or n.shape[2] != q.shape[1]:
        raise ValueError(f"n must be (B, N, D) = ({q.shape[0]}, N, {q.shape[1]}); got {tuple(n.shape)}")
    if n.shape[1] == 0:
        raise ValueError("n must hold at least one negative per query (N >= 1)")


def _reduce(per_query: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_query.mean()
    if reduction == "sum":
        return per_query.sum()
    if reduction == "none":
        return per_query
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def squared_distances(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) squared distances query-positive and (B, N) query-negatives."""
    _check_shapes(q, p, n)
    d2_p = (q - p).pow(2).sum(dim=-1)
    d2_n = (q.unsqueeze(1) - n).pow(2).sum(dim=-1)
    return d2_p, d2_n


def log_similarity(d2: torch.Tensor, kernel: str, temperature: float = 1.0) -> torch.Tensor:
    """Log of the kernel similarity of u = d^2 / temperature, given squared distances d^2 (any shape)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    _check_temperature(temperature)
    u = d2 if temperature == 1.0 else d2 / temperature
    if kernel == "gaussian":
        return -u
    if kernel == "cauchy":
        return -torch.log1p(u)
    return -u.clamp_min(_SQRT_EPS).sqrt()


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def sare_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor,
    kernel: str = "gaussian",
    mode: str = "ind",
    reduction: str = "mean",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Stochastic Attraction-Repulsion Embedding loss.

    q (B, D) queries, p (B, D) their positives, n (B, N, D) their negatives.
    kernel: "gaussian" | "cauchy" | "exponential"; mode: "ind" (SARE-Ind) | "joint" (SARE-Joint);
    temperature t > 0: the kernel sees d^2 / t (t = 1: the paper's loss).
    Returns the (B,) per-query losses for reduction="none", else their mean or sum.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    d2_p, d2_n = squared_distances(q, p, n)
    log_s_p = log_similarity(d2_p, kernel, temperature)  # (B,)
    log_s_n = log_similarity(d2_n, kernel, temperature)  # (B, N)
    if mode == "ind":
        per_query = F.softplus(log_s_n - log_s_p.unsqueeze(1)).sum(dim=1)
    else:
        all_logs = torch.cat([log_s_p.unsqueeze(1), log_s_n], dim=1)
        per_query = torch.logsumexp(all_logs, dim=1) - log_s_p
    return _reduce(per_query, reduction)


def triplet_loss(
    q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, margin: float = 0.1, reduction: str = "mean"
) -> torch.Tensor:
    """NetVLAD's ranking loss: per query sum_k max(0, d_p^2 + margin - d_k^2) (squared distances).

    q (B, D), p (B, D), n (B, N, D); returns (B,) for reduction="none", else mean or sum over queries.
    """
    d2_p, d2_n = squared_distances(q, p, n)
    per_query = F.relu(d2_p.unsqueeze(1) + margin - d2_n).sum(dim=1)
    return _reduce(per_query, reduction)


def contrastive_loss(
    q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, margin: float = 0.7, reduction: str = "mean"
) -> torch.Tensor:
    """Contrastive loss (Hadsell et al.; Radenovic et al. for retrieval), summed over a query's pairs.

    Per query: d_p^2 + sum_k max(0, margin - d_k)^2, with Euclidean (not squared) distances d: the positive
    is pulled in, each negative is pushed out until it is `margin` away (0.7 suits L2-normalised vectors,
    whose distances lie in [0, 2]). q (B, D), p (B, D), n (B, N, D); reduction as for the other losses.
    """
    d2_p, d2_n = squared_distances(q, p, n)
    d_n = d2_n.clamp_min(_SQRT_EPS).sqrt()
    per_query = d2_p + F.relu(margin - d_n).pow(2).sum(dim=1)
    return _reduce(per_query, reduction)


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossSpec:
    """What a config says about the loss: `name` from LOSS_NAMES, a kernel and a temperature for SARE, a
    margin for the others."""

    name: str = "sare_joint"
    kernel: str = "gaussian"
    margin: float | None = None
    reduction: str = "mean"
    temperature: float | None = None


LOSS_NAMES = ("sare_ind", "sare_joint", "triplet", "contrastive")


def build_loss(spec: LossSpec | dict | str) -> LossFn:
    """Registry: the loss a config names, as a function of (q, p, n).

    `spec` is a LossSpec, a dict with its fields, or just a name. Unknown names, kernels or reductions
    raise ValueError naming the field.
    """
    if isinstance(spec, str):
        spec = LossSpec(name=spec)
    elif isinstance(spec, dict):
        unknown = set(spec) - set(LossSpec.__dataclass_fields__)
        if unknown:
            raise ValueError(f"loss: unknown field(s) {sorted(unknown)}; expected name, kernel, margin, reduction, "
                             f"temperature")
        spec = LossSpec(**spec)
    if spec.reduction not in REDUCTIONS:
        raise ValueError(f"loss.reduction must be one of {REDUCTIONS}, got {spec.reduction!r}")
    if spec.name in ("sare_ind", "sare_joint"):
        if spec.kernel not in KERNELS:
            raise ValueError(f"loss.kernel must be one of {KERNELS}, got {spec.kernel!r}")
        if spec.margin is not None:
            raise ValueError(f"loss.margin is not used by {spec.name}; remove it")
        temperature = 1.0 if spec.temperature is None else spec.temperature
        try:
            _check_temperature(temperature)
        except ValueError as exc:
            raise ValueError(f"loss.{exc}") from None
        mode = spec.name.split("_", 1)[1]
        return partial(sare_loss, kernel=spec.kernel, mode=mode, reduction=spec.reduction, temperature=temperature)
    if spec.temperature is not None:
        raise ValueError(f"loss.temperature is not used by {spec.name}; remove it")
    if spec.name == "triplet":
        return partial(triplet_loss, margin=0.1 if spec.margin is None else spec.margin, reduction=spec.reduction)
    if spec.name == "contrastive":
        return partial(
            contrastive_loss, margin=0.7 if spec.margin is None else spec.margin, reduction=spec.reduction
        )
    raise ValueError(f"loss.name must be one of {LOSS_NAMES}, got {spec.name!r}")

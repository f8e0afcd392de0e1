"""How the workers of one training run share work: the parts of a training epoch that differ between a
single process and DDP workers.

`LocalCollective` is one process. `DistributedCollective` is one of several processes of an initialised
`torch.distributed` process group (gloo on CPUs, NCCL on GPUs; Ray Train sets it up, `sare_core` never
imports Ray): each worker embeds its share of a list of images (contiguous, or the images its frozen-feature
cache holds) and all of them receive every descriptor (all-gather), so that mining on every worker sees
identical descriptors and mines identical tuples.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..models.frozen_cache import FrozenFeatureCache
from ..models.inference import embed_paths


class LocalCollective:
    """A single training process: rank 0 of a world of 1."""

    rank = 0
    world = 1

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        # This worker's frozen-feature cache of the model being trained (set by `run_epochs`), used by
        # `embed` for that model; None: every image runs through the whole model.
        self.frozen_cache: FrozenFeatureCache | None = None

    def cache_for(self, model) -> FrozenFeatureCache | None:
        """The frozen-feature cache when it belongs to `model` (or the model a DDP wrapper holds)."""
        net = model.module if hasattr(model, "module") else model
        cache = self.frozen_cache
        return cache if cache is not None and cache.applies_to(net) else None

    def share(self, count: int) -> np.ndarray:
        """This worker's contiguous share of `count` items (indices)."""
        return np.array_split(np.arange(count), self.world)[self.rank]

    def embed(self, model, paths: Sequence[str], batch_size: int,
              timings: MutableMapping[str, float] | None = None) -> np.ndarray:
        """(len(paths), D) float32 descriptors of every path, on every worker; `timings` as `embed_paths`
        (this worker's share)."""
        return embed_paths(model, list(paths), batch_size=batch_size, device=self.device, timings=timings,
                           cache=self.cache_for(model))

    def any(self, flag: bool) -> bool:
        """Whether `flag` holds on any worker."""
        return bool(flag)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Elementwise sums of `values` over the workers."""
        return [float(v) for v in values]

    def broadcast(self, value):
        """Rank 0's `value` on every worker (a synchronisation point as well)."""
        return value

    def gather(self, value) -> list:
        """Every worker's `value`, in rank order, on every worker."""
        return [value]


class DistributedCollective(LocalCollective):
    """One worker of an initialised torch.distributed process group."""

    def __init__(self, device: str | torch.device = "cpu"):
        super().__init__(device)
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("DistributedCollective needs an initialised torch.distributed process group")
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()

    def embed(self, model, paths: Sequence[str], batch_size: int,
              timings: MutableMapping[str, float] | None = None) -> np.ndarray:
        """As `LocalCollective.embed`. With a frozen-feature cache the shares follow the caches: each worker
        takes the images it holds (they cost it `hit_cost` of an uncached one) and the uncached images fill
        the shares up to equal cost (`cache_affine_shares`); without one, contiguous equal shares."""
        cache = self.cache_for(model)  # the same on every worker: one config, one model
        if not len(paths):
            return super().embed(model, paths, batch_size, timings)
        if cache is None:
            shares = np.array_split(np.arange(len(paths)), self.world)
        else:
            held = torch.from_numpy(cache.held(paths).astype(np.uint8)).to(self.device)
            everyone = [torch.zeros_like(held) for _ in range(self.world)]
            dist.all_gather(everyone, held)
            shares = cache_affine_shares(torch.stack(everyone).cpu().numpy().astype(bool), cache.hit_cost)
        mine = embed_paths(model, [paths[i] for i in shares[self.rank]], batch_size=batch_size, device=self.device,
                           timings=timings, cache=cache)
        dim = mine.shape[1]
        padded = torch.zeros(max(len(s) for s in shares), dim, dtype=torch.float32, device=self.device)
        padded[: len(mine)] = torch.from_numpy(mine).to(self.device)
        gathered = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(gathered, padded)
        out = np.empty((len(paths), dim), dtype=np.float32)
        for rows, share in zip(gathered, shares):
            out[share] = rows[: len(share)].cpu().numpy()
        return out

    def any(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum(self, values: Sequence[float]) -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def broadcast(self, value):
        box = [value if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out


def cache_affine_shares(held: np.ndarray, hit_cost: float) -> list[np.ndarray]:
    """Split the items of `held` ((world, N) bool: which worker's cache holds which item) into one share per
    worker (sorted item indices; every item exactly once) of near-equal cost, an item costing `hit_cost`
    (0 < hit_cost <= 1) on a worker that holds it and 1 elsewhere. Items held by one worker go to it, those
    held by several are spread over their holders, the uncached ones fill the shares up to a common level,
    and items then move from the costliest share to the cheapest while that lowers the costliest: the
    shares end within one uncached image of each other. Nothing held: contiguous equal shares. Costs are
    counted in integer hundredths, so every worker computes the same split from the same `held`."""
    if not 0 < hit_cost <= 1:
        raise ValueError(f"hit_cost={hit_cost} must be in (0, 1]: what a cached image costs against an uncached one")
    world, count = held.shape
    if not held.any():
        return list(np.array_split(np.arange(count), world))
    hit, miss = max(1, round(100 * hit_cost)), 100
    owner = np.full(count, -1, dtype=np.int64)
    loads = np.zeros(world, dtype=np.int64)
    pattern = (held.astype(np.int64) << np.arange(world, dtype=np.int64)[:, None]).sum(axis=0)  # who holds it
    for code in sorted(set(np.unique(pattern).tolist()) - {0}, key=lambda c: (bin(c).count("1"), c)):
        holders = np.flatnonzero([(code >> w) & 1 for w in range(world)])
        items = np.flatnonzero(pattern == code)
        counts = _water_fill(loads[holders], len(items), hit)
        owner[items] = np.repeat(holders, counts)
        loads[holders] += counts * hit
    free = np.flatnonzero(pattern == 0)
    counts = _water_fill(loads, len(free), miss)
    owner[free] = np.repeat(np.arange(world), counts)
    loads += counts * miss
    for _ in range(64 * world):  # move items off the costliest share while that lowers its cost
        high, low = int(np.argmax(loads)), int(np.argmin(loads))
        mine = np.flatnonzero(owner == high)
        cost_high = np.where(held[high, mine], hit, miss)
        cost_low = np.where(held[low, mine], hit, miss)
        gap = int(loads[high] - loads[low])
        # cheapest to take over first, then those that free most on `high`: at most four kinds of item
        for c_low, c_high in ((hit, miss), (hit, hit), (miss, miss), (miss, hit)):
            if c_low >= gap:
                continue
            kind = mine[(cost_low == c_low) & (cost_high == c_high)]
            moving = min(len(kind), max(1, gap // (c_low + c_high)))
            if moving:
                owner[kind[:moving]] = low
                loads[high] -= moving * c_high
                loads[low] += moving * c_low
                break
        else:
            break
    return [np.flatnonzero(owner == w) for w in range(world)]


def _water_fill(loads: np.ndarray, units: int, unit_cost: int) -> np.ndarray:
    """(len(loads),) int counts summing to `units` that bring the integer `loads`, each unit adding
    `unit_cost`, closest to one level (the lowest loads first; ties by position)."""
    counts = np.zeros(len(loads), dtype=np.int64)
    if units == 0:
        return counts
    order = np.argsort(loads, kind="stable")
    ranked = loads[order]
    for j in range(1, len(ranked) + 1):  # the j lowest filled to one level reach the next one's load?
        total = units * unit_cost + int(ranked[:j].sum())
        if j == len(ranked) or total <= j * int(ranked[j]):
            break
    counts[order[:j]] = np.maximum(0, (total - j * ranked[:j]) // (j * unit_cost))  # floor((level - load) / c)
    for k in range(units - int(counts.sum())):  # the remainder (fewer than j), one each to the lowest
        counts[order[k]] += 1
    return counts


def collective_for(device: str | torch.device = "cpu") -> LocalCollective:
    """The collective of this process: distributed when a process group of more than one is initialised."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DistributedCollective(device)
    return LocalCollective(device)

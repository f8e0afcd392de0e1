"""How the workers of one training run share work: the parts of a training epoch that differ between a
single process and DDP workers.

`LocalCollective` is one process. `DistributedCollective` is one of several processes of an initialised
`torch.distributed` process group (gloo on CPUs, NCCL on GPUs; Ray Train sets it up, `sare_core` never
imports Ray): each worker embeds its share of a list of images (contiguous, or the images its frozen-feature
cache holds) and all of them receive every descriptor (all-gather), so that mining on every worker sees
identical descriptors and mines identical tuples. With `share_cache`, the frozen-layer maps the workers hold
of those images are all-gathered too, so that every worker's cache holds every image embedded so far (as its
budget allows): the training steps that follow (each worker's own share of the mined tuples) find their
images in it.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..models.frozen_cache import FrozenFeatureCache
from ..models.inference import embed_paths

# A worker timed this many times slower than the fastest gets no cheaper a share than this (hundredths).
MAX_SLOWNESS = 400
# Frozen maps are handed between workers in all-gathers of at most this many bytes per worker.
SHARE_BLOCK_BYTES = 64 * 2**20


class LocalCollective:
    """A single training process: rank 0 of a world of 1."""

    rank = 0
    world = 1
    last_slowness: np.ndarray | None = None  # one worker: no split by speed
    balance_by_speed = False  # DistributedCollective: weight the shares by the workers' timed paces
    share_cache = False  # DistributedCollective: hand the frozen maps each worker computes to the others

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
        self.pace: float | None = None  # seconds per uncached image in `embed` (exponential mean; timed with balance_by_speed)
        self.last_slowness: np.ndarray | None = None  # the slowness the last split used (None: equal)

    def embed(self, model, paths: Sequence[str], batch_size: int,
              timings: MutableMapping[str, float] | None = None) -> np.ndarray:
        """As `LocalCollective.embed`. With a frozen-feature cache the shares follow the caches: each worker
        takes the images it holds (they cost it `hit_cost` of an uncached one) and the uncached images fill
        the shares up to equal cost; without one, contiguous equal shares. With `balance_by_speed` (the
        same on every worker: one config), a worker that embedded more slowly than the others in the last
        calls gets a share that much cheaper (`cache_affine_shares` with the gathered `slowness`), so that
        the workers reach the all-gather together."""
        cache = self.cache_for(model)  # the same on every worker: one config, one model
        if not len(paths):
            return super().embed(model, paths, batch_size, timings)
        slowness = self._gathered_slowness() if self.balance_by_speed else None
        if cache is None:
            held = np.zeros((self.world, len(paths)), dtype=bool)
            hit_cost = 1.0
        else:
            held, hit_cost = self._gather_rows(cache.held(paths).astype(np.uint8)).astype(bool), cache.hit_cost
        shares = cache_affine_shares(held, hit_cost, slowness)
        share = shares[self.rank]
        started = time.perf_counter()
        mine = embed_paths(model, [paths[i] for i in share], batch_size=batch_size, device=self.device,
                           timings=timings, cache=cache)
        if self.balance_by_speed:
            self._record_pace(time.perf_counter() - started,
                              float(np.where(held[self.rank, share], hit_cost, 1.0).sum()))
        if cache is not None and self.share_cache:
            self._share_maps(cache, paths)
        dim = mine.shape[1]
        padded = torch.zeros(max(len(s) for s in shares), dim, dtype=torch.float32, device=self.device)
        padded[: len(mine)] = torch.from_numpy(mine).to(self.device)
        gathered = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(gathered, padded)
        out = np.empty((len(paths), dim), dtype=np.float32)
        for rows, share in zip(gathered, shares):
            out[share] = rows[: len(share)].cpu().numpy()
        return out

    def _share_maps(self, cache: FrozenFeatureCache, paths: Sequence[str]) -> None:
        """After an `embed` call, every worker adopts the maps of `paths` that another worker holds (computed
        in this call or before; the lowest rank holding one sends it), provided every worker has room for
        all it lacks: copies that fill a worker's budget would shrink what the caches hold between them, so
        once one would overflow, nothing more is shared and each keeps what it computes. One all-gather says
        who holds what, the maps' shape and each worker's free bytes; then the maps follow in blocks of at
        most SHARE_BLOCK_BYTES per worker."""
        count = len(paths)
        shape = cache.map_shape or (0, 0, 0)
        if len(shape) != 3:
            raise ValueError(f"frozen maps of shape {shape}: sharing them needs (C, h, w) maps")
        held = cache.held(paths).astype(np.int64)
        rows = self._gather_rows(np.concatenate([held, shape, [cache.max_bytes - cache.bytes]]))
        held = rows[:, :count].astype(bool)
        shape = tuple(int(v) for v in rows[:, count : count + 3].max(axis=0))  # zeros from workers holding none
        map_bytes = 4 * int(np.prod(shape))
        sent = held.any(axis=0) & ~held.all(axis=0)  # held somewhere, lacking somewhere
        if not map_bytes or not sent.any():
            return
        lacking = (~held & sent).sum(axis=1)  # per worker: the maps it would adopt
        if (rows[:, -1] < lacking * map_bytes).any():
            return
        sender = np.argmax(held, axis=0)  # the lowest rank holding each path
        outgoing = [np.flatnonzero(sent & (sender == w)) for w in range(self.world)]
        most = max(len(o) for o in outgoing)
        per_block = max(1, SHARE_BLOCK_BYTES // map_bytes)
        for start in range(0, most, per_block):
            size = min(per_block, most - start)
            block = torch.zeros((size, *shape), dtype=torch.float32, device=self.device)
            own = outgoing[self.rank][start : start + size]
            if len(own):
                block[: len(own)] = cache.maps([paths[i] for i in own]).to(self.device)
            gathered = [torch.zeros_like(block) for _ in range(self.world)]
            dist.all_gather(gathered, block)
            for w, maps in enumerate(gathered):
                theirs = outgoing[w][start : start + size]
                if w != self.rank and len(theirs):
                    cache.adopt([paths[i] for i in theirs], maps[: len(theirs)].cpu())  # one copy per block

    def _gather_rows(self, row: np.ndarray) -> np.ndarray:
        """(world, len(row)) every worker's `row` (1-D, the same length and dtype on every worker), in rank
        order, through one all-gather on this worker's device."""
        mine = torch.from_numpy(np.ascontiguousarray(row)).to(self.device)
        everyone = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(everyone, mine)
        return torch.stack(everyone).cpu().numpy()

    def _record_pace(self, seconds: float, units: float) -> None:
        """Fold this call's seconds per uncached-image equivalent (re-mining and validation embeddings
        alike) into the pace, an exponential mean giving the newest call half the weight."""
        if units <= 0 or seconds <= 0:  # nothing embedded
            return
        pace = seconds / units
        self.pace = pace if self.pace is None else 0.5 * (self.pace + pace)

    def _gathered_slowness(self) -> np.ndarray | None:
        """(world,) int relative slowness from every worker's pace (the fastest 100, capped at
        MAX_SLOWNESS); None until every worker has timed a share. The same on every worker: each computes
        it from the same gathered float64 values."""
        paces = self._gather_rows(np.array([self.pace or 0.0], dtype=np.float64))[:, 0]
        self.last_slowness = slowness_from_paces(paces)
        return self.last_slowness

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


def cache_affine_shares(held: np.ndarray, hit_cost: float, slowness: np.ndarray | None = None) -> list[np.ndarray]:
    """Split the items of `held` ((world, N) bool: which worker's cache holds which item) into one share per
    worker (sorted item indices; every item exactly once) that the workers finish at near the same time.
    An item costs `hit_cost` (0 < hit_cost <= 1) on a worker that holds it and 1 elsewhere, times the
    worker's `slowness` ((world,) positive ints, hundredths: 100 for the fastest, 150 for one that takes
    1.5 times as long per image; default all equal). Items held by one worker go to it, those held by
    several are spread over their holders, the uncached ones fill the shares up to a common level, and
    items then move from the costliest share to whichever worker they leave lowest while that lowers the
    costliest: every share ends within one uncached image (on its own worker) of the costliest. Nothing
    held and equal slowness: contiguous equal shares; nothing held: contiguous shares. Costs are integers, so every
    worker computes the same split from the same `held` and `slowness`."""
    if not 0 < hit_cost <= 1:
        raise ValueError(f"hit_cost={hit_cost} must be in (0, 1]: what a cached image costs against an uncached one")
    world, count = held.shape
    scale = np.full(world, 100, dtype=np.int64) if slowness is None else np.asarray(slowness, dtype=np.int64)
    if scale.shape != (world,) or (scale <= 0).any():
        raise ValueError(f"slowness={scale.tolist()} must be {world} positive integers, one per worker")
    hit, miss = max(1, round(100 * hit_cost)), 100
    if not held.any():
        if (scale == scale[0]).all():
            return list(np.array_split(np.arange(count), world))
        counts = _water_fill(np.zeros(world, dtype=np.int64), count, miss * scale)
        return [np.arange(a, b) for a, b in zip(np.cumsum(counts) - counts, np.cumsum(counts))]
    owner = np.full(count, -1, dtype=np.int64)
    loads = np.zeros(world, dtype=np.int64)
    pattern = (held.astype(np.int64) << np.arange(world, dtype=np.int64)[:, None]).sum(axis=0)  # who holds it
    for code in sorted(set(np.unique(pattern).tolist()) - {0}, key=lambda c: (bin(c).count("1"), c)):
        holders = np.flatnonzero([(code >> w) & 1 for w in range(world)])
        items = np.flatnonzero(pattern == code)
        counts = _water_fill(loads[holders], len(items), hit * scale[holders])
        owner[items] = np.repeat(holders, counts)
        loads[holders] += counts * hit * scale[holders]
    free = np.flatnonzero(pattern == 0)
    counts = _water_fill(loads, len(free), miss * scale)
    owner[free] = np.repeat(np.arange(world), counts)
    loads += counts * miss * scale
    kinds = ((True, False), (True, True), (False, False), (False, True))  # (held by the taker, by the giver)
    for _ in range(64 * world):  # move items off the costliest share while that lowers its cost
        high = int(np.argmax(loads))
        mine = np.flatnonzero(owner == high)
        held_high = held[high, mine]
        best = None  # (the taker's load after one item, taker, kind): the move that leaves the taker lowest
        for low in range(world):
            gap = int(loads[high] - loads[low])
            if low == high or gap <= 0:
                continue
            held_low = held[low, mine]
            # per taker: cheapest to take over first, then those that free most on `high`
            for on_low, on_high in kinds:
                c_low = (hit if on_low else miss) * int(scale[low])
                if c_low < gap and ((held_low == on_low) & (held_high == on_high)).any():
                    if best is None or int(loads[low]) + c_low < best[0]:
                        best = (int(loads[low]) + c_low, low, (on_low, on_high))
                    break
        if best is None:
            break
        _, low, (on_low, on_high) = best
        c_low = (hit if on_low else miss) * int(scale[low])
        c_high = (hit if on_high else miss) * int(scale[high])
        kind = mine[(held[low, mine] == on_low) & (held_high == on_high)]
        moving = min(len(kind), max(1, int(loads[high] - loads[low]) // (c_low + c_high)))
        owner[kind[:moving]] = low
        loads[high] -= moving * c_high
        loads[low] += moving * c_low
    return [np.flatnonzero(owner == w) for w in range(world)]


def slowness_from_paces(paces: np.ndarray) -> np.ndarray | None:
    """(world,) int slowness (hundredths: the fastest 100, capped at MAX_SLOWNESS) from the workers'
    (world,) paces in seconds per uncached image; None (equal shares) unless every pace is positive."""
    paces = np.asarray(paces, dtype=np.float64)
    if not (paces > 0).all():
        return None
    return np.minimum(np.round(100 * paces / paces.min()), MAX_SLOWNESS).astype(np.int64)


def _water_fill(loads: np.ndarray, units: int, unit_costs: np.ndarray) -> np.ndarray:
    """(len(loads),) int counts summing to `units` that bring the integer `loads`, a unit adding
    `unit_costs[i]` to load i, closest to one level. Equal costs (every split without `slowness`): the
    closed form, the lowest loads first (ties by position), as splits were made before there were
    speeds. Unequal: the lowest level L at which the counts floor((L - load) / cost) reach `units`, the last
    units of it going to the lowest loads (ties by position)."""
    loads, unit_costs = np.asarray(loads, dtype=np.int64), np.asarray(unit_costs, dtype=np.int64)
    if units == 0:
        return np.zeros(len(loads), dtype=np.int64)
    if (unit_costs == unit_costs[0]).all():
        return _water_fill_equal_costs(loads, units, int(unit_costs[0]))

    def filled(level: int) -> np.ndarray:
        return np.maximum(0, (level - loads) // unit_costs)

    low, high = int(loads.min()), int(loads.max()) + units * int(unit_costs.max())  # filled(high) >= units
    while low < high:  # the lowest level that takes every unit
        middle = (low + high) // 2
        if filled(middle).sum() >= units:
            high = middle
        else:
            low = middle + 1
    counts = filled(low - 1)
    reaching = np.flatnonzero(filled(low) > counts)  # those that take one more unit at this level
    reaching = reaching[np.argsort(loads[reaching], kind="stable")]
    counts[reaching[: units - int(counts.sum())]] += 1
    return counts


def _water_fill_equal_costs(loads: np.ndarray, units: int, unit_cost: int) -> np.ndarray:
    """`_water_fill` with one unit cost: fill the j lowest loads to a common level, floor((level - load) /
    unit_cost) each, and hand the remainder (fewer than j) one each to the lowest."""
    counts = np.zeros(len(loads), dtype=np.int64)
    order = np.argsort(loads, kind="stable")
    ranked = loads[order]
    for j in range(1, len(ranked) + 1):  # the j lowest filled to one level reach the next one's load?
        total = units * unit_cost + int(ranked[:j].sum())
        if j == len(ranked) or total <= j * int(ranked[j]):
            break
    counts[order[:j]] = np.maximum(0, (total - j * ranked[:j]) // (j * unit_cost))
    for k in range(units - int(counts.sum())):
        counts[order[k]] += 1
    return counts


def collective_for(device: str | torch.device = "cpu") -> LocalCollective:
    """The collective of this process: distributed when a process group of more than one is initialised."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DistributedCollective(device)
    return LocalCollective(device)

"""How the workers of one training run share work: the parts of a training epoch that differ between a
single process and DDP workers.

`LocalCollective` is one process. `DistributedCollective` is one of several processes of an initialised
`torch.distributed` process group (gloo on CPUs, NCCL on GPUs; Ray Train sets it up, `sare_core` never
imports Ray): each worker embeds its contiguous share of a list of images and all of them receive every
descriptor (all-gather), so that mining on every worker sees identical descriptors and mines identical tuples.
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
        shares = np.array_split(np.arange(len(paths)), self.world)
        mine = embed_paths(model, [paths[i] for i in shares[self.rank]], batch_size=batch_size, device=self.device,
                           timings=timings, cache=self.cache_for(model))
        dim = mine.shape[1]
        padded = torch.zeros(max(len(s) for s in shares), dim, dtype=torch.float32, device=self.device)
        padded[: len(mine)] = torch.from_numpy(mine).to(self.device)
        gathered = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(gathered, padded)
        return np.concatenate([g[: len(s)].cpu().numpy() for g, s in zip(gathered, shares)])

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


def collective_for(device: str | torch.device = "cpu") -> LocalCollective:
    """The collective of this process: distributed when a process group of more than one is initialised."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DistributedCollective(device)
    return LocalCollective(device)

"""One training epoch of the NetVLAD / SARE procedure, the same in one process and in DDP workers.

    for each chunk of `chunk_size` training queries (a seeded permutation, `max_train_queries` per epoch):
        plan the chunk's cache (its queries, their potential positives, fresh negative pools + previous
        hard negatives), embed it with the current model (`collective.embed`: each worker a share, all get
        everything), mine each query's positive and hardest negatives (identical on every worker);
        every worker trains on its own share of the shuffled tuples, in whole batches of `batch_size`
        (DDP steps in lockstep), skipping a step on all workers when any worker's loss is not finite.

Every random draw is keyed by (seed, epoch, chunk), so a run is reproducible and workers agree without
broadcasting anything.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch

from ..data.place_dataset import PlaceDataset
from ..mining import GroundTruthForTraining, mine_chunk, plan_chunk, save_mining_record
from .checkpoint import TrainingState
from .collective import LocalCollective
from .config import TrainConfig
from .tuples import TupleImages

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """More training steps had a non-finite loss than `max_nonfinite_steps` allows."""


def clip_gradient(model: torch.nn.Module, max_norm: float | None) -> float:
    """The L2 norm of `model`'s gradient, all parameters with a gradient as one vector (under DDP: after the
    all-reduce, so the same on every worker); when `max_norm` is set and the norm exceeds it, the gradient is
    first scaled by max_norm / norm. Returns the norm before any scaling."""
    with_grad = [p for p in model.parameters() if p.grad is not None]
    if not with_grad:
        return 0.0
    norm = torch.nn.utils.get_total_norm([p.grad for p in with_grad])
    if max_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(with_grad, max_norm, norm)
    return float(norm)


def warmup_factor(config: TrainConfig, epoch: int, step: int) -> float:
    """The learning-rate multiplier of this worker's `step` (0-based) in `epoch`: (step + 1) / lr_warmup_steps
    during the first epoch's first lr_warmup_steps steps, else 1."""
    if epoch != 1 or step >= config.lr_warmup_steps:
        return 1.0
    return (step + 1) / config.lr_warmup_steps


def epoch_order(gt: GroundTruthForTraining, config: TrainConfig, epoch: int) -> np.ndarray:
    """The training queries (rows) of `epoch`, in training order."""
    order = np.random.default_rng([config.seed, epoch]).permutation(gt.queries)
    return order[: config.max_train_queries] if config.max_train_queries else order


def train_epoch(state: TrainingState, config: TrainConfig, train: PlaceDataset, gt: GroundTruthForTraining,
                images: TupleImages, loss_fn, epoch: int, collective: LocalCollective | None = None,
                forward: torch.nn.Module | None = None) -> dict:
    """Train `state.model` for epoch `epoch` (updating the mining state, the non-finite count and the
    schedule); returns the epoch's row: mean loss over all workers' steps, tuples trained, tuples/s,
    the share of the epoch's time spent re-mining (planning, embedding the caches, mining), the time of the
    embedding alone, the images re-mining embedded (on all workers) and those the steps trained on (this
    worker's share times the world: every image of a tuple), the learning rate after the epoch, and
    the gradient's L2 norm over the steps (median, max; before clipping) with the steps `max_grad_norm` clipped.
    With a frozen-feature cache, `mined_cached_images` / `trained_cached_images` count the images (all
    workers) whose frozen layers did not run. Timed in the same epoch on this worker: re-mining's forward
    passes and image decoding, the steps' forward + loss + backward passes (`step_compute_seconds`, with the
    frozen layers of images a frozen-feature cache did not hold yet) and tuple loading; `mining_compute_share` is
    re-mining's share of that compute (forward passes against forward + backward, summed over workers).
    `*_by_worker` (rank order): each worker's re-mining forward passes, its time in the embedding (the
    difference is decoding and waiting for the others in the all-gather) and its images served by the cache;
    `mining_slowness_by_worker`: the relative slowness (fastest 100) the epoch's last split used, from the
    workers' timed shares (None: equal shares, one worker or none timed yet).

    forward: the module steps run through (the DDP wrapper of `state.model`; default the model itself).
    Raises NonFiniteLossError past `config.max_nonfinite_steps`.
    """
    collective = collective or LocalCollective()
    forward = forward if forward is not None else state.model
    rank, world, device = collective.rank, collective.world, collective.device
    started = time.perf_counter()
    losses: list[float] = []
    grad_norms: list[float] = []  # before clipping, one per step taken
    mining_seconds = embed_seconds = load_seconds = step_compute_seconds = 0.0
    embed_timings: dict[str, float] = {}
    mined_images = tuples_seen = 0
    mining_cache, step_cache = collective.cache_for(state.model), images.cache
    mined_cached = trained_cached = 0  # images whose frozen maps came from the cache
    order = epoch_order(gt, config, epoch)
    injected = {tuple(t) for t in config.inject_nonfinite}
    step = 0  # this worker's steps in this epoch
    skipped = 0  # of them, skipped for a non-finite loss on some worker
    for chunk_index, start in enumerate(range(0, len(order), config.chunk_size)):
        chunk = order[start : start + config.chunk_size]
        mining_started = time.perf_counter()
        plan = plan_chunk(gt, train.num_db, chunk, state.mining, config.negative_pool,
                          np.random.default_rng([config.seed, epoch, chunk_index]))
        embed_started = time.perf_counter()
        # The chunk's queries and cache in one pass: one all-gather, no half-empty batch between them.
        cache_paths = [train.q_paths[i] for i in plan.queries] + [train.db_paths[i] for i in plan.cache_db]
        hits_before = mining_cache.hits if mining_cache is not None else 0
        desc = collective.embed(state.model, cache_paths, config.extract_batch_size, embed_timings)
        mined_cached += (mining_cache.hits - hits_before) if mining_cache is not None else 0
        q_desc, c_desc = desc[: len(plan.queries)], desc[len(plan.queries) :]
        embed_seconds += time.perf_counter() - embed_started
        tuples = mine_chunk(plan, q_desc, c_desc, state.mining, config.num_negatives)
        if config.mining_log_dir and rank == 0:
            os.makedirs(config.mining_log_dir, exist_ok=True)
            save_mining_record(os.path.join(config.mining_log_dir, f"epoch{epoch:03d}_chunk{chunk_index:03d}.npz"),
                               plan, tuples)
        mining_seconds += time.perf_counter() - mining_started
        mined_images += len(plan.queries) + len(plan.cache_db)
        # Every worker takes the same number of whole batches (DDP steps in lockstep).
        per_worker = (len(tuples) // (world * config.batch_size)) * config.batch_size
        shuffled = np.random.default_rng([config.seed, epoch, chunk_index, 1]).permutation(len(tuples))
        share = tuples.subset(shuffled[rank * per_worker : (rank + 1) * per_worker])
        forward.train()
        for b in range(0, len(share), config.batch_size):
            batch = share.subset(np.arange(b, b + config.batch_size))
            load_started = time.perf_counter()
            step_timings: dict[str, float] = {}
            hits_before = step_cache.hits if step_cache is not None else 0
            pixels = images(batch.queries, batch.positives, batch.negatives, step_timings).to(device)
            trained_cached += (step_cache.hits - hits_before) if step_cache is not None else 0
            compute_started = time.perf_counter()
            frozen_seconds = step_timings.get("frozen_forward", 0.0)  # uncached images' frozen layers
            load_seconds += compute_started - load_started - frozen_seconds
            step_compute_seconds += frozen_seconds
            desc = forward(pixels, from_frozen=True) if images.from_frozen else forward(pixels)
            n = len(batch)
            loss = loss_fn(desc[:n], desc[n : 2 * n], desc[2 * n :].reshape(n, config.num_negatives, -1))
            if (rank, epoch, step) in injected:
                loss = loss * float("nan")
            step += 1
            state.optimizer.zero_grad(set_to_none=True)
            if collective.any(not bool(torch.isfinite(loss))):
                state.nonfinite_steps += 1
                skipped += 1
                log.warning("epoch %d: a non-finite loss on some worker; step skipped on all (%d so far)", epoch,
                            state.nonfinite_steps)
                if state.nonfinite_steps > config.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"{state.nonfinite_steps} training steps had a non-finite loss (max_nonfinite_steps="
                        f"{config.max_nonfinite_steps}); lower the learning rate or check the data")
                continue
            loss.backward()
            grad_norms.append(clip_gradient(state.model, config.max_grad_norm))
            step_compute_seconds += time.perf_counter() - compute_started
            scheduled = [group["lr"] for group in state.optimizer.param_groups]
            for group in state.optimizer.param_groups:  # the scheduler's rate, scaled for this step only
                group["lr"] *= warmup_factor(config, epoch, step - 1)
            state.optimizer.step()
            for group, lr in zip(state.optimizer.param_groups, scheduled):
                group["lr"] = lr
            losses.append(float(loss.detach()))
            tuples_seen += n
    state.scheduler.step()
    seconds = time.perf_counter() - started
    # per worker, to see where re-mining waits: its own forward passes against its time in the embedding
    by_worker = collective.gather((round(embed_timings.get("forward", 0.0), 3), round(embed_seconds, 3),
                                   int(mined_cached), skipped))
    loss_sum, steps, tuples_seen, mining_forward, step_compute, mined_cached, trained_cached = collective.sum(
        [sum(losses), len(losses), tuples_seen, embed_timings.get("forward", 0.0), step_compute_seconds,
         mined_cached, trained_cached])
    if steps == 0:
        log.warning("epoch %d trained no tuple (too few mined tuples for %d workers x batch %d)", epoch, world,
                    config.batch_size)
    return {"epoch": epoch, "loss": loss_sum / steps if steps else float("nan"), "tuples": int(tuples_seen),
            "tuples_per_s": tuples_seen / max(seconds, 1e-9), "mining_fraction": mining_seconds / max(seconds, 1e-9),
            "seconds": seconds, "mining_seconds": mining_seconds, "mining_embed_seconds": embed_seconds,
            "mining_forward_seconds": embed_timings.get("forward", 0.0),
            "mining_forward_seconds_by_worker": [f for f, _, _, _ in by_worker],
            "mining_embed_seconds_by_worker": [e for _, e, _, _ in by_worker],
            "mined_cached_images_by_worker": [c for _, _, c, _ in by_worker],
            "skipped_steps_by_worker": [k for _, _, _, k in by_worker],
            "mining_slowness_by_worker": None if collective.last_slowness is None else collective.last_slowness.tolist(),
            "mining_decode_seconds": embed_timings.get("decode", 0.0),
            "step_compute_seconds": step_compute_seconds, "step_load_seconds": load_seconds,
            "mining_compute_share": mining_forward / max(mining_forward + step_compute, 1e-9),
            "mined_images": mined_images, "trained_images": int(tuples_seen) * (2 + config.num_negatives),
            "mined_cached_images": int(mined_cached), "trained_cached_images": int(trained_cached),
            "nonfinite_steps": state.nonfinite_steps, "lr": state.scheduler.get_last_lr()[0],
            "grad_norm_median": float(np.median(grad_norms)) if grad_norms else float("nan"),
            "grad_norm_max": max(grad_norms, default=float("nan")),
            "clipped_steps": sum(n > config.max_grad_norm for n in grad_norms) if config.max_grad_norm else 0}

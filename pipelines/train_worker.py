"""The per-worker training loop run by Ray Train's TorchTrainer (DDP: NCCL on GPU, gloo on CPU).

Every chunk of training queries: the workers extract their shares of the chunk's cache with the current
model, all-gather them, mine identical tuples (same descriptors, same seeded plan on every worker), then
each trains on its own share of the tuples. After each epoch: validation Recall@N and a checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from sare_core.data import open_splits
from sare_core.evaluation import recall_at_n
from sare_core.losses import LossSpec, build_loss
from sare_core.mining import GroundTruthForTraining, MiningState, mine_chunk, plan_chunk
from sare_core.models import embed_paths, load_model
from sare_core.models.io import model_from_payload, model_payload
from sare_core.models.preprocessing import load_rgb

from .train_config import TrainConfig

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_descriptors(model, paths: list[str], rank: int, world: int, batch_size: int, device) -> np.ndarray:
    """Each worker embeds its contiguous share of `paths`; all get the full (len(paths), D) array."""
    shares = np.array_split(np.arange(len(paths)), world)
    mine = embed_paths(model, [paths[i] for i in shares[rank]], batch_size=batch_size, device=device)
    if not _distributed():
        return mine
    dim = mine.shape[1]
    longest = max(len(s) for s in shares)
    padded = torch.zeros(longest, dim, dtype=torch.float32, device=device)
    padded[: len(mine)] = torch.from_numpy(mine).to(device)
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return np.concatenate([g[: len(s)].cpu().numpy() for g, s in zip(gathered, shares)])


def _any_rank(flag: bool, device) -> bool:
    if not _distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


class TupleImages:
    """Loads the images of (query, positive, negatives) tuples as one normalised batch."""

    def __init__(self, dataset, preprocessor, color_jitter: float, seed: int):
        self.dataset = dataset
        self.prep = preprocessor
        self.jitter = None
        if color_jitter > 0:
            from torchvision.transforms import ColorJitter

            s = color_jitter
            self.jitter = ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4))
        torch.manual_seed(seed)

    def __call__(self, q_rows, p_rows, n_rows) -> torch.Tensor:
        """(B*(2+N), 3, H, W): all queries, then all positives, then negatives tuple-major."""
        def load(path, jitter=False):
            img = load_rgb(path)
            if jitter and self.jitter is not None:
                img = self.jitter(img)
            return self.prep.to_uint8(img)

        pixels = [load(self.dataset.q_paths[q], jitter=True) for q in q_rows]
        pixels += [load(self.dataset.db_paths[p]) for p in p_rows]
        pixels += [load(self.dataset.db_paths[n]) for row in n_rows for n in row]
        return self.prep.normalize_uint8(np.stack(pixels))


def _validate(model, val, config: TrainConfig, rank, world, device, rng) -> dict[str, float]:
    q_rows = np.arange(val.num_q)
    if config.max_val_queries and val.num_q > config.max_val_queries:
        q_rows = np.sort(rng.choice(val.num_q, config.max_val_queries, replace=False))
    db = gather_descriptors(model, val.db_paths, rank, world, config.extract_batch_size, device)
    q = gather_descriptors(model, [val.q_paths[i] for i in q_rows], rank, world, config.extract_batch_size, device)
    positives = val.positives()
    recalls = recall_at_n(q, db, [positives[i] for i in q_rows], ns=config.val_ns, mode="flat")
    return {f"val_recall@{n}": r for n, r in recalls.items()}


def _save_checkpoint(directory: str, model, optimizer, scheduler, epoch, state: MiningState, history, skipped) -> None:
    arrays = state.to_arrays()
    torch.save({
        "model": model_payload(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "mining_queries": torch.from_numpy(arrays["queries"]),
        "mining_negatives": torch.from_numpy(arrays["negatives"]),
        "history": history,
        "nonfinite_steps": skipped,
    }, os.path.join(directory, CHECKPOINT_FILE))


def train_loop_per_worker(loop_config: dict) -> None:
    config = TrainConfig(**loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    if config.pid_dir:
        os.makedirs(config.pid_dir, exist_ok=True)
        with open(os.path.join(config.pid_dir, f"rank{rank}.pid"), "w") as f:
            f.write(str(os.getpid()))

    splits = open_splits(config.dataset)
    if config.eval_dataset:
        splits = {**splits, **open_splits(config.eval_dataset), config.train_split: splits[config.train_split]}
    train, val = splits[config.train_split], splits[config.val_split]
    gt = GroundTruthForTraining.from_dataset(train)
    model = load_model(loop_config["initial_model"])
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma)
    state, history, start_epoch, skipped = MiningState(), [], 1, 0

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            saved = torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
        model = model_from_payload(saved["model"], source="checkpoint")
        optimizer = torch.optim.SGD(model.trainable_parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma)
        scheduler.load_state_dict(saved["scheduler"])
        state = MiningState.from_arrays(saved["mining_queries"].numpy(), saved["mining_negatives"].numpy())
        history, start_epoch, skipped = list(saved["history"]), int(saved["epoch"]) + 1, int(saved["nonfinite_steps"])
        log.info("rank %d: resumed after epoch %d", rank, start_epoch - 1)

    net = model
    ddp_model = ray.train.torch.prepare_model(model)  # to the device; DDP when world > 1
    loss_fn = build_loss(LossSpec(name=config.loss.name, kernel=config.loss.kernel, margin=config.loss.margin))
    images = TupleImages(train, net.preprocessor, config.color_jitter, config.seed * 1000 + rank)

    if start_epoch == 1:
        metrics = _validate(net, val, config, rank, world, device, np.random.default_rng(config.seed))
        history.append({"epoch": 0, "loss": float("nan"), **metrics})
        ray.train.report({"epoch": 0, "loss": float("nan"), **metrics})

    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(gt.queries)
        if config.max_train_queries:
            order = order[: config.max_train_queries]
        losses, mining_seconds, tuples_seen = [], 0.0, 0
        for chunk_index, start in enumerate(range(0, len(order), config.chunk_size)):
            chunk = order[start : start + config.chunk_size]
            t_mine = time.perf_counter()
            plan = plan_chunk(gt, train.num_db, chunk, state, config.negative_pool,
                              np.random.default_rng([config.seed, epoch, chunk_index]))
            q_desc = gather_descriptors(net, [train.q_paths[i] for i in plan.queries], rank, world,
                                        config.extract_batch_size, device)
            c_desc = gather_descriptors(net, [train.db_paths[i] for i in plan.cache_db], rank, world,
                                        config.extract_batch_size, device)
            tuples = mine_chunk(plan, q_desc, c_desc, state, config.num_negatives)
            mining_seconds += time.perf_counter() - t_mine
            # Every worker takes the same number of whole batches (DDP steps in lockstep).
            per_worker = (len(tuples) // (world * config.batch_size)) * config.batch_size
            shuffled = np.random.default_rng([config.seed, epoch, chunk_index, 1]).permutation(len(tuples))
            share = tuples.subset(shuffled[rank * per_worker : (rank + 1) * per_worker])
            ddp_model.train()
            for b in range(0, len(share), config.batch_size):
                batch = share.subset(np.arange(b, b + config.batch_size))
                x = images(batch.queries, batch.positives, batch.negatives).to(device)
                desc = ddp_model(x)
                n = len(batch)
                q, p = desc[:n], desc[n : 2 * n]
                negs = desc[2 * n :].reshape(n, config.num_negatives, -1)
                loss = loss_fn(q, p, negs)
                if _any_rank(not bool(torch.isfinite(loss)), device):
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                    if skipped > config.max_nonfinite_steps:
                        raise FloatingPointError(
                            f"{skipped} training steps had a non-finite loss (max_nonfinite_steps="
                            f"{config.max_nonfinite_steps}); lower the learning rate or check the data")
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                tuples_seen += n
        scheduler.step()
        epoch_seconds = time.perf_counter() - started
        metrics = _validate(net, val, config, rank, world, device, np.random.default_rng(config.seed))
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        if _distributed():
            t = torch.tensor([mean_loss if losses else 0.0, float(len(losses)), float(tuples_seen)], device=device)
            t[0] *= t[1]
            dist.all_reduce(t)
            mean_loss = float(t[0] / t[1]) if t[1] > 0 else float("nan")
            tuples_seen = int(t[2])
        row = {"epoch": epoch, "loss": mean_loss, "tuples": tuples_seen, "tuples_per_s": tuples_seen / max(epoch_seconds, 1e-9),
               "mining_fraction": mining_seconds / max(epoch_seconds, 1e-9), "nonfinite_steps": skipped,
               "lr": scheduler.get_last_lr()[0], **metrics}
        history.append(row)
        if rank == 0:
            log.info("epoch %d: loss %.4f, val %s, %.1f tuples/s, mining %.0f%% of the epoch", epoch, mean_loss,
                     {k: round(v, 4) for k, v in metrics.items()}, row["tuples_per_s"], 100 * row["mining_fraction"])
        with tempfile.TemporaryDirectory() as directory:
            if rank == 0:
                _save_checkpoint(directory, net, optimizer, scheduler, epoch, state, history, skipped)
                ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(directory))
            else:
                ray.train.report(row)
        if math.isnan(mean_loss) and not losses:
            log.warning("epoch %d trained no tuple (too few mined tuples for %d workers x batch %d)",
                        epoch, world, config.batch_size)

"""The per-worker training loop run by Ray Train's TorchTrainer (DDP: NCCL on GPU, gloo on CPU).

Every chunk of training queries: the workers extract their shares of the chunk's cache with the current
model, all-gather them, mine identical tuples (same descriptors, same seeded plan on every worker), then
each trains on its own share of the tuples. After each epoch: validation Recall@N and a checkpoint.

With `val_store_dir` set, each epoch's validation descriptors become a Parquet descriptor store,
`{val_store_dir}/epoch_{NNN}`: every worker embeds its share of the split's images and writes it as one part,
rank 0 commits the store and scores it with `pipelines.evaluate.evaluate_model` (what `sare eval` runs), and
that is the recall every rank reports. A restarted attempt that redoes an epoch first removes the epoch's
old store (manifest first, so no reader ever sees a mix), then writes it again.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from sare_core.data import PlaceDataset, open_splits
from sare_core.evaluation import recall_at_n
from sare_core.losses import LossSpec, build_loss
from sare_core.mining import GroundTruthForTraining, MiningState, mine_chunk, plan_chunk, save_mining_record
from sare_core.models import embed_paths, load_model, model_hash
from sare_core.models.io import model_from_payload, model_payload
from sare_core.models.preprocessing import load_rgb
from sare_core.store import MANIFEST_NAME, PartInfo, PartWriter, StoreLocation, StoreMetadata, commit

from .evaluate import EvalConfig, ModelStores, evaluate_model
from .extract_rows import dataset_root, default_dataset_name, make_ids, relative_id
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


def val_store_uri(directory: str, epoch: int) -> str:
    """Where epoch `epoch`'s validation store lives under `val_store_dir` (epoch 0: off-the-shelf)."""
    return f"{directory.rstrip('/')}/epoch_{epoch:03d}"


@dataclass
class SplitRows:
    """The images of one split as store rows: the database, then the (selected) queries.

    ids follow `sare extract`: the image path relative to the dataset's root, qualified by role where one
    path serves as both a database image and a query.
    """

    paths: list[str]
    ids: list[str]
    roles: list[str]
    utm: np.ndarray | None
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.paths)


def split_rows(dataset: PlaceDataset, root: str, q_rows: np.ndarray | None = None) -> SplitRows:
    q_rows = np.arange(dataset.num_q) if q_rows is None else np.asarray(q_rows)
    paths = list(dataset.db_paths) + [dataset.q_paths[i] for i in q_rows]
    roles = ["database"] * dataset.num_db + ["query"] * len(q_rows)
    splits = [dataset.split] * len(paths)
    ids = make_ids([relative_id(p, root) for p in paths], roles, splits)
    utm = labels = None
    if dataset.is_geographic:
        utm = np.concatenate([dataset.db_utm, dataset.q_utm[q_rows]])
    else:
        labels = np.concatenate([dataset.db_labels, dataset.q_labels[q_rows]])
    return SplitRows(paths, ids, roles, utm, labels)


def clear_store(uri: str) -> list[str]:
    """Remove whatever an earlier attempt left at `uri`: the manifest first (from then on readers find no
    store, never a mix of attempts), then every other file. Returns the names removed."""
    location = StoreLocation.from_uri(uri)
    names = sorted(location.list_sizes())
    if MANIFEST_NAME in names:
        location.delete(MANIFEST_NAME)
    for name in names:
        if name != MANIFEST_NAME:
            location.delete(name)
    return names


def write_store_share(model, rows: SplitRows, uri: str, metadata: StoreMetadata, split: str, rank: int,
                      world: int, batch_size: int, device, task_id: str) -> list[PartInfo]:
    """Embed this worker's contiguous share of `rows` and write it as one part of the store at `uri`."""
    share = np.array_split(np.arange(len(rows)), world)[rank]
    if len(share) == 0:
        return []
    desc = embed_paths(model, [rows.paths[i] for i in share], batch_size=batch_size, device=device)
    writer = PartWriter(uri, metadata, task_id=task_id)
    writer.write(ids=[rows.ids[i] for i in share], roles=[rows.roles[i] for i in share], descriptors=desc,
                 splits=split, utm=None if rows.utm is None else rows.utm[share],
                 labels=None if rows.labels is None else rows.labels[share])
    return writer.parts


def score_store(uri: str, name: str, ns: list[int], split: str | None) -> dict[int, float]:
    """Recall@N of the store at `uri`, by `pipelines.evaluate.evaluate_model` (what `sare eval` runs)."""
    entry = ModelStores(name=name, database=uri)
    evaluation, _ = evaluate_model(entry, EvalConfig(models=[entry], ns=ns, split=split))
    return evaluation.recalls


def _broadcast(value, rank: int):
    """Rank 0's `value` on every rank (a synchronisation point as well)."""
    if not _distributed():
        return value
    box = [value if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _validate_into_store(model, val, config: TrainConfig, rank, world, device, rng, epoch: int) -> dict:
    """Validation through a descriptor store: written by all workers, committed and scored by rank 0."""
    q_rows = np.arange(val.num_q)
    if config.max_val_queries and val.num_q > config.max_val_queries:
        q_rows = np.sort(rng.choice(val.num_q, config.max_val_queries, replace=False))
    source = config.eval_dataset or config.dataset
    rows = split_rows(val, dataset_root(source), q_rows)
    uri = val_store_uri(config.val_store_dir, epoch)
    metadata = None
    if rank == 0:
        removed = clear_store(uri)
        if removed:
            log.info("epoch %d: replacing the validation store %s left by an earlier attempt", epoch, uri)
        provenance = {"stage": "train-validation", "run": config.name, "epoch": epoch,
                      "split": config.val_split, "pos_dist_thr": float(val.pos_dist_thr), "seed": config.seed,
                      "train_config": config.model_dump(mode="json")}
        metadata = StoreMetadata(dim=model.descriptor_dim, dataset=default_dataset_name(source),
                                 model_hash=model_hash(model),
                                 model_config=model.config.model_dump(mode="json"),
                                 provenance=provenance).to_dict()
    metadata = StoreMetadata.from_dict(_broadcast(metadata, rank))
    parts = write_store_share(model, rows, uri, metadata, config.val_split, rank, world,
                              config.extract_batch_size, device, task_id=f"epoch{epoch}-rank{rank}")
    mine = [p.to_dict() for p in parts]
    if _distributed():
        gathered = [None] * world
        dist.all_gather_object(gathered, mine)
    else:
        gathered = [mine]
    recalls = None
    if rank == 0:
        commit(uri, [PartInfo.from_dict(p) for share in gathered for p in share], metadata)
        recalls = score_store(uri, f"epoch {epoch}", list(config.val_ns), config.val_split)
    recalls = _broadcast(recalls, rank)
    return {**{f"val_recall@{n}": r for n, r in recalls.items()}, "val_store": uri}


def _epoch_validation(model, val, config: TrainConfig, rank, world, device, epoch: int) -> dict:
    rng = np.random.default_rng(config.seed)
    if config.val_store_dir is None:
        return _validate(model, val, config, rank, world, device, rng)
    return _validate_into_store(model, val, config, rank, world, device, rng, epoch)


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
    net.backbone.freeze_batchnorm = config.freeze_batchnorm
    ddp_model = ray.train.torch.prepare_model(model)  # to the device; DDP when world > 1
    loss_fn = build_loss(LossSpec(name=config.loss.name, kernel=config.loss.kernel, margin=config.loss.margin))
    images = TupleImages(train, net.preprocessor, config.color_jitter, config.seed * 1000 + rank)

    # Reports name the worker group's placement group, so that a driver which stops this run from outside
    # (Ray Tune's early stopping) can release it (pipelines.tune); the history does not keep it.
    placement_group = ray.get_runtime_context().get_placement_group_id()
    worker_group = {"placement_group": placement_group} if placement_group else {}

    if start_epoch == 1:
        metrics = _epoch_validation(net, val, config, rank, world, device, 0)
        history.append({"epoch": 0, "loss": float("nan"), **metrics})
        ray.train.report({"epoch": 0, "loss": float("nan"), **metrics, **worker_group})

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
            if config.mining_log_dir and rank == 0:
                os.makedirs(config.mining_log_dir, exist_ok=True)
                save_mining_record(os.path.join(config.mining_log_dir, f"epoch{epoch:03d}_chunk{chunk_index:03d}.npz"),
                                   plan, tuples)
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
        metrics = _epoch_validation(net, val, config, rank, world, device, epoch)
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
                     {k: round(v, 4) for k, v in metrics.items() if k.startswith("val_recall@")},
                     row["tuples_per_s"], 100 * row["mining_fraction"])
        with tempfile.TemporaryDirectory() as directory:
            if rank == 0:
                _save_checkpoint(directory, net, optimizer, scheduler, epoch, state, history, skipped)
                ray.train.report({**row, **worker_group},
                                 checkpoint=ray.train.Checkpoint.from_directory(directory))
            else:
                ray.train.report({**row, **worker_group})
        if math.isnan(mean_loss) and not losses:
            log.warning("epoch %d trained no tuple (too few mined tuples for %d workers x batch %d)",
                        epoch, world, config.batch_size)

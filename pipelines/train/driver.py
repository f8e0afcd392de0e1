"""The training stage: NetVLAD centroids by k-means, Ray Train DDP SARE training with periodic re-mining,
best epoch by validation recall, PCA whitening, test evaluation, tables and curves.

Run layout under `{storage_path}/{name}/` (local or s3://): initial_model.pt (off-the-shelf model with
k-means centroids, cached), Ray Train's checkpoints, model.pt (best epoch + whitening), history.json,
training_curves.png.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import fsspec
import numpy as np
import torch

from sare_core.data import PlaceDataset, open_splits
from sare_core.evaluation import format_recall_table
from sare_core.mining import GroundTruthForTraining
from sare_core.models import build_model, init_netvlad_centroids, load_model, save_model
from sare_core.models.embedding import EmbeddingModel
from sare_core.models.inference import embed_paths
from sare_core.models.io import model_from_payload
from sare_core.models.netvlad import NetVLAD
from sare_core.models.preprocessing import load_rgb
from sare_core.whitening import fit_pca_whitening

from . import ray_session
from .train_config import TrainConfig
from .train_worker import CHECKPOINT_FILE, train_loop_per_worker

log = logging.getLogger(__name__)


def _exists(path: str) -> bool:
    fs, _, paths = fsspec.get_fs_token_paths(path)
    return fs.exists(paths[0])


def run_dir(config: TrainConfig) -> str:
    base = config.storage_path if "://" in config.storage_path else os.path.abspath(config.storage_path)
    return f"{base.rstrip('/')}/{config.name}"


def load_splits(config: TrainConfig) -> dict[str, PlaceDataset]:
    splits = open_splits(config.dataset)
    if config.eval_dataset:
        splits = {**splits, **{k: v for k, v in open_splits(config.eval_dataset).items() if k != config.train_split}}
    needed = [config.train_split, config.val_split] + ([config.test_split] if config.test_split else [])
    missing = [s for s in needed if s not in splits]
    if missing:
        raise ValueError(f"dataset {config.dataset}: no split(s) {missing}; it has {sorted(splits)}")
    gt = GroundTruthForTraining.from_dataset(splits[config.train_split])
    dropped = splits[config.train_split].num_q - len(gt.queries)
    log.info("training queries: %d with a positive within %.1f m, %d dropped without one", len(gt.queries),
             np.sqrt(splits[config.train_split].nontriv_pos_dist_sq_thr), dropped)
    if len(gt.queries) == 0:
        raise ValueError(f"dataset {config.dataset}: no training query has a database image within "
                         f"sqrt(nontriv_pos_dist_sq_thr) metres")
    return splits


def initial_model(config: TrainConfig, train: PlaceDataset, path: str) -> EmbeddingModel:
    """The off-the-shelf model with NetVLAD centroids from k-means over training images (cached at `path`)."""
    if _exists(path):
        log.info("reusing the initial model (k-means centroids) at %s", path)
        return load_model(path)
    torch.manual_seed(config.seed)
    model = build_model(config.model)
    if isinstance(model.pool, NetVLAD):
        rng = np.random.default_rng(config.seed)
        rows = rng.choice(train.num_db, size=min(config.centroid_images, train.num_db), replace=False)
        prep = model.preprocessor

        def batches():
            for start in range(0, len(rows), config.extract_batch_size):
                chunk = rows[start : start + config.extract_batch_size]
                yield prep.normalize_uint8(np.stack([prep.to_uint8(load_rgb(train.db_paths[i])) for i in chunk]))

        started = time.perf_counter()
        init_netvlad_centroids(model, batches(), per_image=config.centroid_descriptors_per_image, seed=config.seed)
        log.info("k-means centroids from %d images in %.1f s", len(rows), time.perf_counter() - started)
    save_model(path, model, metadata={"stage": "initial", "seed": config.seed})
    return model


def _scaling(config: TrainConfig):
    import ray
    from ray.train import ScalingConfig

    use_gpu = config.use_gpu
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    return ScalingConfig(num_workers=config.num_workers, use_gpu=use_gpu,
                         resources_per_worker={"CPU": config.cpus_per_worker, **({"GPU": 1} if use_gpu else {})})


def fit_with_ray(config: TrainConfig, initial_path: str):
    """Run the TorchTrainer; rerunning the same name/storage_path resumes from its last checkpoint."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    ray_session.connect()
    trainer = TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config={"config": config.model_dump(mode="json"), "initial_model": initial_path},
        scaling_config=_scaling(config),
        run_config=RunConfig(
            name=config.name,
            storage_path=config.storage_path if "://" in config.storage_path else os.path.abspath(config.storage_path),
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=None),
        ),
    )
    return trainer.fit()


@dataclass
class TrainResult:
    run_dir: str
    model_path: str
    initial_model_path: str
    best_epoch: int
    history: list[dict]
    table: str


def _best_checkpoint(result, config: TrainConfig):
    key = f"val_recall@{config.select_n}"
    scored = [(m.get(key, -1.0), m.get("epoch", 0), c) for c, m in result.best_checkpoints]
    if not scored:
        raise RuntimeError("training reported no checkpoint")
    return max(scored, key=lambda t: (t[0], -t[1]))


def _history(result, best_ckpt) -> list[dict]:
    with best_ckpt.as_directory() as directory:
        saved = torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    return saved["history"]


def plot_training_curves(history: list[dict], path: str, select_n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    trained = [h for h in history if h["epoch"] > 0]
    ax1.plot([h["epoch"] for h in trained], [h["loss"] for h in trained], marker="o")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("mean training loss")
    ax1.grid(alpha=0.3)
    keys = sorted({k for h in history for k in h if k.startswith("val_recall@")}, key=lambda k: int(k.split("@")[1]))
    for k in keys:
        ax2.plot(epochs, [100 * h[k] for h in history], marker="o", label=k.replace("val_recall", "R"))
    ax2.set_xlabel("epoch (0 = off-the-shelf)")
    ax2.set_ylabel("validation recall (%)")
    ax2.set_ylim(0, 100)
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.suptitle(f"training curves (best epoch by validation R@{select_n})")
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    with fsspec.open(path, "wb") as f:
        f.write(buffer.getvalue())


def fit_whitening(model: EmbeddingModel, config: TrainConfig, train: PlaceDataset) -> None:
    """PCA whitening on training database descriptors, to model.whitening_dim (capped by the data's rank)."""
    if config.model.whitening_dim is None:
        return
    rng = np.random.default_rng(config.seed)
    rows = np.arange(train.num_db)
    if config.whitening_images and train.num_db > config.whitening_images:
        rows = np.sort(rng.choice(train.num_db, config.whitening_images, replace=False))
    model.set_whitening(None)
    desc = embed_paths(model, [train.db_paths[i] for i in rows], batch_size=config.extract_batch_size)
    dim = min(config.model.whitening_dim, len(desc) - 1, desc.shape[1])
    if dim < config.model.whitening_dim:
        log.warning("whitening: %d dims requested, %d possible from %d images of %d dims; using %d",
                    config.model.whitening_dim, min(len(desc) - 1, desc.shape[1]), len(desc), desc.shape[1], dim)
    model.set_whitening(fit_pca_whitening(desc, dim))
    log.info("PCA whitening %d -> %d dims from %d training database images", desc.shape[1], dim, len(desc))


def _absolute(path: str | None) -> str | None:
    """Local paths made absolute: Ray workers do not share the driver's working directory."""
    return path if path is None or "://" in path else os.path.abspath(path)


def run(config: TrainConfig) -> TrainResult:
    """Train, pick the best epoch, fit whitening, save model.pt; prints the seed-style validation table."""
    config = config.model_copy(update={key: _absolute(getattr(config, key))
                                       for key in ("dataset", "eval_dataset", "storage_path", "pid_dir")})
    splits = load_splits(config)
    train = splits[config.train_split]
    directory = run_dir(config)
    initial_path = f"{directory}/initial_model.pt"
    if "://" not in directory:
        os.makedirs(directory, exist_ok=True)
    initial_model(config, train, initial_path)
    result = fit_with_ray(config, initial_path)
    score, best_epoch, best_ckpt = _best_checkpoint(result, config)
    _, _, last_ckpt = max(((0, m.get("epoch", 0), c) for c, m in result.best_checkpoints), key=lambda t: t[1])
    history = _history(result, last_ckpt)
    with best_ckpt.as_directory() as ckpt_dir:
        saved = torch.load(os.path.join(ckpt_dir, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    model = model_from_payload(saved["model"], source=f"epoch {best_epoch} checkpoint")
    fit_whitening(model, config, train)
    model_path = f"{directory}/model.pt"
    save_model(model_path, model, metadata={"stage": "trained", "best_epoch": best_epoch, "seed": config.seed,
                                            "config": config.model_dump(mode="json")})
    off = next(h for h in history if h["epoch"] == 0)
    best = next(h for h in history if h["epoch"] == best_epoch)
    rows = {"off-the-shelf": {n: off[f"val_recall@{n}"] for n in config.val_ns},
            f"epoch {best_epoch}": {n: best[f"val_recall@{n}"] for n in config.val_ns}}
    table = format_recall_table(rows, config.val_ns)
    print(f"validation ({config.val_split}), best epoch {best_epoch} by R@{config.select_n}:\n{table}")
    with fsspec.open(f"{directory}/history.json", "w") as f:
        json.dump({"best_epoch": best_epoch, "history": history, "config": config.model_dump(mode="json")}, f, indent=2)
    plot_training_curves(history, f"{directory}/training_curves.png", config.select_n)
    return TrainResult(directory, model_path, initial_path, best_epoch, history, table)

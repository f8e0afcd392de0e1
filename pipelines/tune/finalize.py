"""Finalising the best trials of a sweep: the best epoch's checkpoint gets PCA whitening fitted on training
images, becomes `final/model.pt`, and writes one descriptor store per evaluation split (val, and test when
configured) scored exactly as `sare eval` scores it. Runs in a Ray task (on a GPU where the cluster has
them); a trial whose summary already names the same epoch and checkpoint is not redone."""

from __future__ import annotations

import io
import json
import logging
import time

import fsspec
import numpy as np

from .train_config import TrainConfig
from .tune_config import SweepConfig
from .tune_files import exists, is_remote, make_dirs, read_text, write_text

log = logging.getLogger(__name__)


def _checkpoint_uri(path: str, trial_dir: str) -> str:
    """Ray reports checkpoint paths on their file system without the scheme (s3 buckets); add it back."""
    if is_remote(trial_dir) and not is_remote(path):
        return f"{trial_dir.split('://', 1)[0]}://{path}"
    return path


def finalize_trial(train_dict: dict, checkpoint: str, trial_dir: str, epoch: int) -> dict:
    """The trial's best epoch made final: PCA whitening fitted on training images, model.pt, and a
    descriptor store per evaluation split (val, and test when configured), each scored like `sare eval`.

    Runs anywhere (a Ray task on a GPU node when the cluster has GPUs); idempotent: rewrites everything.
    """
    import torch

    from sare_core.models import model_hash, save_model
    from sare_core.models.inference import embed_paths
    from sare_core.models.io import model_from_payload
    from sare_core.store import StoreMetadata, commit
    from sare_core.whitening import fit_pca_whitening

    from .extract_rows import dataset_root, default_dataset_name
    from .train import load_splits
    from .train_worker import CHECKPOINT_FILE, clear_store, score_store, split_rows, write_store_share

    started = time.perf_counter()
    train = TrainConfig(**train_dict)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with fsspec.open(f"{checkpoint.rstrip('/')}/{CHECKPOINT_FILE}", "rb") as f:
        saved = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    model = model_from_payload(saved["model"], source=f"{checkpoint} (epoch {epoch})").to(device)
    splits = load_splits(train)
    if train.model.whitening_dim is not None:
        data = splits[train.train_split]
        rows = np.arange(data.num_db)
        if train.whitening_images and data.num_db > train.whitening_images:
            rows = np.sort(
                np.random.default_rng(train.seed).choice(data.num_db, train.whitening_images, replace=False)
            )
        model.set_whitening(None)
        desc = embed_paths(
            model, [data.db_paths[i] for i in rows], batch_size=train.extract_batch_size, device=device
        )
        dim = min(train.model.whitening_dim, len(desc) - 1, desc.shape[1])
        model.set_whitening(fit_pca_whitening(desc, dim).to(device))
    final = f"{trial_dir}/final"
    make_dirs(final)
    model_path = f"{final}/model.pt"
    save_model(
        model_path,
        model.cpu(),
        metadata={
            "stage": "sweep-final",
            "epoch": epoch,
            "seed": train.seed,
            "config": train.model_dump(mode="json"),
        },
    )
    model.to(device)
    digest = model_hash(model)
    summary = {
        "epoch": epoch,
        "checkpoint": checkpoint,
        "model": model_path,
        "model_hash": digest,
        "descriptor_dim": model.descriptor_dim,
        "stores": {},
        "recalls": {},
    }
    for split in [train.val_split] + ([train.test_split] if train.test_split else []):
        source = train.eval_dataset if train.eval_dataset and split != train.train_split else train.dataset
        data = splits[split]
        uri = f"{final}/{split}"
        clear_store(uri)
        metadata = StoreMetadata(
            dim=model.descriptor_dim,
            dataset=default_dataset_name(source),
            model_hash=digest,
            model_config=model.config.model_dump(mode="json"),
            provenance={
                "stage": "sweep-final",
                "epoch": epoch,
                "split": split,
                "pos_dist_thr": float(data.pos_dist_thr),
                "checkpoint": checkpoint,
            },
        )
        parts = write_store_share(
            model,
            split_rows(data, dataset_root(source)),
            uri,
            metadata,
            split,
            0,
            1,
            train.extract_batch_size,
            device,
            task_id=f"final-{split}",
        )
        commit(uri, parts, metadata)
        summary["stores"][split] = uri
        summary["recalls"][split] = {
            str(n): r for n, r in score_store(uri, split, list(train.val_ns), split).items()
        }
    summary["seconds"] = time.perf_counter() - started
    write_text(f"{final}/summary.json", json.dumps(summary, indent=2))
    return summary



def finalize(config: SweepConfig, trial: dict, use_gpu: bool, cpus: float) -> dict | None:
    """Finalise one trial (a row of the results) in a Ray task; its summary, None without a checkpoint."""
    import ray

    if trial["checkpoint"] is None:
        return None
    checkpoint = _checkpoint_uri(trial["checkpoint"], config.sweep_dir)
    trial_dir = trial["trial_dir"]
    existing = read_text(f"{trial_dir}/final/summary.json")
    if existing:
        summary = json.loads(existing)
        if summary.get("epoch") == trial["best_epoch"] and summary.get("checkpoint") == checkpoint:
            return summary
    if not exists(checkpoint):
        log.warning(
            "%s: checkpoint of epoch %s is gone (%s); not finalised", trial["trial"], trial["best_epoch"], checkpoint
        )
        return None
    train = config.trial_config(trial["_params"], trial_dir)
    task = ray.remote(num_cpus=cpus, num_gpus=1 if use_gpu else 0)(finalize_trial)
    return ray.get(task.remote(train.model_dump(mode="json"), checkpoint, trial_dir, trial["best_epoch"]))


def finalize_best(config: SweepConfig, base: TrainConfig, trials: list[dict], use_gpu: bool) -> None:
    """Finalise the `finalize_top` best trials (rows sorted best first) and add to their rows the final
    recalls (`final_val_recall@N` on the validation split, `<split>_recall@N` on the others), the model and
    the stores (`final_store:<split>`)."""
    for trial in [t for t in trials if t["value"] is not None][: config.finalize_top]:
        summary = finalize(config, trial, use_gpu, base.cpus_per_worker)
        if not summary:
            continue
        for split, recalls in summary["recalls"].items():
            prefix = "final_val" if split == base.val_split else split
            trial.update({f"{prefix}_recall@{n}": r for n, r in recalls.items()})
        trial["final_model"] = summary["model"]
        trial.update({f"final_store:{split}": uri for split, uri in summary["stores"].items()})

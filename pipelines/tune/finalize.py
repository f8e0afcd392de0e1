"""Finalising the best trials of a sweep: the best epoch's checkpoint gets PCA whitening fitted on training
images, becomes `final/model.pt`, and writes one descriptor store per evaluation split (val, and test when
configured) scored exactly as `sare eval` scores it. Runs in a Ray task (on a GPU where the cluster has
them); a trial whose summary already names the same epoch and checkpoint is not redone."""

from __future__ import annotations

import json
import logging
import time

from sare_core.paths import exists, is_remote, make_dirs, read_text, write_text
from sare_core.training.config import TrainConfig

from .config import SweepConfig

log = logging.getLogger(__name__)


def _checkpoint_uri(path: str, trial_dir: str) -> str:
    """Ray reports checkpoint paths on their file system without the scheme (s3 buckets); add it back."""
    if is_remote(trial_dir) and not is_remote(path):
        return f"{trial_dir.split('://', 1)[0]}://{path}"
    return path


def finalize_trial(train_dict: dict, checkpoint: str, trial_dir: str, epoch: int) -> dict:
    """The trial's best epoch made final: PCA whitening fitted on training images (`fit_whitening`),
    model.pt, and a descriptor store per evaluation split (val, and test when configured), each scored
    by `score_stores` as `sare eval` scores it.

    Runs anywhere (a Ray task on a GPU node when the cluster has GPUs); idempotent: rewrites everything.
    """
    import torch

    from sare_core.allocator import keep_freed_memory
    from sare_core.data.image_rows import dataset_root
    from sare_core.evaluation.store_search import score_stores
    from sare_core.models.io import model_hash, save_model
    from sare_core.training.checkpoint import model_from_checkpoint
    from sare_core.training.collective import LocalCollective
    from sare_core.training.fitting import fit_whitening
    from sare_core.training.validation import split_image_rows, store_metadata, write_split_store

    from ..train.driver import load_splits

    keep_freed_memory()  # whitening's and the stores' forward passes
    started = time.perf_counter()
    train = TrainConfig(**train_dict)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model_from_checkpoint(checkpoint).to(device)
    splits = load_splits(train)
    fit_whitening(model, splits[train.train_split].db_paths, train.model.whitening_dim, train.whitening_images,
                  train.seed, train.extract_batch_size, device)
    final = f"{trial_dir}/final"
    make_dirs(final)
    model_path = f"{final}/model.pt"
    save_model(model_path, model.cpu(), metadata={"stage": "sweep-final", "epoch": epoch, "seed": train.seed,
                                                  "config": train.model_dump(mode="json")})
    model.to(device)
    summary = {"epoch": epoch, "checkpoint": checkpoint, "model": model_path, "model_hash": model_hash(model),
               "descriptor_dim": model.descriptor_dim, "stores": {}, "recalls": {}}
    for split in [train.val_split] + ([train.test_split] if train.test_split else []):
        source = train.eval_dataset if train.eval_dataset and split != train.train_split else train.dataset
        data = splits[split]
        uri = f"{final}/{split}"
        metadata = store_metadata(model, source, {"stage": "sweep-final", "epoch": epoch, "split": split,
                                                  "pos_dist_thr": float(data.pos_dist_thr), "checkpoint": checkpoint})
        write_split_store(model, split_image_rows(data, dataset_root(source)), uri, metadata, LocalCollective(device),
                          train.extract_batch_size, f"final-{split}")
        summary["stores"][split] = uri
        recalls = score_stores(split, uri, ns=list(train.val_ns), split=split).evaluation.recalls
        summary["recalls"][split] = {str(n): r for n, r in recalls.items()}
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

"""The training stage: the initial model (k-means centroids), Ray Train DDP training with periodic
re-mining, the best epoch by validation recall, PCA whitening, the validation table and training curves.

    result = run(load_config(TrainConfig, "configs/pitts30k_vgg16_sare_joint.yaml"))

Run layout under `{storage_path}/{name}/` (local or s3://): initial_model.pt (the off-the-shelf model with
k-means centroids, cached), Ray Train's checkpoints (one per epoch), model.pt (best epoch + whitening),
history.json, training_curves.png. Rerunning the same name and storage_path resumes from the last
checkpoint, provided the settings are those the run was started with (run_config.json; only where it runs,
on what resources and for how many epochs may change): anything else is refused with the fields that
differ, as resuming would mix two runs. The recipes themselves (fitting, epochs, checkpoints) live in
`sare_core.training`.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from sare_core.data.place_dataset import PlaceDataset
from sare_core.data.sources import open_splits
from sare_core.evaluation.report import format_recall_table
from sare_core.mining import GroundTruthForTraining
from sare_core.paths import absolute, exists, join, make_dirs, move, read_text, write_bytes, write_text
from sare_core.training.config import TrainConfig

from .. import ray_session

log = logging.getLogger(__name__)


def run_dir(config: TrainConfig) -> str:
    return join(absolute(config.storage_path), config.name)


RUN_CONFIG_FILE = "run_config.json"  # the settings a run was started (or last resumed) with
# What may change when a run is resumed: where it runs, on what resources, how long, and its diagnostics.
RESUMABLE_CHANGES = frozenset({
    "name", "storage_path", "epochs", "num_workers", "use_gpu", "cpus_per_worker", "frozen_cache_mb",
    "extract_batch_size", "max_failures", "pid_dir", "inject_nonfinite", "mining_log_dir", "max_nonfinite_steps",
    "val_store_dir", "balance_by_speed", "frozen_cache_shared", "channels_last",
})


class RunSettingsChanged(ValueError):
    """A run folder holds a run started with other settings than those asked for now."""


def resolved(config: TrainConfig) -> TrainConfig:
    """`config` with its paths absolute (what the run records and compares)."""
    return config.model_copy(update={key: absolute(getattr(config, key))
                                     for key in ("dataset", "eval_dataset", "storage_path", "pid_dir")})


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def settings_changed(config: TrainConfig) -> list[str]:
    """The settings of `config` (resolved) that differ from those its run folder was trained with, as
    'field: then -> now' (fields in RESUMABLE_CHANGES aside); [] for a new run. Read from run_config.json, or
    from history.json for a run made before that file existed."""
    directory = run_dir(config)
    text = read_text(join(directory, RUN_CONFIG_FILE))
    if text is None:
        history = read_text(join(directory, "history.json"))
        text = json.dumps(json.loads(history).get("config")) if history else None
    if text is None or json.loads(text) is None:
        return []
    saved = json.loads(text)
    try:  # fields added since with their defaults, as the run had them
        saved = TrainConfig.model_validate(saved).model_dump(mode="json")
    except ValidationError as error:  # a field since removed or renamed: the fields both versions have decide
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        log.warning("%s: its recorded settings are not valid for this version (%s); comparing the fields both "
                    "versions have", directory, problems)
    then, now = _flat(saved), _flat(config.model_dump(mode="json"))
    return [f"{key}: {then[key]!r} -> {now[key]!r}" for key in sorted(set(then) & set(now))
            if key.split(".")[0] not in RESUMABLE_CHANGES and then[key] != now[key]]


def load_splits(config: TrainConfig) -> dict[str, PlaceDataset]:
    """The run's splits (training, validation and, when set, test; `eval_dataset` may supply the latter
    two); ValueError naming the dataset when one is missing or no training query has a positive."""
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


def ensure_initial_model(config: TrainConfig, train: PlaceDataset, path: str) -> str:
    """The run's initial model (k-means centroids on training database images) at `path`, made unless it is
    there; written under a temporary name first, so an interrupted run never leaves half a file."""
    from sare_core.models.io import save_model
    from sare_core.training.fitting import initial_model

    if exists(path):
        log.info("reusing the initial model (k-means centroids) at %s", path)
        return path
    model, record = initial_model(config.model, train.db_paths, config.centroid_images,
                                  config.centroid_descriptors_per_image, config.seed, config.extract_batch_size)
    partial = f"{path}.{uuid.uuid4().hex[:8]}.partial"
    save_model(partial, model, metadata={"stage": "initial", "seed": config.seed, **record})
    move(partial, path)
    return path


def uses_gpu(config: TrainConfig, cluster_resources: dict) -> bool:
    """Whether the run's workers take a GPU each: `use_gpu`, or by default when the cluster has GPUs."""
    return config.use_gpu if config.use_gpu is not None else cluster_resources.get("GPU", 0) >= 1


def scaling_config(config: TrainConfig, cluster_resources: dict):
    """Ray Train's ScalingConfig: `num_workers` workers of `cpus_per_worker` CPUs and one GPU each when
    `uses_gpu`."""
    from ray.train import ScalingConfig

    use_gpu = uses_gpu(config, cluster_resources)
    return ScalingConfig(num_workers=config.num_workers, use_gpu=use_gpu,
                         resources_per_worker={"CPU": config.cpus_per_worker, **({"GPU": 1} if use_gpu else {})})


def torch_trainer(config: TrainConfig, initial_path: str, run_config):
    """The TorchTrainer of a run: `pipelines.train.worker.train_loop_per_worker` on each worker (which
    resumes from the run's latest checkpoint, if any). Fit it inside `ray_session.one_node_train_env()`."""
    import ray
    from ray.train.torch import TorchTrainer

    from .worker import train_loop_per_worker

    return TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config={"config": config.model_dump(mode="json"), "initial_model": initial_path},
        scaling_config=scaling_config(config, ray.cluster_resources()),
        run_config=run_config,
    )


def fit_with_ray(config: TrainConfig, initial_path: str):
    """Run the TorchTrainer. Rerunning the same name/storage_path resumes from the run's last checkpoint,
    whether the earlier run finished or its driver was killed (the workers look at the checkpoint folders
    under the run, not only at Ray Train's bookkeeping of them)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    ray_session.connect()
    run_config = RunConfig(name=config.name, storage_path=absolute(config.storage_path),
                           failure_config=FailureConfig(max_failures=config.max_failures),
                           checkpoint_config=CheckpointConfig(num_to_keep=None))
    with ray_session.one_node_train_env():
        return torch_trainer(config, initial_path, run_config).fit()


@dataclass
class TrainResult:
    run_dir: str
    model_path: str
    initial_model_path: str
    best_epoch: int
    history: list[dict]
    table: str


def best_epoch(history: list[dict], select_n: int) -> int:
    """The trained epoch (>= 1) with the highest validation Recall@select_n; the earliest of equals."""
    key = f"val_recall@{select_n}"
    trained = [h for h in history if h["epoch"] > 0]
    if not trained:
        raise RuntimeError("training reported no trained epoch")
    return max(trained, key=lambda h: (h.get(key, -1.0), -h["epoch"]))["epoch"]


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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes(path, buffer.getvalue())


def run(config: TrainConfig) -> TrainResult:
    """Train, pick the best epoch on validation, fit whitening, save model.pt; prints the validation table."""
    from sare_core.models.io import save_model
    from sare_core.training.checkpoint import checkpoints_by_epoch, model_from_checkpoint, read_checkpoint
    from sare_core.training.fitting import fit_whitening

    config = resolved(config)
    directory = run_dir(config)
    changed = settings_changed(config)
    if changed:
        raise RunSettingsChanged(
            f"{directory} holds a run trained with other settings ({'; '.join(changed[:8])}"
            f"{'; ...' if len(changed) > 8 else ''}): resuming it would mix two runs. Choose another name "
            f"(--set name=...) or delete that folder to start again")
    splits = load_splits(config)
    train = splits[config.train_split]
    make_dirs(directory)
    write_text(join(directory, RUN_CONFIG_FILE), json.dumps(config.model_dump(mode="json"), indent=2))
    initial_path = ensure_initial_model(config, train, join(directory, "initial_model.pt"))
    done = checkpoints_by_epoch(directory)
    if done and max(done) >= config.epochs:  # a finished run: no Ray Train start-up (~15 s) for nothing
        log.info("%s: trained to epoch %d already (epochs: %d); not starting Ray Train", directory, max(done),
                 config.epochs)
    else:
        fit_with_ray(config, initial_path)
    checkpoints = checkpoints_by_epoch(directory)
    if not checkpoints:
        raise RuntimeError(f"{directory}: training finished without a checkpoint")
    history = read_checkpoint(checkpoints[max(checkpoints)])["history"]
    chosen = best_epoch(history, config.select_n)
    model = model_from_checkpoint(checkpoints[chosen])
    fit_whitening(model, train.db_paths, config.model.whitening_dim, config.whitening_images, config.seed,
                  config.extract_batch_size)
    model_path = join(directory, "model.pt")
    save_model(model_path, model, metadata={"stage": "trained", "best_epoch": chosen, "seed": config.seed,
                                            "config": config.model_dump(mode="json")})
    off = next(h for h in history if h["epoch"] == 0)
    best = next(h for h in history if h["epoch"] == chosen)
    rows = {"off-the-shelf": {n: off[f"val_recall@{n}"] for n in config.val_ns},
            f"epoch {chosen}": {n: best[f"val_recall@{n}"] for n in config.val_ns}}
    table = format_recall_table(rows, config.val_ns)
    print(f"validation ({config.val_split}), best epoch {chosen} by R@{config.select_n}:\n{table}")
    write_text(join(directory, "history.json"), json.dumps(
        {"best_epoch": chosen, "history": history, "config": config.model_dump(mode="json")}, indent=2))
    plot_training_curves(history, join(directory, "training_curves.png"), config.select_n)
    return TrainResult(directory, model_path, initial_path, chosen, history, table)

"""The sweep stage: Ray Tune drives one Ray Train `TorchTrainer` per trial, ASHA stops weak trials early on
validation recall, and every reported recall is computed from the Parquet descriptor stores the trial wrote.

    result = run(load_config(SweepConfig, "configs/sweep_tiny.yaml"))

Pattern (Ray Train V2): each trial is a plain function trainable (`_trial`) that builds the trial's
TrainConfig (the sweep's `train` section + the sampled parameters), computes its initial model (k-means
centroids) and fits a TorchTrainer whose `TuneReportCallback` forwards rank 0's per-epoch reports to Tune.
The trial function reserves `trial_cpus` (0 by default); the trainer's workers reserve their own CPUs /
GPUs, and `max_concurrent_trials` (default: what the cluster's GPUs, or CPUs, hold) bounds the trials
running at once.

Layout under `{storage_path}/{name}/` (local or s3://):

    sweep.yaml                  the sweep config (a rerun must match it; then it resumes)
    trial_<id>/                 Tune's trial folder (result.json, params) and the trial's own files:
        initial_model.pt        off-the-shelf model with k-means centroids
        train/                  the TorchTrainer run (checkpoints; a restarted trial resumes from them)
        val/epoch_NNN/          validation descriptor store of each epoch (000 = off-the-shelf)
        final/                  finalised trials: model.pt (best epoch + PCA whitening), one store per
                                split (val, test) and summary.json with their recalls
    results.parquet/.md         one row per trial, sorted by the metric
    epochs.parquet              one row per reported epoch (recalls, store, checkpoint)
    best_train.yaml             the best trial's training config, for `sare train --config`
    sweep.png                   the metric against epochs, trials and each hyperparameter
    best_eval/                  `sare eval` of the best trial's test store (eval.json, PNG, HTML report)

An interrupted sweep resumes when the same command runs again: Tune restores the experiment (finished
trials are kept, unfinished ones restart) and each restarted trial's TorchTrainer resumes from its last
checkpoint, rewriting the validation store of any epoch it redoes.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import fsspec
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config_io import _describe, dump_config
from .train_config import TrainConfig

log = logging.getLogger(__name__)

SPEC_KINDS = ("grid", "choice", "uniform", "loguniform", "quniform", "randint", "lograndint")
TRIAL_PREFIX = "trial_"
OPTUNA_EXTRA = "tune"
MAX_CHECKED_COMBINATIONS = 10_000
PER_TRIAL_FIELDS = ("name", "storage_path", "val_store_dir")
WEIGHT_KEYWORDS = ("none", "imagenet", "torchvision-download")  # ModelConfig.weights values that are no path


# ----------------------------------------------------------------------------------------------- config


class ParamSpec(BaseModel):
    """One hyperparameter's values: exactly one of the fields.

    grid: every value is tried (Tune's grid_search). choice: one value sampled per trial (every value for
    `algorithm: grid`). uniform / loguniform: [low, high] floats. quniform: [low, high, step].
    randint / lograndint: [low, high] integers, both ends included. A mapping value replaces the whole
    section it names (e.g. `loss: {choice: [{name: triplet, margin: 0.1}, {name: sare_joint}]}`).
    """

    model_config = ConfigDict(extra="forbid")
    grid: list[Any] | None = Field(None, min_length=1)
    choice: list[Any] | None = Field(None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    quniform: tuple[float, float, float] | None = None
    randint: tuple[int, int] | None = None
    lograndint: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        given = [k for k in SPEC_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SPEC_KINDS)} (got {given or 'none'})")
        kind = given[0]
        if kind in ("uniform", "loguniform", "quniform", "randint", "lograndint"):
            low, high = getattr(self, kind)[:2]
            if not low < high:
                raise ValueError(f"{kind}: low {low} must be below high {high}")
            if kind.startswith("log") and low <= 0:
                raise ValueError(f"{kind}: the range must be positive, got low {low}")
            if kind == "quniform" and self.quniform[2] <= 0:
                raise ValueError(f"quniform: step must be positive, got {self.quniform[2]}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in SPEC_KINDS if getattr(self, k) is not None)

    @property
    def values(self) -> list[Any] | None:
        """The listed values (grid / choice), None for ranges."""
        return self.grid if self.grid is not None else self.choice

    @property
    def structured(self) -> bool:
        """Whether some listed value is a mapping or a list (sent through Tune as JSON text)."""
        return any(isinstance(v, (dict, list)) for v in self.values or [])

    def probes(self) -> list[Any]:
        """Values that must all make a valid TrainConfig: every listed value, or both ends of a range."""
        if self.values is not None:
            return list(self.values)
        low, high = getattr(self, self.kind)[:2]
        return [low, high]


class SearchConfig(BaseModel):
    """How trials are proposed. random: Tune's variant generator (grid values crossed, the others
    sampled); grid: every `choice` becomes a grid too (ranges not allowed); optuna: Optuna's TPE sampler
    through Ray Tune's OptunaSearch (the `tune` extra; grid values not allowed)."""

    model_config = ConfigDict(extra="forbid")
    algorithm: Literal["random", "grid", "optuna"] = "random"
    num_samples: int = Field(
        1, ge=1, description="random/optuna: trials; with grid values: repeats of the grid"
    )
    seed: int = 0


class SchedulerConfig(BaseModel):
    """ASHA early stopping on the sweep's metric, with the epoch as time (epoch 0 = off-the-shelf)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, ge=1, description="default: the largest number of epochs of the space")
    brackets: int = Field(1, ge=1)


class SweepConfig(BaseModel):
    """`sare tune`: a search space over TrainConfig fields, its search algorithm, early stopping and
    outputs. Paths in `train` (dataset, storage, weights) may be relative to the working directory."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "sweep", description="the sweep's folder under storage_path (and Tune's experiment name)"
    )
    storage_path: str = Field("runs", description="local folder or s3://bucket/prefix")
    base_config: str | None = Field(None, description="a training YAML every trial starts from")
    train: dict = Field(
        default_factory=dict, description="TrainConfig fields for every trial (over base_config)"
    )
    search_space: dict[str, ParamSpec] = Field(
        min_length=1,
        description="dotted TrainConfig field -> values, e.g. lr, loss, num_negatives, model.num_clusters",
    )
    metric: str = Field("val_recall@5", description="what ASHA and the results rank by: val_recall@N or loss")
    mode: Literal["max", "min"] = "max"
    search: SearchConfig = SearchConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="default: trials the cluster's GPUs (or CPUs) hold at once"
    )
    trial_cpus: float = Field(
        0,
        ge=0,
        description="CPUs reserved by each trial's driver function (its "
        "TorchTrainer workers reserve their own)",
    )
    trial_memory_mb: float = Field(
        256,
        gt=0,
        description="memory reserved by each trial's driver function "
        "(Ray needs some resource per trial; memory keeps the CPUs for the workers)",
    )
    keep_checkpoints: int | None = Field(
        None, ge=1, description="per trial, besides the latest: the best N by the metric (None: all)"
    )
    finalize_top: int = Field(1, ge=1, description="best trials finalised: whitened model, val/test stores")
    resume_errored: bool = Field(False, description="on resume, rerun trials that failed (else keep them)")
    ray_address: str | None = Field(None, description="Ray cluster to join (default: RAY_ADDRESS or local)")

    @field_validator("search_space")
    @classmethod
    def _keys(cls, space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for key in space:
            if key.split(".")[0] in PER_TRIAL_FIELDS:
                raise ValueError(f"{key}: set per trial by the sweep, it cannot be searched")
            if not all(key.split(".")):
                raise ValueError(f"{key!r} is not a dotted field name")
        return space

    @property
    def sweep_dir(self) -> str:
        base = self.storage_path if "://" in self.storage_path else os.path.abspath(self.storage_path)
        return f"{base.rstrip('/')}/{self.name}"

    # -- building trial configs

    def base_train_dict(self) -> dict:
        """The `train` section over `base_config`, before any parameter is applied."""
        data: dict = {}
        if self.base_config:
            if not os.path.isfile(self.base_config):
                raise FileNotFoundError(f"base_config: no such file: {self.base_config}")
            loaded = yaml.safe_load(open(self.base_config).read()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"base_config {self.base_config}: the top level must be a mapping")
            data = loaded
        return _merge(data, self.train)

    def train_dict(self, params: dict) -> dict:
        """The training config dict of a trial with `params` (decoded values), paths as the user gave them."""
        data = self.base_train_dict()
        for key, value in params.items():
            _set_path(data, key, value)
        return data

    def trial_config(self, params: dict, trial_dir: str) -> TrainConfig:
        """The TrainConfig a trial runs: absolute paths (trials run in Tune's working folders), its run
        under the trial folder and the per-epoch validation stores under `trial_dir/val`."""
        data = _absolute_paths(self.train_dict(params))
        data.update(name="train", storage_path=trial_dir, val_store_dir=f"{trial_dir}/val")
        return TrainConfig(**data)

    def decode(self, params: dict) -> dict:
        """Trial params as Tune hands them over -> the values to set (structured values decoded from JSON)."""
        out = {}
        for key, value in params.items():
            if key not in self.search_space:
                continue
            spec = self.search_space[key]
            out[key] = json.loads(value) if spec.structured and isinstance(value, str) else value
        return out

    # -- checks before any work

    def check(self) -> TrainConfig:
        """ValueError naming the field when the sweep cannot run; returns the base TrainConfig."""
        try:
            base = TrainConfig(**{**self.base_train_dict(), "name": "check"})
        except ValidationError as exc:
            raise ValueError(f"train: invalid training config: {_describe(exc)}") from None
        for key, spec in self.search_space.items():
            for value in spec.probes():
                data = self.base_train_dict()
                try:
                    _set_path(data, key, value)
                    TrainConfig(**data)
                except (ValidationError, ValueError) as exc:
                    text = _describe(exc) if isinstance(exc, ValidationError) else str(exc)
                    raise ValueError(
                        f"search_space.{key}: value {value!r} makes an invalid training config: {text}"
                    ) from None
        listed = {k: s.probes() for k, s in self.search_space.items() if s.values is not None}
        if 1 < len(listed) and math.prod(len(v) for v in listed.values()) <= MAX_CHECKED_COMBINATIONS:
            for combination in itertools.product(*listed.values()):
                params = dict(zip(listed, combination))
                try:
                    TrainConfig(**self.train_dict(params))
                except ValidationError as exc:
                    raise ValueError(
                        f"search_space: the combination {params} makes an invalid training config: "
                        f"{_describe(exc)}"
                    ) from None
        allowed = ["loss"] + [f"val_recall@{n}" for n in base.val_ns]
        if self.metric not in allowed:
            raise ValueError(f"metric: {self.metric!r} is not reported by training; choose one of {allowed}")
        if (self.metric == "loss") != (self.mode == "min"):
            log.warning(
                "metric %s with mode %s: the sweep looks for the %s value",
                self.metric,
                self.mode,
                "smallest" if self.mode == "min" else "largest",
            )
        algorithm = self.search.algorithm
        if algorithm == "grid":
            ranges = [k for k, s in self.search_space.items() if s.values is None]
            if ranges:
                raise ValueError(
                    f"search.algorithm: grid needs listed values; {ranges} are ranges (use choice/grid, "
                    f"or algorithm random/optuna)"
                )
        if algorithm == "optuna":
            grids = [k for k, s in self.search_space.items() if s.grid is not None]
            if grids:
                raise ValueError(f"search.algorithm: optuna cannot search grid values ({grids}); use choice")
            _import_optuna()
        if self.scheduler.type == "asha" and self.scheduler.grace_period > self.max_epochs(base):
            raise ValueError(
                f"scheduler.grace_period {self.scheduler.grace_period} exceeds the epochs "
                f"({self.max_epochs(base)})"
            )
        return base

    def max_epochs(self, base: TrainConfig) -> int:
        spec = self.search_space.get("epochs")
        if spec is None:
            return base.epochs
        return int(max(spec.probes()))

    def identity(self) -> dict:
        """The fields that define the experiment: a resumed sweep must have the same."""
        data = self.model_dump(mode="json")
        return {
            k: data[k]
            for k in ("name", "base_config", "train", "search_space", "metric", "mode", "search", "scheduler")
        }


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_path(data: dict, dotted: str, value: Any) -> None:
    """data[a][b][c] = value for 'a.b.c' (a mapping value replaces the section)."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"{dotted}: {key} is not a section")
        node[key] = child = dict(child)
        node = child
    node[keys[-1]] = value


def _absolute(path: str | None) -> str | None:
    return path if path is None or "://" in path else os.path.abspath(path)


def _absolute_paths(data: dict) -> dict:
    data = dict(data)
    for key in ("dataset", "eval_dataset", "pid_dir"):
        if data.get(key):
            data[key] = _absolute(data[key])
    model = data.get("model")
    weights = model.get("weights") if isinstance(model, dict) else None
    if isinstance(weights, str) and weights not in WEIGHT_KEYWORDS:
        data["model"] = {**model, "weights": _absolute(weights)}
    return data


def _import_optuna():
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ValueError(
            f"search.algorithm: optuna needs the optional package 'optuna' (install the "
            f"'{OPTUNA_EXTRA}' extra: pip install 'sare[{OPTUNA_EXTRA}]')"
        ) from None
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch


# ------------------------------------------------------------------------------------------ Tune pieces


def trial_dirname(trial) -> str:
    """Tune's trial folder name: `trial_<trial id>` (stable across a resume)."""
    return f"{TRIAL_PREFIX}{trial.trial_id}"


def _encode(spec: ParamSpec, value: Any) -> Any:
    return json.dumps(value) if spec.structured else value


def param_space(config: SweepConfig) -> dict:
    """Tune's param_space: one domain per searched field (structured values as JSON text)."""
    from ray import tune

    grid_all = config.search.algorithm == "grid"
    space = {}
    for key, spec in config.search_space.items():
        kind = spec.kind
        if kind == "grid" or (kind == "choice" and grid_all):
            space[key] = tune.grid_search([_encode(spec, v) for v in spec.values])
        elif kind == "choice":
            space[key] = tune.choice([_encode(spec, v) for v in spec.values])
        elif kind == "uniform":
            space[key] = tune.uniform(*spec.uniform)
        elif kind == "loguniform":
            space[key] = tune.loguniform(*spec.loguniform)
        elif kind == "quniform":
            space[key] = tune.quniform(*spec.quniform)
        elif kind == "randint":
            space[key] = tune.randint(spec.randint[0], spec.randint[1] + 1)
        else:
            space[key] = tune.lograndint(spec.lograndint[0], spec.lograndint[1] + 1)
    return space


def search_algorithm(config: SweepConfig, concurrency: int):
    """The search algorithm, bounded to `concurrency` running trials (metric and mode come from TuneConfig).

    Tune applies TuneConfig.max_concurrent_trials only to a `Searcher` (Optuna); the variant generator of
    random/grid search takes its bound itself.
    """
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if config.search.algorithm == "optuna":
        return ConcurrencyLimiter(_import_optuna()(seed=config.search.seed), max_concurrent=concurrency)
    return BasicVariantGenerator(random_state=config.search.seed, max_concurrent=concurrency)


def scheduler(config: SweepConfig, base: TrainConfig):
    if config.scheduler.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    s = config.scheduler
    return ASHAScheduler(
        time_attr="epoch",
        max_t=s.max_t or config.max_epochs(base),
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
        brackets=s.brackets,
    )


def _uses_gpu(train: TrainConfig, resources: dict) -> bool:
    return train.use_gpu if train.use_gpu is not None else resources.get("GPU", 0) >= 1


def default_concurrency(config: SweepConfig, train: TrainConfig, resources: dict) -> int:
    """Trials that fit at once: the cluster's GPUs over each trial's GPU workers, else its CPUs over each
    trial's CPUs (workers and the trial function)."""
    if _uses_gpu(train, resources):
        fit = resources.get("GPU", 0) // train.num_workers
    else:
        fit = resources.get("CPU", 1) // (train.num_workers * train.cpus_per_worker + config.trial_cpus)
    return max(1, int(fit))


def _release_placement_group(hex_id: str) -> bool:
    """Remove a placement group unless it is gone already; True when it was removed now."""
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    try:
        group = PlacementGroup(ray.PlacementGroupID.from_hex(hex_id))
        if placement_group_table(group).get("state") in (None, "REMOVED"):
            return False
        remove_placement_group(group)
        return True
    except Exception as exc:  # an id from an earlier Ray session, or a group removed meanwhile
        log.debug("placement group %s: %s", hex_id, exc)
        return False


def _worker_group_releaser():
    """A Tune callback that frees the worker placement groups of trials that Tune stopped.

    Tune stops a trial (ASHA, or at max_t) by ending its function's actor; the TorchTrainer's controller
    dies with it, but the placement group of its workers outlives it unless Ray Train's cleaner (which
    needs Ray's State API, i.e. the dashboard) removes it, and the CPUs/GPUs it holds would starve the
    next trials. Workers report their placement group; a few seconds after a trial ends (its actor and
    controller are gone by then, so nothing recreates the group) the callback removes what is left.
    """
    from ray.tune import Callback

    class WorkerGroupReleaser(Callback):
        def __init__(self, delay_s: float = 3.0):
            self.delay_s = delay_s
            self.groups: dict[str, set[str]] = {}
            self.ended: dict[str, float] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("placement_group"):
                self.groups.setdefault(trial.trial_id, set()).add(result["placement_group"])

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ended[trial.trial_id] = time.monotonic()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.ended[trial.trial_id] = time.monotonic()

        def on_step_begin(self, iteration, trials, **info):
            now = time.monotonic()
            for trial_id in [t for t, at in self.ended.items() if now - at >= self.delay_s]:
                self.release(trial_id)

        def on_experiment_end(self, trials, **info):
            time.sleep(self.delay_s)
            for trial_id in list(self.groups):
                self.release(trial_id)

        def release(self, trial_id: str) -> None:
            self.ended.pop(trial_id, None)
            for group in self.groups.pop(trial_id, ()):
                if _release_placement_group(group):
                    log.info(
                        "trial %s: released the placement group %s its stopped workers left", trial_id, group
                    )

    return WorkerGroupReleaser()


def _trial(params: dict, sweep: dict) -> None:
    """One trial: its TrainConfig, initial model, then a TorchTrainer reporting each epoch to Tune."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from .train import initial_model, load_splits
    from .train_worker import train_loop_per_worker

    config = SweepConfig(**sweep)
    trial_dir = f"{config.sweep_dir}/{TRIAL_PREFIX}{ray.tune.get_context().get_trial_id()}"
    train = config.trial_config(config.decode(params), trial_dir)
    if "://" not in trial_dir:
        os.makedirs(trial_dir, exist_ok=True)
    splits = load_splits(train)
    initial_path = f"{trial_dir}/initial_model.pt"
    if not _exists(
        initial_path
    ):  # made under a temporary name, so an interrupted trial never leaves half a file
        partial = f"{initial_path}.{uuid.uuid4().hex[:8]}.partial"
        initial_model(train, splits[train.train_split], partial)
        fs, _, (source,) = fsspec.get_fs_token_paths(partial)
        fs.mv(source, fsspec.get_fs_token_paths(initial_path)[2][0])
    use_gpu = _uses_gpu(train, ray.cluster_resources())
    keep = config.keep_checkpoints
    trainer = TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config={"config": train.model_dump(mode="json"), "initial_model": initial_path},
        scaling_config=ray.train.ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": train.cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name="train",
            storage_path=trial_dir,
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=keep,
                checkpoint_score_attribute=config.metric if keep else None,
                checkpoint_score_order=config.mode,
            ),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


# ------------------------------------------------------------------------------------- finalising trials


def _checkpoint_uri(path: str, trial_dir: str) -> str:
    """Ray reports checkpoint paths on their file system without the scheme (s3 buckets); add it back."""
    if "://" in trial_dir and "://" not in path:
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
    if "://" not in final:
        os.makedirs(final, exist_ok=True)
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
    _write_text(f"{final}/summary.json", json.dumps(summary, indent=2))
    return summary


# ------------------------------------------------------------------------------------------ the results


class SweepInterrupted(RuntimeError):
    """The sweep stopped before every trial ended (Ctrl+C): its state is saved, rerun to resume."""


@dataclass
class SweepResult:
    sweep_dir: str
    trials: list[dict]  # one row per trial, sorted by the metric (best first, errors last)
    epochs: list[dict]  # one row per reported epoch
    best: dict | None  # the best trial's row
    best_config_path: str | None
    table: str  # the Markdown results table


def _write_text(path: str, text: str) -> None:
    if "://" not in path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with fsspec.open(path, "w") as f:
        f.write(text)


def _read_text(path: str) -> str | None:
    try:
        with fsspec.open(path, "r") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _exists(path: str) -> bool:
    fs, _, paths = fsspec.get_fs_token_paths(path)
    return fs.exists(paths[0])


def _plain(value):
    """A JSON/Parquet friendly scalar."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _label(value) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _epoch_rows(result, trial: str) -> list[dict]:
    frame = result.metrics_dataframe
    if frame is None or len(frame) == 0 or "epoch" not in frame:
        return []
    rows: dict[int, dict] = {}
    for record in frame.to_dict("records"):  # a restarted trial reports epochs again: keep the last
        if record.get("epoch") is None or (
            isinstance(record["epoch"], float) and math.isnan(record["epoch"])
        ):
            continue
        epoch = int(record["epoch"])
        keep = {k: record.get(k) for k in record if k.startswith("val_recall@")}
        keep.update(
            trial=trial,
            epoch=epoch,
            loss=record.get("loss"),
            val_store=record.get("val_store"),
            checkpoint=record.get("checkpoint_path")
            if isinstance(record.get("checkpoint_path"), str)
            else None,
        )
        rows[epoch] = {k: _plain(v) for k, v in keep.items()}
    return [rows[e] for e in sorted(rows)]


def _better(config: SweepConfig, a: float | None, b: float | None) -> bool:
    if a is None:
        return False
    if b is None:
        return True
    return a > b if config.mode == "max" else a < b


def collect(config: SweepConfig, results) -> tuple[list[dict], list[dict]]:
    """(trial rows, epoch rows) from Tune's ResultGrid."""
    trials, epochs = [], []
    for result in results:
        name = os.path.basename(str(result.path).rstrip("/"))
        params = config.decode(result.config or {})
        planned = TrainConfig(**{**config.train_dict(params), "name": "x"}).epochs
        rows = _epoch_rows(result, name)
        epochs += rows
        trained = [r for r in rows if r["epoch"] >= 1 and r.get(config.metric) is not None]
        best = None
        for r in trained:
            if _better(config, r[config.metric], best[config.metric] if best else None):
                best = r
        done = max((r["epoch"] for r in rows), default=-1)
        status = "error" if result.error else ("completed" if done >= planned else "stopped early")
        row = {
            "trial": name,
            "status": status,
            "epochs_done": max(done, 0),
            "epochs": planned,
            "error": str(result.error).splitlines()[0][:300] if result.error else None,
        }
        row.update({f"param:{k}": _plain(v) for k, v in params.items()})
        row.update(
            {
                "metric": config.metric,
                "value": best[config.metric] if best else None,
                "best_epoch": best["epoch"] if best else None,
                "val_store": best["val_store"] if best else None,
                "checkpoint": best["checkpoint"] if best else None,
                "trial_dir": f"{config.sweep_dir}/{name}",
            }
        )
        row.update({k: v for k, v in (best or {}).items() if k.startswith("val_recall@")})
        row["_params"] = params
        trials.append(row)

    def key(row):
        value = row["value"]
        missing = value is None
        return (missing, -(value or 0) if config.mode == "max" else (value or 0), row["trial"])

    trials.sort(key=key)
    for rank, row in enumerate(trials, 1):
        row["rank"] = rank
    return trials, epochs


def markdown_table(config: SweepConfig, trials: list[dict]) -> str:
    keys = list(config.search_space)
    recall_cols = sorted(
        {k for t in trials for k in t if k.startswith("val_recall@")}, key=lambda k: int(k.split("@")[1])
    )
    final_cols = sorted(
        {k for t in trials for k in t if "_recall@" in k and not k.startswith("val_recall@")},
        key=lambda k: (not k.startswith("final_"), k.split("@")[0], int(k.split("@")[1])),
    )
    header = (
        ["rank", "trial", "status", "epochs"]
        + keys
        + [f"{config.metric} (best epoch)"]
        + [c for c in recall_cols if c != config.metric]
        + final_cols
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def pct(v):
        return "" if v is None else (f"{v:.4f}" if config.metric == "loss" else f"{100 * v:.2f}")

    for t in trials:
        cells = [str(t["rank"]), t["trial"], t["status"], f"{t['epochs_done']}/{t['epochs']}"]
        cells += [_label(t["_params"].get(k, "")) for k in keys]
        cells.append("" if t["value"] is None else f"{pct(t['value'])} ({t['best_epoch']})")
        cells += ["" if t.get(c) is None else f"{100 * t[c]:.2f}" for c in recall_cols if c != config.metric]
        cells += ["" if t.get(c) is None else f"{100 * t[c]:.2f}" for c in final_cols]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"Sweep `{config.name}`: {len(trials)} trials, ranked by {config.metric} ({config.mode}) of the best "
        f"epoch; recalls in percent, computed from each epoch's validation descriptor store."
    ]
    if final_cols:
        notes.append(
            "final_val_* and <split>_*: the finalised model (best epoch + PCA whitening) on the whole splits."
        )
    return "\n".join(notes) + "\n\n" + "\n".join(lines) + "\n"


def _write_parquet(path: str, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    clean = [{k: _plain(v) for k, v in r.items() if not k.startswith("_")} for r in rows]
    names = list(dict.fromkeys(k for r in clean for k in r))
    table = pa.Table.from_pylist([{k: r.get(k) for k in names} for r in clean]) if clean else pa.table({})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    if "://" not in path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with fsspec.open(path, "wb") as f:
        f.write(buffer.getvalue())


def plot_sweep(config: SweepConfig, trials: list[dict], epochs: list[dict], path: str) -> None:
    """The metric per epoch of every trial, the best value per trial, and the best value against each
    hyperparameter (log axis for log-scaled ranges, categories for listed values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(config.search_space)
    panels = 2 + len(keys)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), dpi=110, squeeze=False)
    axes = axes.ravel()
    scale = 100 if config.metric != "loss" else 1
    unit = " (%)" if scale == 100 else ""
    colours = {"completed": "tab:blue", "stopped early": "tab:orange", "error": "tab:red"}
    order = sorted(trials, key=lambda t: t["trial"])
    ax = axes[0]
    for t in order:
        ys = [(e["epoch"], e.get(config.metric)) for e in epochs if e["trial"] == t["trial"]]
        ys = [(x, y) for x, y in ys if y is not None]
        if ys:
            ax.plot(
                [x for x, _ in ys],
                [scale * y for _, y in ys],
                marker="o",
                ms=3,
                color=colours[t["status"]],
                alpha=0.8,
            )
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[
            Line2D([], [], color=c, marker="o", label=s)
            for s, c in colours.items()
            if any(t["status"] == s for t in trials)
        ],
        fontsize=7,
    )
    ax.set_xlabel("epoch (0 = off-the-shelf)")
    ax.set_ylabel(config.metric + unit)
    ax.set_title("each trial, per epoch")
    ax.grid(alpha=0.3)
    ax = axes[1]
    for i, t in enumerate(order):
        if t["value"] is not None:
            ax.scatter([i], [scale * t["value"]], color=colours[t["status"]])
    ax.set_xticks(
        range(len(order)),
        [t["trial"].removeprefix(TRIAL_PREFIX)[-5:] for t in order],
        rotation=60,
        fontsize=7,
    )
    ax.set_xlabel("trial")
    ax.set_ylabel(f"best {config.metric}{unit}")
    ax.set_title("best epoch per trial")
    ax.grid(alpha=0.3)
    for ax, key in zip(axes[2:], keys):
        spec = config.search_space[key]
        done = [t for t in order if t["value"] is not None and key in t["_params"]]
        ys = [scale * t["value"] for t in done]
        if spec.values is not None:
            labels = [_label(v) for v in spec.values]
            xs = [
                labels.index(_label(t["_params"][key])) if _label(t["_params"][key]) in labels else -1
                for t in done
            ]
            ax.set_xticks(
                range(len(labels)), labels, rotation=30 if max(map(len, labels)) > 6 else 0, fontsize=7
            )
            ax.set_xlim(-0.5, len(labels) - 0.5)
        else:
            xs = [float(t["_params"][key]) for t in done]
            if spec.kind.startswith("log"):
                ax.set_xscale("log")
        ax.scatter(xs, ys, c=[colours[t["status"]] for t in done])
        ax.set_xlabel(key)
        ax.set_ylabel(config.metric + unit)
        ax.grid(alpha=0.3)
    for ax in axes[panels:]:
        ax.axis("off")
    fig.suptitle(f"sweep {config.name}: {config.metric} ({len(trials)} trials)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    if "://" not in path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with fsspec.open(path, "wb") as f:
        f.write(buffer.getvalue())


def export_best(config: SweepConfig, best: dict, path: str) -> str:
    """The best trial's training config as YAML for `sare train --config` (paths as the sweep gave them)."""
    data = config.train_dict(best["_params"])
    data.update(name=f"{config.name}-best", storage_path=config.storage_path)
    data.pop("val_store_dir", None)
    train = TrainConfig(**data)
    header = [
        f"# Best trial of sweep {config.name}: {best['trial']}, {config.metric} "
        f"{best['value']:.4f} at epoch {best['best_epoch']} (of {best['epochs']}).",
        "# Parameters: " + ", ".join(f"{k}={_label(v)}" for k, v in best["_params"].items()),
        f"# Train it: sare train --config {os.path.basename(path)}",
    ]
    text = "\n".join(header) + "\n" + dump_config(train)
    _write_text(path, text)
    return text


def _finalize(config: SweepConfig, trial: dict, use_gpu: bool, cpus: float) -> dict | None:
    """Finalise one trial in a Ray task (skipped when its summary for the same epoch exists)."""
    import ray

    if trial["checkpoint"] is None:
        return None
    checkpoint = _checkpoint_uri(trial["checkpoint"], config.sweep_dir)
    trial_dir = trial["trial_dir"]
    existing = _read_text(f"{trial_dir}/final/summary.json")
    if existing:
        summary = json.loads(existing)
        if summary.get("epoch") == trial["best_epoch"] and summary.get("checkpoint") == checkpoint:
            return summary
    if not _exists(checkpoint):
        log.warning(
            "%s: checkpoint of epoch %s is gone (%s); not finalised",
            trial["trial"],
            trial["best_epoch"],
            checkpoint,
        )
        return None
    train = config.trial_config(trial["_params"], trial_dir)
    task = ray.remote(num_cpus=cpus, num_gpus=1 if use_gpu else 0)(finalize_trial)
    return ray.get(task.remote(train.model_dump(mode="json"), checkpoint, trial_dir, trial["best_epoch"]))


def _unfinished_trials(directory: str) -> int:
    """Trials the saved experiment state does not record as ended (Tune returns normally when Ctrl+C stops
    it, and marks the trials it stopped as terminated in memory only)."""
    from ray.tune import ExperimentAnalysis

    return sum(t.status not in ("TERMINATED", "ERROR") for t in ExperimentAnalysis(directory).trials)


def run(config: SweepConfig) -> SweepResult:
    """Run (or resume) the sweep, finalise the best trials, write the tables, the plot and best_train.yaml."""
    import ray
    from ray import tune

    base = config.check()
    started = time.perf_counter()
    directory = config.sweep_dir
    saved = _read_text(f"{directory}/sweep.yaml")
    if saved is not None:
        previous = SweepConfig(**yaml.safe_load(saved)).identity()
        if previous != config.identity():
            changed = sorted(k for k in previous if previous[k] != config.identity()[k])
            raise ValueError(
                f"{directory} holds a sweep with other settings ({', '.join(changed)}); resume it "
                f"with the same config, or give this one another name"
            )
    else:
        _write_text(
            f"{directory}/sweep.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        )
    if not ray.is_initialized():
        ray.init(address=config.ray_address, include_dashboard=False)
    resources = ray.cluster_resources()
    concurrency = config.max_concurrent_trials or default_concurrency(config, base, resources)
    use_gpu = _uses_gpu(base, resources)
    log.info(
        "sweep %s: %s search, %d concurrent trial(s) of %d worker(s) (%s), ASHA %s",
        config.name,
        config.search.algorithm,
        concurrency,
        base.num_workers,
        "GPU" if use_gpu else "CPU",
        config.scheduler.type == "asha",
    )
    trainable = tune.with_resources(
        tune.with_parameters(_trial, sweep=config.model_dump(mode="json")),
        {"cpu": config.trial_cpus, "memory": int(config.trial_memory_mb * 2**20)},
    )
    storage = config.storage_path if "://" in config.storage_path else os.path.abspath(config.storage_path)
    if tune.Tuner.can_restore(directory):
        log.info("resuming the sweep in %s", directory)
        tuner = tune.Tuner.restore(directory, trainable=trainable, resume_errored=config.resume_errored)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(config),
            tune_config=tune.TuneConfig(
                metric=config.metric,
                mode=config.mode,
                search_alg=search_algorithm(config, concurrency),
                scheduler=scheduler(config, base),
                num_samples=config.search.num_samples,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=config.name,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=0),
                callbacks=[_worker_group_releaser()],
            ),
        )
    results = tuner.fit()
    unfinished = _unfinished_trials(directory)
    if unfinished:
        raise SweepInterrupted(
            f"sweep {config.name} interrupted with {unfinished} unfinished trial(s); its state "
            f"is saved in {directory}: run the same command again to resume"
        )
    trials, epochs = collect(config, results)
    log.info("sweep %s: %d trials in %.0f s", config.name, len(trials), time.perf_counter() - started)

    for trial in [t for t in trials if t["value"] is not None][: config.finalize_top]:
        summary = _finalize(config, trial, use_gpu, base.cpus_per_worker)
        if summary:
            for split, recalls in summary["recalls"].items():
                prefix = "final_val" if split == base.val_split else split
                trial.update({f"{prefix}_recall@{n}": r for n, r in recalls.items()})
            trial["final_model"] = summary["model"]
            trial.update({f"final_store:{split}": uri for split, uri in summary["stores"].items()})

    best = next((t for t in trials if t["value"] is not None), None)
    table = markdown_table(config, trials)
    _write_parquet(f"{directory}/results.parquet", trials)
    _write_parquet(f"{directory}/epochs.parquet", epochs)
    _write_text(f"{directory}/results.md", table)
    plot_sweep(config, trials, epochs, f"{directory}/sweep.png")
    best_path = None
    if best is not None:
        best_path = f"{directory}/best_train.yaml"
        export_best(config, best, best_path)
        test_store = best.get(f"final_store:{base.test_split}") if base.test_split else None
        if test_store:
            from .evaluate import EvalConfig, ModelStores
            from .evaluate import run as evaluate

            evaluate(
                EvalConfig(
                    models=[ModelStores(name=f"{config.name} best ({best['trial']})", database=test_store)],
                    out_dir=f"{directory}/best_eval",
                    split=base.test_split,
                )
            )
    print(table)
    if best is not None:
        print(
            f"best: {best['trial']} {config.metric}={best['value']:.4f} (epoch {best['best_epoch']}); "
            f"config {best_path}"
        )
    return SweepResult(directory, trials, epochs, best, best_path, table)

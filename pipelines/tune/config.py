"""The sweep's typed config (`SweepConfig`, loaded from configs/sweep_*.yaml) and its search space: each
searched TrainConfig field with its values (`ParamSpec`), the search algorithm and the ASHA scheduler, and
the TrainConfig each trial runs. `SweepConfig.check()` refuses a sweep that cannot run before any work."""

from __future__ import annotations

import itertools
import json
import logging
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sare_core.config_io import describe as _describe
from sare_core.config_io import merge, read_yaml_mapping, set_path
from sare_core.paths import absolute
from sare_core.training.config import TrainConfig

log = logging.getLogger(__name__)

TRIAL_PREFIX = "trial_"  # trial folders: trial_<Tune trial id>
SPEC_KINDS = ("grid", "choice", "uniform", "loguniform", "quniform", "randint", "lograndint")
OPTUNA_EXTRA = "tune"
MAX_CHECKED_COMBINATIONS = 10_000
PER_TRIAL_FIELDS = ("name", "storage_path", "val_store_dir")
WEIGHT_KEYWORDS = ("none", "imagenet", "torchvision-download")  # ModelConfig.weights values that are no path

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

    @field_validator("base_config")
    @classmethod
    def _absolute_base_config(cls, value: str | None) -> str | None:
        """Made absolute where the sweep is configured: trials run in Tune's own working folders."""
        return absolute(value)

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
        return f"{absolute(self.storage_path).rstrip('/')}/{self.name}"

    # -- building trial configs

    def base_train_dict(self) -> dict:
        """The `train` section over `base_config`, before any parameter is applied."""
        data: dict = {}
        if self.base_config:
            if not Path(self.base_config).is_file():
                raise FileNotFoundError(f"base_config: no such file: {self.base_config}")
            data = read_yaml_mapping(self.base_config)
        return merge(data, self.train)

    def for_trials(self) -> SweepConfig:
        """This sweep as its trials read it: `base_config` folded into `train`, local paths absolute (trials
        run in Tune's working folders, not where the sweep was started)."""
        return self.model_copy(update={"base_config": None, "train": absolute_paths(self.base_train_dict()),
                                       "storage_path": absolute(self.storage_path)})

    def train_dict(self, params: dict) -> dict:
        """The training config dict of a trial with `params` (decoded values), paths as the user gave them."""
        data = self.base_train_dict()
        for key, value in params.items():
            set_path(data, key, value)
        return data

    def trial_config(self, params: dict, trial_dir: str) -> TrainConfig:
        """The TrainConfig a trial runs: absolute paths (trials run in Tune's working folders), its run
        under the trial folder and the per-epoch validation stores under `trial_dir/val`."""
        data = absolute_paths(self.train_dict(params))
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
                self._probe({key: value}, f"search_space.{key}: value {value!r}")
        listed = {k: s.probes() for k, s in self.search_space.items() if s.values is not None}
        if 1 < len(listed) and math.prod(len(v) for v in listed.values()) <= MAX_CHECKED_COMBINATIONS:
            for combination in itertools.product(*listed.values()):
                params = dict(zip(listed, combination))
                self._probe(params, f"search_space: the combination {params}")
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
            import_optuna()
        if self.scheduler.type == "asha" and self.scheduler.grace_period > self.max_epochs(base):
            raise ValueError(
                f"scheduler.grace_period {self.scheduler.grace_period} exceeds the epochs "
                f"({self.max_epochs(base)})"
            )
        return base

    def _probe(self, params: dict, what: str) -> None:
        """ValueError "<what> makes an invalid training config: ..." unless `params` give a valid one."""
        try:
            TrainConfig(**self.train_dict(params))
        except (ValidationError, ValueError) as exc:
            text = _describe(exc) if isinstance(exc, ValidationError) else str(exc)
            raise ValueError(f"{what} makes an invalid training config: {text}") from None

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


def absolute_paths(data: dict) -> dict:
    """The training config dict with its local paths (data, weights) absolute."""
    data = dict(data)
    for key in ("dataset", "eval_dataset", "pid_dir"):
        if data.get(key):
            data[key] = absolute(data[key])
    model = data.get("model")
    weights = model.get("weights") if isinstance(model, dict) else None
    if isinstance(weights, str) and weights not in WEIGHT_KEYWORDS:
        data["model"] = {**model, "weights": absolute(weights)}
    return data


def import_optuna():
    """Ray Tune's OptunaSearch; ValueError naming the extra to install when optuna is missing."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ValueError(
            f"search.algorithm: optuna needs the optional package 'optuna' (install the "
            f"'{OPTUNA_EXTRA}' extra: pip install 'sare[{OPTUNA_EXTRA}]')"
        ) from None
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch

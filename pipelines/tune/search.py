"""Ray Tune's side of a sweep config: the param space, the search algorithm (bounded to the trials that run
at once), the ASHA scheduler on the epoch axis, and how many trials the cluster holds at once."""

from __future__ import annotations

import json
from typing import Any

from sare_core.training.config import TrainConfig

from ..train.driver import uses_gpu
from .config import TRIAL_PREFIX, ParamSpec, SweepConfig, import_optuna


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
        else:  # a range: its kind names Tune's domain (tune.uniform, tune.loguniform, ...)
            bounds = list(getattr(spec, kind))
            if kind.endswith("randint"):
                bounds[1] += 1  # the config includes the high end, Tune excludes it
            space[key] = getattr(tune, kind)(*bounds)
    return space


def search_algorithm(config: SweepConfig, concurrency: int):
    """The search algorithm, bounded to `concurrency` running trials (metric and mode come from TuneConfig).

    Tune applies TuneConfig.max_concurrent_trials only to a `Searcher` (Optuna); the variant generator of
    random/grid search takes its bound itself.
    """
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if config.search.algorithm == "optuna":
        return ConcurrencyLimiter(import_optuna()(seed=config.search.seed), max_concurrent=concurrency)
    return BasicVariantGenerator(random_state=config.search.seed, max_concurrent=concurrency)


def scheduler(config: SweepConfig, base: TrainConfig):
    """ASHA with the epoch as time (None for `scheduler.type: none`)."""
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


def default_concurrency(config: SweepConfig, train: TrainConfig, resources: dict) -> int:
    """Trials that fit at once: the cluster's GPUs over each trial's GPU workers, else its CPUs over each
    trial's CPUs (workers and the trial function)."""
    if uses_gpu(train, resources):
        fit = resources.get("GPU", 0) // train.num_workers
    else:
        fit = resources.get("CPU", 1) // (train.num_workers * train.cpus_per_worker + config.trial_cpus)
    return max(1, int(fit))

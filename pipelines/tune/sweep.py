"""The sweep stage: Ray Tune drives one Ray Train `TorchTrainer` per trial, ASHA stops weak trials early on
validation recall, and every reported recall is computed from the Parquet descriptor stores the trial wrote.

    result = run(load_config(SweepConfig, "configs/sweep_tiny.yaml"))     # pipelines.tune.sweep.run

Pattern (Ray Train V2): each trial is a plain function trainable (`trial.run_trial`) that builds the
trial's TrainConfig (the sweep's `train` section + the sampled parameters), computes its initial model
(k-means centroids) and fits a TorchTrainer whose `TuneReportCallback` forwards rank 0's per-epoch reports
to Tune. The trial function reserves `trial_cpus` (0 by default); the trainer's workers reserve their own
CPUs / GPUs, and `max_concurrent_trials` (default: what the cluster's GPUs, or CPUs, hold) bounds the
trials running at once. Whatever stopped trials leave on the cluster is released while the sweep runs and
when it ends (`cleanup`), so the Ray instance is as free afterwards as it was before.

The modules of pipelines.tune: config (SweepConfig, the search space), search (Tune's param space, search
algorithm, ASHA, concurrency), trial (the trial function), cleanup (releasing Ray resources), finalize
(best trials: whitening, val/test stores), results (tables, best YAML), plot, sweep (this: run), cli.

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

import logging
import time
from dataclasses import dataclass

import yaml

from sare_core.paths import read_text, write_text
from sare_core.training.config import TrainConfig

from .. import ray_session
from ..train.driver import uses_gpu
from .config import SweepConfig
from .finalize import finalize_best
from .plot import plot_sweep
from .results import collect, export_best, markdown_table, write_parquet
from .search import default_concurrency, param_space, scheduler, search_algorithm, trial_dirname
from .trial import run_trial

log = logging.getLogger(__name__)


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


def _keep_sweep_config(config: SweepConfig) -> None:
    """Write sweep.yaml, or check that the one there (a sweep to resume) has the same settings."""
    path = f"{config.sweep_dir}/sweep.yaml"
    saved = read_text(path)
    if saved is None:
        write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        return
    previous, current = SweepConfig(**yaml.safe_load(saved)).identity(), config.identity()
    if previous != current:
        changed = sorted(k for k in previous if previous[k] != current[k])
        raise ValueError(
            f"{config.sweep_dir} holds a sweep with other settings ({', '.join(changed)}); resume it "
            f"with the same config, or give this one another name"
        )


def _tuner(config: SweepConfig, base: TrainConfig, concurrency: int):
    """A new Tuner, or the saved one of the same sweep (resume)."""
    from ray import tune

    from .cleanup import ReleaseCallback

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, sweep=config.for_trials().model_dump(mode="json")),
        {"cpu": config.trial_cpus, "memory": int(config.trial_memory_mb * 2**20)},
    )
    directory = config.sweep_dir
    if tune.Tuner.can_restore(directory):
        log.info("resuming the sweep in %s", directory)
        return tune.Tuner.restore(directory, trainable=trainable, resume_errored=config.resume_errored)
    return tune.Tuner(
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
            storage_path=config.for_trials().storage_path,
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[ReleaseCallback(config.name)],
        ),
    )


def _unfinished_trials(directory: str) -> int:
    """Trials the saved experiment state does not record as ended (Tune returns normally when Ctrl+C stops
    it, and marks the trials it stopped as terminated in memory only)."""
    from ray.tune import ExperimentAnalysis

    return sum(t.status not in ("TERMINATED", "ERROR") for t in ExperimentAnalysis(directory).trials)


def _fit(config: SweepConfig, base: TrainConfig, concurrency: int):
    """Tune's ResultGrid; whatever the sweep started on the Ray cluster is released when it returns or
    raises (bounded wait, a warning names what is still held)."""
    from .cleanup import SweepReleaser

    releaser = SweepReleaser(config.name)
    try:
        return _tuner(config, base, concurrency).fit()
    finally:
        try:
            releaser.release_all()
        except Exception:
            log.exception("sweep %s: releasing what it held on the Ray cluster failed", config.name)


def _evaluate_best(config: SweepConfig, base: TrainConfig, best: dict) -> None:
    """`sare eval` of the best trial's test store into best_eval/."""
    test_store = best.get(f"final_store:{base.test_split}") if base.test_split else None
    if not test_store:
        return
    from ..evaluate.stores import EvalConfig, ModelStores
    from ..evaluate.stores import run as evaluate

    evaluate(
        EvalConfig(
            models=[ModelStores(name=f"{config.name} best ({best['trial']})", database=test_store)],
            out_dir=f"{config.sweep_dir}/best_eval",
            split=base.test_split,
        )
    )


def run(config: SweepConfig) -> SweepResult:
    """Run (or resume) the sweep, finalise the best trials, write the tables, the plot and best_train.yaml."""
    import ray

    base = config.check()
    started = time.perf_counter()
    directory = config.sweep_dir
    _keep_sweep_config(config)
    ray_session.connect(config.ray_address)
    resources = ray.cluster_resources()
    concurrency = config.max_concurrent_trials or default_concurrency(config, base, resources)
    gpu = uses_gpu(base, resources)
    log.info(
        "sweep %s: %s search, %d concurrent trial(s) of %d worker(s) (%s), ASHA %s",
        config.name,
        config.search.algorithm,
        concurrency,
        base.num_workers,
        "GPU" if gpu else "CPU",
        config.scheduler.type == "asha",
    )
    results = _fit(config, base, concurrency)
    unfinished = _unfinished_trials(directory)
    if unfinished:
        raise SweepInterrupted(
            f"sweep {config.name} interrupted with {unfinished} unfinished trial(s); its state "
            f"is saved in {directory}: run the same command again to resume"
        )
    trials, epochs = collect(config, results)
    log.info("sweep %s: %d trials in %.0f s", config.name, len(trials), time.perf_counter() - started)

    finalize_best(config, base, trials, gpu)
    best = next((t for t in trials if t["value"] is not None), None)
    table = markdown_table(config, trials)
    write_parquet(f"{directory}/results.parquet", trials)
    write_parquet(f"{directory}/epochs.parquet", epochs)
    write_text(f"{directory}/results.md", table)
    plot_sweep(config, trials, epochs, f"{directory}/sweep.png")
    best_path = None
    if best is not None:
        best_path = f"{directory}/best_train.yaml"
        export_best(config, best, best_path)
        _evaluate_best(config, base, best)
    print(table)
    if best is not None:
        print(
            f"best: {best['trial']} {config.metric}={best['value']:.4f} (epoch {best['best_epoch']}); "
            f"config {best_path}"
        )
    return SweepResult(directory, trials, epochs, best, best_path, table)

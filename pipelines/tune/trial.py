"""One sweep trial, run by Ray Tune as a function trainable (the Ray Train V2 pattern): the trial's
TrainConfig (the sweep's `train` section + the sampled parameters), its initial model (k-means centroids),
then a TorchTrainer whose `TuneReportCallback` forwards rank 0's per-epoch reports to Tune.

The function's name is the Tune trainable's name, which `Tuner.restore` checks: renaming it stops older
sweeps from resuming."""

from __future__ import annotations

from .config import TRIAL_PREFIX, SweepConfig


def run_trial(params: dict, sweep: dict) -> None:
    """Tune's trainable: `params` as Tune sampled them, `sweep` the SweepConfig (`for_trials`) as JSON data."""
    import ray.train
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from sare_core.allocator import keep_freed_memory
    from sare_core.paths import make_dirs

    from ..ray_session import one_node_train_env
    from ..train.driver import ensure_initial_model, load_splits, torch_trainer

    keep_freed_memory()  # the trial's k-means forward passes (its Ray Train workers set it themselves)
    config = SweepConfig(**sweep)
    trial_dir = f"{config.sweep_dir}/{TRIAL_PREFIX}{ray.tune.get_context().get_trial_id()}"
    train = config.trial_config(config.decode(params), trial_dir)
    make_dirs(trial_dir)
    splits = load_splits(train)
    initial_path = ensure_initial_model(train, splits[train.train_split], f"{trial_dir}/initial_model.pt")
    keep = config.keep_checkpoints
    run_config = ray.train.RunConfig(
        name="train",
        storage_path=trial_dir,
        failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=keep,
            checkpoint_score_attribute=config.metric if keep else None,
            checkpoint_score_order=config.mode,
        ),
        callbacks=[TuneReportCallback()],
    )
    with one_node_train_env():
        torch_trainer(train, initial_path, run_config).fit()  # a restarted trial resumes from its last checkpoint

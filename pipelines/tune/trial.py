"""One sweep trial, run by Ray Tune as a function trainable (the Ray Train V2 pattern): the trial's
TrainConfig (the sweep's `train` section + the sampled parameters), its initial model (k-means centroids),
then a TorchTrainer whose `TuneReportCallback` forwards rank 0's per-epoch reports to Tune.

The function's name is the Tune trainable's name, which `Tuner.restore` checks: renaming it stops older
sweeps from resuming."""

from __future__ import annotations

import uuid

from .tune_config import TRIAL_PREFIX, SweepConfig
from .tune_files import exists, make_dirs, move
from .tune_search import uses_gpu


def run_trial(params: dict, sweep: dict) -> None:
    """Tune's trainable: `params` as Tune sampled them, `sweep` the SweepConfig as JSON-ready data."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from .train import initial_model, load_splits
    from .train_worker import train_loop_per_worker

    config = SweepConfig(**sweep)
    trial_dir = f"{config.sweep_dir}/{TRIAL_PREFIX}{ray.tune.get_context().get_trial_id()}"
    train = config.trial_config(config.decode(params), trial_dir)
    make_dirs(trial_dir)
    splits = load_splits(train)
    initial_path = f"{trial_dir}/initial_model.pt"
    if not exists(initial_path):  # made under a temporary name, so an interrupted trial never leaves half a file
        partial = f"{initial_path}.{uuid.uuid4().hex[:8]}.partial"
        initial_model(train, splits[train.train_split], partial)
        move(partial, initial_path)
    gpu = uses_gpu(train, ray.cluster_resources())
    keep = config.keep_checkpoints
    trainer = TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config={"config": train.model_dump(mode="json"), "initial_model": initial_path},
        scaling_config=ray.train.ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=gpu,
            resources_per_worker={"CPU": train.cpus_per_worker, **({"GPU": 1} if gpu else {})},
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

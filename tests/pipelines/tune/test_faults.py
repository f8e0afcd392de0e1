"""A sweep whose trial loses a training worker: Optuna proposes the trials (the `optuna` search), the killed
trial's TorchTrainer restarts from its last checkpoint (epochs before the kill are not trained again), and
the sweep finishes with every trial complete."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.tune.sweep import run
from sare_core.config_io import load_config
from tests.faults import KillWhen, pids_with_title

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_optuna_sweep_survives_a_killed_trial_worker(tiny_city, tmp_path, ray_local):
    from pipelines.tune.config import SweepConfig

    pid_dir = tmp_path / "pids"
    config = load_config(SweepConfig, REPO / "configs" / "sweep_tiny.yaml", [
        f"train.dataset={tiny_city / 'manifest.parquet'}", f"storage_path={tmp_path / 'runs'}",
        "name=optuna_killed", "search.algorithm=optuna", "search.num_samples=2", "search.seed=3",
        "search_space={lr: {loguniform: [0.0001, 0.01]}}", "scheduler.type=none", "train.epochs=2",
        "train.max_failures=1", f"train.pid_dir={pid_dir}", "max_concurrent_trials=2", "finalize_top=1",
        f"ray_address={ray_local.get_runtime_context().gcs_address}"])

    def a_worker_after_a_checkpoint():
        """A training worker of this sweep (by the PID it reported) once its trial finished epoch 1."""
        done = [line.split() for line in (pid_dir / "epochs.log").read_text().splitlines()] \
            if (pid_dir / "epochs.log").is_file() else []
        trained = {pid for _, pid, epoch, _ in done if epoch == "1"}
        alive = set(map(str, pids_with_title("ray::RayTrainWorker")))
        candidates = sorted(trained & alive)
        return int(candidates[0]) if candidates else None

    with KillWhen(a_worker_after_a_checkpoint) as killer:
        result = run(config)
    assert killer.killed, "no training worker was killed"
    trials = pq.read_table(Path(result.sweep_dir) / "results.parquet").to_pylist()
    assert len(trials) == 2 and all(t["status"] == "completed" and t["epochs_done"] == 2 for t in trials), trials
    assert all(1e-4 <= t["param:lr"] <= 1e-2 for t in trials) and trials[0]["param:lr"] != trials[1]["param:lr"]
    reports = [line.split() for line in (pid_dir / "epochs.log").read_text().splitlines()]
    (killed_pid,) = [str(p) for p in killer.killed]
    (killed_run,) = {run_dir for _, pid, _, run_dir in reports if pid == killed_pid}
    of_that_trial = [(pid, epoch) for _, pid, epoch, run_dir in reports if run_dir == killed_run]
    before = {epoch for pid, epoch in of_that_trial if pid == killed_pid}
    after = [epoch for pid, epoch in of_that_trial if pid != killed_pid]
    assert "1" in before and after and not set(after) & before  # resumed after its last checkpoint
    assert after[-1] == "2"

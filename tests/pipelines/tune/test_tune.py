"""`sare tune` on the synthetic city's tiny preset (configs/sweep_tiny.yaml): a sweep interrupted with Ctrl+C
and resumed by rerunning the command, ASHA stopping the trial with a far too high learning rate, every
reported validation recall equal to `sare eval` on the trial's stores, the best configuration training
with `sare train`, and the session's Ray instance left with every CPU free (test_train.py shares it).
Plus, without Ray: the config checks, the ASHA rule as configured, and the store rewrite of a restarted
epoch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from pipelines.tune.config import SweepConfig
from pipelines.tune.search import default_concurrency, param_space, scheduler
from sare_core.config_io import load_config, set_path
from sare_core.evaluation.store_search import score_stores
from sare_core.models import load_model
from sare_core.store import PartWriter, StoreMetadata, clear_store, commit, open_store, write_store
from sare_core.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[3]
SWEEP_TINY = REPO / "configs" / "sweep_tiny.yaml"
SWEEP_PITTS = REPO / "configs" / "sweep_pitts30k_vgg16.yaml"


def _tune_args(city: Path, storage: Path, ray_address: str) -> list[str]:
    return [
        "tune",
        "--config",
        str(SWEEP_TINY),
        "--set",
        f"train.dataset={city / 'manifest.parquet'}",
        "--set",
        f"storage_path={storage}",
        "--set",  # the subprocess joins the session's Ray instance (not whichever one started last)
        f"ray_address={ray_address}",
    ]


def _assert_all_cpus_free(ray, after: str, timeout_s: float = 30.0) -> None:
    """Every CPU of the Ray instance is free again (releases reach available_resources asynchronously)."""
    total = ray.cluster_resources()["CPU"]
    deadline = time.monotonic() + timeout_s
    while (free := ray.available_resources().get("CPU", 0.0)) < total and time.monotonic() < deadline:
        time.sleep(0.5)
    held = [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]
    assert free == total, f"after {after}, {total - free:g} of {total:g} CPUs are still held; placement groups: {held}"


def _interrupt_once_trials_start(args: list[str], sweep_dir: Path, log_path: Path) -> list[str]:
    """Run `sare tune` in a subprocess and send it Ctrl+C (SIGINT) as soon as its first trial started;
    returns the trial folders that existed then."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 240
        while (
            time.time() < deadline and proc.poll() is None and not list(sweep_dir.glob("trial_*/params.json"))
        ):
            time.sleep(0.2)
        assert proc.poll() is None, (
            f"sare tune ended before any trial started:\n{log_path.read_text()[-3000:]}"
        )
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 130, f"exit status {code}:\n{log_path.read_text()[-3000:]}"
    return sorted(p.name for p in sweep_dir.glob("trial_*"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_sweep_resumes_stops_early_scores_from_stores_and_exports(
    tiny_city, tmp_path, ray_local, capsys
):
    storage = tmp_path / "runs"
    sweep_dir = storage / "sweep_tiny"
    args = _tune_args(tiny_city, storage, ray_local.get_runtime_context().gcs_address)
    started = time.perf_counter()

    # Interrupted: Tune saves its state, nothing is finalised, the command says how to resume.
    before = _interrupt_once_trials_start(args, sweep_dir, tmp_path / "interrupted.log")
    assert before and "run the same command again" in (tmp_path / "interrupted.log").read_text()
    assert not (sweep_dir / "results.parquet").exists()
    interrupted_s = time.perf_counter() - started

    # The same command again (in this process, on the session's Ray) resumes the same trials and finishes.
    assert main(args) == 0
    sweep_s = time.perf_counter() - started - interrupted_s
    trials = pq.read_table(sweep_dir / "results.parquet").to_pylist()
    epochs = pq.read_table(sweep_dir / "epochs.parquet").to_pylist()
    names = [t["trial"] for t in trials]
    assert len(trials) == 3 and set(before) <= set(names), (before, names)
    assert all(t["status"] in ("completed", "stopped early") for t in trials), trials
    _assert_all_cpus_free(ray_local, "the sweep")  # nothing of it (or of the interrupted run) holds a CPU
    # ASHA (grace 1, reduction 2, max_t 3) judges a trial at epochs 1 and 2, and stops it when its value there
    # is below the median of the values recorded there before it, so below some other trial's value.
    recall5 = {(e["trial"], e["epoch"]): e["val_recall@5"] for e in epochs}
    stopped = [t for t in trials if t["status"] == "stopped early"]
    assert stopped and all(t["epochs_done"] < t["epochs"] for t in stopped)
    for t in stopped:
        rung = t["epochs_done"]
        others = [recall5[u["trial"], rung] for u in trials if u is not t and (u["trial"], rung) in recall5]
        assert rung in (1, 2) and others and recall5[t["trial"], rung] < max(others), (t, others)
    # lr 1000 collapses the network in its first epoch: every descriptor is the same, ties rank the database
    # in file order and R@5 is 0.25 (random descriptors score about 0.76 on this validation split); lr 1e4
    # would overflow to non-finite descriptors, and the trial would fail instead. The trial starts third (two
    # trials fill the two CPUs), after a sane trial recorded epoch 1, so ASHA stops it at that rung.
    broken = next(t for t in trials if t["param:lr"] == 1000.0)
    assert broken["status"] == "stopped early" and broken["epochs_done"] == 1, trials
    assert recall5[broken["trial"], 1] < min(recall5[t["trial"], 1] for t in trials if t is not broken), epochs
    values = [t["value"] for t in trials]
    assert values == sorted(values, reverse=True) and trials[0]["rank"] == 1
    assert all(
        t["value"] == max(e["val_recall@5"] for e in epochs if e["trial"] == t["trial"] and e["epoch"] >= 1)
        for t in trials
    )

    # Every reported epoch has its validation store, and `sare eval` on it gives exactly the reported recall.
    for t in trials:
        done = sorted(e["epoch"] for e in epochs if e["trial"] == t["trial"])
        assert done == list(range(t["epochs_done"] + 1)), (t["trial"], done)
    assert all(e["checkpoint"] for e in epochs if e["epoch"] >= 1)
    stores = [f"{e['trial']}-e{e['epoch']}={e['val_store']}" for e in epochs]
    eval_dir = tmp_path / "eval"
    eval_args = ["eval", "--ns", "1,5,10", "--split", "val", "--out-dir", str(eval_dir)]
    assert main(eval_args + [a for s in stores for a in ("--store", s)]) == 0
    scored = json.loads((eval_dir / "eval.json").read_text())["results"]
    for e in epochs:
        store = open_store(e["val_store"])
        assert store.num_rows(role="database") == 96 and store.num_rows(role="query") == 24
        assert store.metadata.provenance["epoch"] == e["epoch"]
        recalls = scored[f"{e['trial']}-e{e['epoch']}"]["recalls"]
        assert {n: recalls[str(n)] for n in (1, 5, 10)} == {n: e[f"val_recall@{n}"] for n in (1, 5, 10)}, e

    # The best trial is finalised: whitened model, val and test stores scored like `sare eval`.
    best = trials[0]
    test_store = open_store(best["final_store:test"])
    assert test_store.dim == best["param:model.whitening_dim"] and test_store.num_rows(role="query") == 24
    assert score_stores("t", best["final_store:test"], ns=[1, 5, 10], split="test").evaluation.recalls == {
        n: best[f"test_recall@{n}"] for n in (1, 5, 10)
    }
    assert (sweep_dir / "best_eval" / "eval.json").is_file()
    table = (sweep_dir / "results.md").read_text()
    assert all(name in table for name in names) and "stopped early" in table
    assert (sweep_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert f"best: {best['trial']}" in printed

    # The best configuration is a training YAML that `sare train` runs as it is (one epoch here).
    best_yaml = sweep_dir / "best_train.yaml"
    exported = load_config(TrainConfig, best_yaml)
    assert (
        exported.lr == best["param:lr"] and exported.model.whitening_dim == best["param:model.whitening_dim"]
    )
    assert exported.val_store_dir is None
    train_started = time.perf_counter()
    assert (
        main(
            [
                "train",
                "--config",
                str(best_yaml),
                "--set",
                "epochs=1",
                "--set",
                f"storage_path={tmp_path / 'best'}",
            ]
        )
        == 0
    )
    model = load_model(str(tmp_path / "best" / exported.name / "model.pt"))
    assert model.descriptor_dim == best["param:model.whitening_dim"]
    _assert_all_cpus_free(ray_local, "`sare train` of the best configuration")
    print(
        f"timings: interrupted run {interrupted_s:.0f} s, resumed sweep {sweep_s:.0f} s, "
        f"best config trained in {time.perf_counter() - train_started:.0f} s",
        file=sys.stderr,
    )


# ------------------------------------------------------------------------------------ without Ray


def _tiny_sweep(city: Path, tmp_path: Path, *overrides: str) -> SweepConfig:
    return load_config(
        SweepConfig,
        SWEEP_TINY,
        [f"train.dataset={city / 'manifest.parquet'}", f"storage_path={tmp_path}", *overrides],
    )


def test_sweep_configs_check_and_build_spaces(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    pitts = load_config(SweepConfig, SWEEP_PITTS)
    base = pitts.check()
    assert base.model.backbone == "vgg16" and base.num_workers == 1 and pitts.max_epochs(base) == 30
    assert set(pitts.search_space) >= {
        "lr",
        "loss",
        "num_negatives",
        "chunk_size",
        "model.num_clusters",
        "model.whitening_dim",
        "color_jitter",
        "epochs",
    }
    space = param_space(pitts)
    loss_values = space["loss"].categories
    assert all(isinstance(v, str) for v in loss_values)  # mappings travel through Tune as JSON text
    decoded = pitts.decode({"loss": loss_values[-1], "lr": 0.001})
    assert decoded == {"loss": {"name": "triplet", "margin": 0.3}, "lr": 0.001}
    trial = pitts.trial_config(decoded, "s3://bucket/sweeps/x/trial_1")
    assert (
        trial.loss.name == "triplet" and trial.loss.margin == 0.3 and trial.storage_path.endswith("trial_1")
    )
    assert trial.val_store_dir == "s3://bucket/sweeps/x/trial_1/val" and os.path.isabs(trial.dataset)
    # Every choice of `grid` search becomes a grid; ranges are refused there.
    grid = load_config(SweepConfig, SWEEP_TINY, ["search.algorithm=grid"])
    assert param_space(grid)["model.whitening_dim"] == {"grid_search": [16, 32]}
    with pytest.raises(ValueError, match="lr"):
        load_config(SweepConfig, SWEEP_PITTS, ["search.algorithm=grid"]).check()


def test_sweep_config_errors_name_the_field(tiny_city, tmp_path):
    with pytest.raises(ValueError, match="search_space.loss: value .*margin is not used by sare_joint"):
        _tiny_sweep(
            tiny_city, tmp_path, "search_space.loss={choice: [{name: sare_joint, margin: 0.1}]}"
        ).check()
    base = _tiny_sweep(tiny_city, tmp_path).model_dump()
    with pytest.raises(ValueError, match="search_space.model.num_clusterz: value 4 .*num_clusterz"):
        SweepConfig(**{**base, "search_space": {"model.num_clusterz": {"grid": [4]}}}).check()
    with pytest.raises(ValueError, match="metric: 'val_recall@20'"):
        _tiny_sweep(tiny_city, tmp_path, "metric=val_recall@20").check()
    with pytest.raises(ValueError, match="exactly one of"):
        _tiny_sweep(tiny_city, tmp_path, "search_space.lr={uniform: [0.1, 1], choice: [1]}")
    with pytest.raises(ValueError, match="loguniform: the range must be positive"):
        _tiny_sweep(tiny_city, tmp_path, "search_space.lr={loguniform: [0, 1]}")
    with pytest.raises(ValueError, match="set per trial"):
        _tiny_sweep(tiny_city, tmp_path, "search_space.storage_path={grid: [a, b]}")
    with pytest.raises(ValueError, match="optuna cannot search grid values"):
        _tiny_sweep(tiny_city, tmp_path, "search.algorithm=optuna").check()


def test_optuna_is_an_optional_extra(tiny_city, tmp_path):
    config = _tiny_sweep(
        tiny_city, tmp_path, "search.algorithm=optuna", "search_space.lr={loguniform: [0.0001, 0.1]}"
    )
    try:
        import optuna  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"optuna.*pip install 'sare\[tune\]'"):
            config.check()
        return
    from pipelines.tune.search import search_algorithm

    config.check()
    assert type(search_algorithm(config, 2).searcher).__name__ == "OptunaSearch"


def test_asha_stops_a_trial_below_the_median_at_a_rung(tiny_city, tmp_path):
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    config = _tiny_sweep(tiny_city, tmp_path)
    asha = scheduler(config, config.check())
    asha.set_search_properties(config.metric, config.mode)  # what Tune does with TuneConfig's metric and mode
    a, b, c, d = trials = [SimpleNamespace(trial_id=name) for name in "abcd"]
    for trial in trials:
        asha.on_trial_add(None, trial)

    def report(trial, epoch: int, value: float) -> str:
        return asha.on_trial_result(None, trial, {"epoch": epoch, config.metric: value})

    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    assert report(c, 0, 0.0) == go  # epoch 0 (off-the-shelf) is no rung
    assert report(a, 1, 0.75) == go  # the first at epoch 1: nothing to compare with
    assert report(b, 1, 0.80) == go  # above the median of what was recorded (0.75)
    assert report(c, 1, 0.25) == stop  # below the median of 0.75 and 0.80
    assert report(d, 1, 0.80) == go
    assert report(a, 2, 0.70) == go  # the second rung: epoch 2
    assert report(b, 2, 0.60) == stop
    assert report(d, 2, 0.90) == go
    assert report(d, 3, 0.10) == stop  # max_t: the trial is complete


def test_mapping_values_replace_sections_and_concurrency_follows_the_cluster(tiny_city, tmp_path):
    data = {"loss": {"name": "triplet", "margin": 0.2}, "model": {"backbone": "tiny"}}
    set_path(data, "loss", {"name": "sare_ind"})
    set_path(data, "model.num_clusters", 16)
    assert data == {"loss": {"name": "sare_ind"}, "model": {"backbone": "tiny", "num_clusters": 16}}
    config = _tiny_sweep(tiny_city, tmp_path)
    base = config.check()
    assert default_concurrency(config, base, {"CPU": 2}) == 2  # 1-CPU trials on a laptop
    assert default_concurrency(config, base, {"CPU": 1}) == 1
    gpu = base.model_copy(update={"num_workers": 2})
    assert default_concurrency(config, gpu, {"CPU": 64, "GPU": 8}) == 4  # two GPU workers per trial


def test_a_restarted_epoch_replaces_its_store_and_ignores_stray_parts(tmp_path):
    uri = str(tmp_path / "val" / "epoch_001")
    rng = np.random.default_rng(0)
    db = rng.normal(size=(6, 4)).astype(np.float32)
    ids = [f"db{i}" for i in range(6)] + ["q0", "q1"]
    roles = ["database"] * 6 + ["query"] * 2
    utm = np.array([[0, 0], [0, 50], [0, 100], [0, 150], [0, 200], [0, 250], [0, 2], [0, 148]], float)
    meta = StoreMetadata(dim=4, dataset="d", model_hash="first", provenance={"pos_dist_thr": 25.0})
    first = np.concatenate([db, db[[0, 3]] + 0.01])
    write_store(uri, meta, ids=ids, roles=roles, descriptors=first, splits="val", utm=utm)
    assert score_stores("a", uri, ns=[1], split="val").evaluation.recalls == {1: 1.0}
    # A worker of the failed attempt still writes a part after the restart began: it is never committed.
    removed = clear_store(uri)
    assert "_store.json" in removed
    second = np.concatenate([db, db[[5, 4]]])  # the restarted attempt's model ranks both queries wrong
    meta2 = StoreMetadata(dim=4, dataset="d", model_hash="second", provenance={"pos_dist_thr": 25.0})
    PartWriter(uri, meta, task_id="stray").write(
        ids=ids, roles=roles, descriptors=first, splits="val", utm=utm
    )
    writer = PartWriter(uri, meta2, task_id="retry")
    writer.write(ids=ids, roles=roles, descriptors=second, splits="val", utm=utm)
    commit(uri, writer.parts, meta2)
    store = open_store(uri)
    assert store.metadata.model_hash == "second" and store.num_rows() == 8
    assert score_stores("b", uri, ns=[1], split="val").evaluation.recalls == {1: 0.0}

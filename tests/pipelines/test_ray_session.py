"""pipelines.ray_session: the worker setup hook really runs in Ray's worker processes; Ray Train's one-node
settings are set around a fit only, and never over the user's."""

import logging
import os

from pipelines import ray_session


def test_setup_hook_quiets_the_placement_group_cleaner_in_workers(ray_local):
    @ray_local.remote(num_cpus=0)
    def levels() -> list[int]:
        return [logging.getLogger(name).getEffectiveLevel() for name in ray_session.QUIETED_WORKER_LOGGERS]

    assert ray_local.get(levels.remote()) == [logging.ERROR] * len(ray_session.QUIETED_WORKER_LOGGERS)


def test_connect_leaves_an_existing_connection_alone(ray_local):
    assert ray_session.connect() is False  # joined already: the caller must not shut Ray down


def test_one_node_train_settings_hold_inside_the_block_only_and_yield_to_the_users(ray_local, monkeypatch):
    for key in ray_session.ONE_NODE_TRAIN_ENV:
        monkeypatch.delenv(key, raising=False)
    with ray_session.one_node_train_env() as chosen:
        assert chosen == ray_session.ONE_NODE_TRAIN_ENV
        assert all(os.environ[k] == v for k, v in chosen.items())
    assert not any(k in os.environ for k in ray_session.ONE_NODE_TRAIN_ENV)
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")  # the user's choice stays
    with ray_session.one_node_train_env() as chosen:
        assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in chosen and os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"
        assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3" and "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ

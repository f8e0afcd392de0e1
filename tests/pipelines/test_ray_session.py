"""pipelines.ray_session: the worker setup hook really runs in Ray's worker processes."""

import logging

from pipelines import ray_session


def test_setup_hook_quiets_the_placement_group_cleaner_in_workers(ray_local):
    @ray_local.remote(num_cpus=0)
    def levels() -> list[int]:
        return [logging.getLogger(name).getEffectiveLevel() for name in ray_session.QUIETED_WORKER_LOGGERS]

    assert ray_local.get(levels.remote()) == [logging.ERROR] * len(ray_session.QUIETED_WORKER_LOGGERS)


def test_connect_leaves_an_existing_connection_alone(ray_local):
    assert ray_session.connect() is False  # joined already: the caller must not shut Ray down

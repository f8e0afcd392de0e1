"""Starting or joining Ray: the options every pipeline passes to `ray.init`, in one place."""

from __future__ import annotations

import logging

# Loggers silenced below ERROR in every Ray worker process, and why.
#   Ray Train's PlacementGroupCleaner (a detached actor per training run) asks the state API every second
#   whether the run's controller is alive. That API needs the dashboard (ray[default]), which this project
#   does not install, so without this it warns once a second for the whole run and cleans nothing; leaked
#   worker placement groups are released by pipelines.tune.cleanup instead.
QUIETED_WORKER_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)

SETUP_HOOK = "pipelines.ray_session.quiet_worker_logs"


def quiet_worker_logs() -> None:
    """Ray `worker_process_setup_hook`: raise QUIETED_WORKER_LOGGERS to ERROR in this worker process."""
    for name in QUIETED_WORKER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def connect(address: str | None = None, log_to_driver: bool = True) -> bool:
    """Join the Ray cluster at `address` ("auto", "ray://...") or start a local one (None) unless this
    process is already connected; True when this call connected (the caller then owns `ray.shutdown`)."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=log_to_driver,
             runtime_env={"worker_process_setup_hook": SETUP_HOOK})
    return True

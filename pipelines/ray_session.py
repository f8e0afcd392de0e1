"""Starting or joining Ray: the options every pipeline passes to `ray.init`, in one place."""

from __future__ import annotations

import contextlib
import logging
import os

# Loggers silenced below ERROR in every Ray worker process, and why.
#   Ray Train's PlacementGroupCleaner (a detached actor per training run) asks the state API every second
#   whether the run's controller is alive. That API needs the dashboard (ray[default]), which this project
#   does not install, so without this it warns once a second for the whole run and cleans nothing; leaked
#   worker placement groups are released by pipelines.tune.cleanup instead.
QUIETED_WORKER_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)

SETUP_HOOK = "pipelines.ray_session.quiet_worker_logs"

# Ray Train settings for a one-node cluster (a laptop, CI, the demo), each unless the environment sets it:
#   no preemption watcher: an actor process per run that waits for the node to be drained, which a local
#   node never is; the controller polls the workers every 0.5 s instead of 2, so it sees a run end sooner.
# A bare two-worker TorchTrainer took 15.0 s instead of 18.1 (medians of 4 alternating rounds, 2-core
# machine; results/train_startup.json, benchmarks/train_startup.py): 1.0 s sooner to the workers'
# function, 1.5 s sooner back from it.
ONE_NODE_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


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


def alive_nodes() -> int:
    """How many nodes of the connected Ray cluster are alive."""
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


@contextlib.contextmanager
def one_node_train_env():
    """Around a Ray Train `fit` (which reads these variables when it starts the run's controller): on a
    one-node cluster, ONE_NODE_TRAIN_ENV's variables that the environment leaves unset are set, and unset
    again afterwards. Yields those set ({} on a multi-node cluster, which keeps Ray Train's defaults)."""
    chosen = {k: v for k, v in ONE_NODE_TRAIN_ENV.items() if k not in os.environ} if alive_nodes() == 1 else {}
    os.environ.update(chosen)
    try:
        yield chosen
    finally:
        for key in chosen:
            os.environ.pop(key, None)

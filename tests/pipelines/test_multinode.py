"""Multi-node behaviour, simulated on one machine: a Ray cluster of a CPU-less head and two worker nodes
(`ray.cluster_utils.Cluster`, one logical CPU each, custom resources `node_a` / `node_b`).

- extraction: the model actors land on both worker nodes (each actor reserves more than half a node's CPU),
  both produce rows, and the descriptors equal a plain single-process loop within 1e-5;
- training: the two DDP workers (gloo) land on different nodes and the run finishes.

Where work ran is read after the fact from the cluster's GCS tables (actor table: each actor's node; task
events: the node of each actor method call), through the `GlobalState` the `Cluster` object holds: the
pipelines record no node ids themselves, and `ray.util.state` needs the dashboard, whose packages
(`ray[default]`) this project does not install. The session's local Ray (`ray_local`) is shut down for
this module and restarted afterwards with the same settings, so later tests find it as before.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import pytest

from pipelines.extract.config import ExtractConfig
from pipelines.extract.pipeline import run as run_extract
from pipelines.model.specs import load_model_spec
from pipelines.train.driver import run as run_train
from sare_core.data.image_rows import dataset_root, image_rows, open_dataset
from sare_core.models.inference import embed_paths
from sare_core.store import open_store
from sare_core.training.config import TrainConfig

pytestmark = pytest.mark.slow

EMBEDDER_CLASS = "MapWorker(MapBatches(ImageEmbedder))"  # how Ray Data names its actor-pool workers
TRAIN_WORKER_CLASS = "RayTrainWorker"


class TwoNodes:
    """A connected local cluster: a head with no CPU and two 1-CPU worker nodes (`node_a`, `node_b`)."""

    def __init__(self, cluster, node_a: str, node_b: str):
        self.cluster, self.node_a, self.node_b = cluster, node_a, node_b

    def actors(self, class_name: str) -> dict[str, dict]:
        """{actor id: actor table entry} of every actor of the class this cluster has seen (alive or dead)."""
        table = self.cluster.global_state.actor_table(None)
        return {k: v for k, v in table.items() if v["ActorClassName"] == class_name}

    def actor_task_nodes(self, actor_ids: set[str], timeout: float = 30.0) -> dict[str, int]:
        """{node id: method calls} over the given actors' calls other than __init__, from the task events the
        workers report to the GCS (a second or so late: polled until both nodes show up or `timeout`)."""
        from ray.core.generated.common_pb2 import TaskType

        deadline = time.monotonic() + timeout
        while True:
            counts: dict[str, int] = {}
            for event in self.cluster.global_state._get_all_task_events():
                info = event.task_info
                if (info.type == TaskType.ACTOR_TASK and info.actor_id.hex() in actor_ids
                        and not info.name.endswith("__init__") and event.state_updates.node_id):
                    node = event.state_updates.node_id.hex()
                    counts[node] = counts.get(node, 0) + 1
            if len(counts) >= 2 or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)


@contextlib.contextmanager
def ray_address_file_kept():
    """`Cluster` writes its address to Ray's machine-wide address file (/tmp/ray/ray_current_cluster), which
    a bare `ray.init()` anywhere on the machine would then join, and deletes the file on shutdown. Other
    Ray users of this machine (other test runs) must not notice: put the file back as it was."""
    from ray._common.utils import get_ray_address_file

    path = get_ray_address_file(None)
    before = open(path).read() if os.path.exists(path) else None
    try:
        yield
    finally:
        if before is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        else:
            with open(path, "w") as f:
                f.write(before)


@pytest.fixture(scope="module")
def two_nodes(request):
    import ray
    from ray.cluster_utils import Cluster

    restore_env = None
    if ray.is_initialized():  # the session's ray_local (or another test's Ray): restored on teardown
        restore_env = request.getfixturevalue("s3_server").env
        ray.shutdown()
    with ray_address_file_kept():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        node_a = cluster.add_node(num_cpus=1, resources={"node_a": 1})
        node_b = cluster.add_node(num_cpus=1, resources={"node_b": 1})
        cluster.wait_for_nodes()
        cluster.connect()
        yield TwoNodes(cluster, node_a.node_id, node_b.node_id)
    finally:
        ray.shutdown()
        with ray_address_file_kept():
            cluster.shutdown()
        if restore_env is not None:
            from tests.conftest import init_local_ray

            init_local_ray(restore_env)


@pytest.mark.timeout(240)
def test_extraction_spreads_over_two_nodes_and_matches_a_plain_loop(two_nodes, tiny_city, tmp_path, monkeypatch):
    import ray

    # Ray Data starts handing blocks to the actor pool as soon as one actor is up; with this tiny model the
    # first actor could embed everything before the second has imported torch. Make it wait for both (then
    # decode tasks spread over both nodes and each actor takes the blocks decoded on its node).
    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 120)
    model_yaml = tmp_path / "model.yaml"
    model_yaml.write_text("model:\n  backbone: tiny\n  num_clusters: 8\n")
    manifest = str(tiny_city / "manifest.parquet")
    out = str(tmp_path / "store")
    # Two actors of 0.75 CPU cannot share a 1-CPU node: one per worker node. Decode tasks take 0.25 each.
    result = run_extract(ExtractConfig(dataset=manifest, model=str(model_yaml), out=out, num_actors=2,
                                       actor_cpus=0.75, decode_cpus=0.25, decode_tasks=2, decode_batch_size=25,
                                       progress_bars=False))
    assert result.rows == result.total == 400 and result.failures == 0
    assert result.plan["num_actors"] == 2 and result.plan["cluster_cpus"] == 2

    actors = two_nodes.actors(EMBEDDER_CLASS)
    assert sorted(a["Address"]["NodeID"] for a in actors.values()) == sorted([two_nodes.node_a, two_nodes.node_b])
    calls = two_nodes.actor_task_nodes(set(actors))
    assert set(calls) == {two_nodes.node_a, two_nodes.node_b}, f"model calls per node: {calls}"

    model = load_model_spec(str(model_yaml))
    rows = image_rows(open_dataset(manifest), dataset_root(manifest))
    expected = embed_paths(model, rows.column("path").to_pylist(), batch_size=64)
    batch = open_store(out).read()
    stored = dict(zip(batch.ids, batch.descriptors))
    got = np.stack([stored[i] for i in rows.column("id").to_pylist()])
    assert np.abs(got - expected).max() < 1e-5


@pytest.mark.timeout(300)
def test_training_workers_on_two_nodes(two_nodes, tiny_city, tmp_path):
    config = TrainConfig(
        name="multinode", storage_path=str(tmp_path), dataset=str(tiny_city / "manifest.parquet"),
        model={"backbone": "tiny", "num_clusters": 8, "whitening_dim": 16, "image_size": [72, 96]},
        epochs=1, chunk_size=16, negative_pool=40, num_negatives=4, batch_size=2, centroid_images=40,
        max_train_queries=16, max_val_queries=20, num_workers=2, cpus_per_worker=1, use_gpu=False,
        val_ns=[1, 5], select_n=5, max_failures=0,
    )
    result = run_train(config)
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert np.isfinite(result.history[1]["loss"]) and result.history[1]["tuples"] > 0
    workers = two_nodes.actors(TRAIN_WORKER_CLASS)
    assert sorted(w["Address"]["NodeID"] for w in workers.values()) == sorted([two_nodes.node_a, two_nodes.node_b])

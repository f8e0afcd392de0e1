"""Extraction survives its faults: a model actor killed mid-run (Ray Data restarts it and retries its
work; the store holds every id once), and an S3 endpoint that stops answering mid-write (the store stays at
its last commit; a rerun after the endpoint is back completes it)."""

import signal
import subprocess
import sys
import time

import pyarrow.compute as pc
import pytest

from pipelines.extract.config import ExtractConfig
from pipelines.extract.pipeline import run
from sare_core.data.image_rows import image_rows, open_dataset
from sare_core.store import open_store
from sare_core.store.location import StoreLocation
from tests.faults import KillWhen, pids_with_title

HEAVY = "backbone: efficientnet_lite0\nweights: none\nnum_clusters: 8\nimage_size: [120, 160]\nwhitening_dim: null\n"


def part_files(location: StoreLocation) -> list[str]:
    return [n for n in location.list_sizes() if n.startswith("part-")]


def test_a_model_actor_killed_mid_run_is_restarted_and_every_id_is_stored_once(ray_local, tiny_city, tmp_path):
    model = tmp_path / "model.yaml"
    model.write_text(HEAVY)
    out = str(tmp_path / "store")
    location = StoreLocation.from_uri(out)

    def an_actor_once_parts_exist():
        if not part_files(location):
            return None
        actors = pids_with_title("ray::MapWorker(MapBatches(ImageEmbedder))")
        return actors[0] if actors else None

    with KillWhen(an_actor_once_parts_exist) as killer:
        result = run(ExtractConfig(dataset=str(tiny_city / "manifest.parquet"), model=str(model), out=out,
                                   layout="actors", num_actors=2, decode_batch_size=16, rows_per_part=32,
                                   progress_bars=False))
    assert killer.killed, "no model actor was killed mid-run"
    store = open_store(out)
    ids = store.ids_arrow()
    expected = image_rows(open_dataset(str(tiny_city / "manifest.parquet")), str(tiny_city)).column("id")
    assert result.rows == len(ids) == len(expected) == 400 and result.failures == 0
    assert pc.count_distinct(ids).as_py() == 400 and set(ids.to_pylist()) == set(expected.to_pylist())


@pytest.fixture
def s3_process(tmp_path):
    """moto's S3 server in a process of its own (so that it can be stopped and resumed), on a free port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
               "config_kwargs": {"connect_timeout": 2, "read_timeout": 2, "retries": {"max_attempts": 1}}}
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    for _ in range(100):
        try:
            client.create_bucket(Bucket="outage")
            break
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.1)
    yield server, options
    server.send_signal(signal.SIGCONT)
    server.kill()
    server.wait()


def test_an_s3_outage_mid_write_leaves_the_last_commit_and_a_rerun_completes(ray_local, tiny_city, tmp_path,
                                                                           s3_process):
    """The endpoint stops answering (SIGSTOP: moto keeps its objects in memory) once the run has written
    parts, and comes back 8 s later. Until a run commits, the store is its last commit; the interrupted
    run either recovers or fails, and then a rerun completes it: every id once, nothing half-committed."""
    import threading

    server, options = s3_process
    model = tmp_path / "model.yaml"
    model.write_text(HEAVY)
    uri = "s3://outage/store"
    dataset = str(tiny_city / "manifest.parquet")
    base = dict(dataset=dataset, model=str(model), out=uri, layout="actors", num_actors=1, decode_batch_size=16,
                rows_per_part=32, progress_bars=False)
    first = run(ExtractConfig(**base, splits=["test"]), storage_options=options)  # the last good commit
    assert first.version == 1 and first.rows == 120
    location = StoreLocation.from_uri(uri, options)
    before = set(part_files(location))
    outcome: dict = {}

    def interrupted_run():
        try:
            outcome["result"] = run(ExtractConfig(**base), storage_options=options)
        except Exception as exc:  # noqa: BLE001 - recorded: the endpoint went away under it
            outcome["error"] = exc

    worker = threading.Thread(target=interrupted_run, daemon=True)
    worker.start()
    deadline = time.time() + 300
    while time.time() < deadline and worker.is_alive() and not set(part_files(location)) - before:
        time.sleep(0.1)
    assert worker.is_alive(), "the run ended before the endpoint could be stopped mid-write"
    server.send_signal(signal.SIGSTOP)
    time.sleep(8)
    server.send_signal(signal.SIGCONT)
    worker.join(timeout=600)
    assert not worker.is_alive()
    store = open_store(uri, storage_options=options)
    if "error" in outcome:  # the run gave up: the store is its last commit, untouched
        assert store.version == 1 and len(store) == 120
        second = run(ExtractConfig(**base), storage_options=options)
        assert second.rows == 400
        store = open_store(uri, storage_options=options)
    assert store.version == 2 and len(store) == 400 and pc.count_distinct(store.ids_arrow()).as_py() == 400

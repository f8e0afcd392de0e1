"""Shared fixtures: the real data in ../shared/data (present in CI and on developer machines)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SARE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Keep BLAS/torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where torch sees a CUDA device (`pytest -m gpu` on a GPU machine)."""
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if not gpu_tests:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA device: a GPU code path")
        for item in gpu_tests:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real test data (toy_street, nordland_dev, real_gt); skips where it is not laid out."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set SARE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def toy_street_images(shared_data) -> list[Path]:
    """The 22 real street photos (17 database + 5 queries), sorted."""
    return sorted((shared_data / "toy_street").glob("*/*.jpg"))


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint (moto's server) on 127.0.0.1 for the whole session; see tests/s3_server.py."""
    from tests.s3_server import LoopbackS3

    with LoopbackS3() as server:
        yield server


@pytest.fixture
def s3_uri(s3_server, monkeypatch) -> str:
    """"s3://<new empty bucket>" on the loopback server; AWS_* variables point at it for this test."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # no file system cached from another endpoint or credentials
    for name in s3_server.CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.create_bucket()}"


def init_local_ray(s3_env: dict) -> None:
    """Start the local Ray instance `ray_local` provides (also used to restore it after a test that had to
    shut it down, e.g. tests/pipelines/test_multinode.py)."""
    import ray

    from pipelines.ray_session import SETUP_HOOK

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": dict(s3_env), "worker_process_setup_hook": SETUP_HOOK})


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray instance (2 CPUs) shared by every Ray test; workers get the loopback S3 variables."""
    import ray

    if not ray.is_initialized():
        init_local_ray(s3_server.env)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_city(tmp_path_factory) -> Path:
    """The synthetic city's tiny preset (train/val/test, ~400 images of 96x72), generated once per session."""
    from sare_core.data.synth.city import generate_city

    out = tmp_path_factory.mktemp("tiny_city")
    generate_city(str(out), "tiny", seed=0, workers=2)
    return out


@pytest.fixture(scope="session")
def indexed_tiny_city(tiny_city, tmp_path_factory, ray_local):
    """A tiny model (seeded), its descriptor store of the tiny city's test split, a flat index over it,
    and the split: what `sare locate` and `sare serve` tests work on."""
    import torch

    from pipelines.cli import main
    from sare_core.data.sources import open_splits
    from sare_core.models.config import ModelConfig
    from sare_core.models.embedding import build_model
    from sare_core.models.io import save_model

    work = tmp_path_factory.mktemp("indexed_city")
    torch.manual_seed(0)
    model = str(work / "model.pt")
    save_model(model, build_model(ModelConfig(backbone="tiny", num_clusters=8, whitening_dim=None,
                                              image_size=(72, 96))))
    store, index = str(work / "store"), str(work / "index")
    assert main(["extract", "--dataset", str(tiny_city / "manifest.parquet"), "--model", model, "--out", store,
                 "--splits", "test", "--no-progress"]) == 0
    assert main(["index", "build", "--store", store, "--out", index]) == 0
    return work, model, index, open_splits(str(tiny_city / "manifest.parquet"))["test"]

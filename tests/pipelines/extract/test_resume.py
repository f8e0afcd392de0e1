"""Resume: a run killed midway (SIGKILL, in a subprocess) and rerun extracts only what is missing, and the
finished store holds every image exactly once, with the descriptors a plain loop computes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.extract.config import ExtractConfig
from pipelines.extract.pipeline import run
from pipelines.model.specs import load_model_spec
from sare_core.data.image_rows import image_rows, open_dataset
from sare_core.data.synth.city import generate_city
from sare_core.store import MANIFEST_NAME, open_store

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    out = tmp_path_factory.mktemp("city")
    generate_city(str(out), preset="tiny", seed=0, workers=1)
    return out


def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("part-*.parquet")) if folder.is_dir() else []


def test_a_killed_run_resumes_without_gaps_or_duplicates(ray_local, city, tmp_path):
    model = tmp_path / "model.yaml"
    # Upscaled images make each batch slow enough to kill the run between parts.
    model.write_text("backbone: tiny\nnum_clusters: 8\nimage_size: [360, 480]\n")
    out = tmp_path / "store"
    dataset = str(city / "manifest.parquet")
    address = ray_local.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "pipelines.cli", "extract", "--dataset", dataset, "--model", str(model),
               "--out", str(out), "--no-progress", "--set", f"ray_address={address}",
               "--set", "rows_per_part=16", "--set", "decode_batch_size=8"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while len(_parts(out)) < 3:
            assert process.poll() is None, f"extraction ended before it was killed: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no parts written within 240 s"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and anything it started, mid-run
        process.wait()
    time.sleep(2)  # let the cluster notice the dead driver and stop its workers
    assert not (out / MANIFEST_NAME).exists(), "the killed run must not have committed"
    left = _parts(out)
    assert 3 <= len(left) < 25

    result = run(ExtractConfig(dataset=dataset, model=str(model), out=str(out), progress_bars=False))
    assert result.total == 400 and result.rows == 400 and result.failures == 0
    assert result.adopted >= 3 * 16 and result.extracted == 400 - result.adopted
    store = open_store(str(out))
    ids = store.ids()
    rows = image_rows(open_dataset(dataset), str(city))
    assert len(ids) == len(set(ids)) == 400 and set(ids) == set(rows.column("id").to_pylist())
    assert set(_parts(out)) == {p.name for p in store.parts}  # leftovers adopted or cleaned, none stray

    # Adopted and fresh rows alike equal a plain single-process loop.
    net = load_model_spec(str(model))
    batch = store.read()
    order = {i: k for k, i in enumerate(rows.column("id").to_pylist())}
    paths = rows.column("path").to_pylist()
    sample = np.random.default_rng(0).choice(400, 40, replace=False)
    with torch.inference_mode():
        expected = net(torch.stack([net.preprocessor.load(paths[order[batch.ids[k]]]) for k in sample])).numpy()
    assert np.abs(batch.descriptors[sample] - expected).max() < 1e-5

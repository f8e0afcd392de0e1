"""`sare train`'s driver killed and the same command run again: the run resumes from its last checkpoint
(epochs finished before the kill are not trained again) and ends with every epoch in its history."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def test_a_killed_train_driver_resumes_when_run_again(ray_local, tiny_city, tmp_path):
    pid_dir = tmp_path / "pids"
    config = {
        "name": "driver_killed", "storage_path": str(tmp_path / "runs"), "dataset": str(tiny_city / "manifest.parquet"),
        "model": {"backbone": "tiny", "num_clusters": 8, "whitening_dim": None, "image_size": [72, 96]},
        "epochs": 2, "chunk_size": 16, "negative_pool": 60, "num_negatives": 4, "batch_size": 2,
        "centroid_images": 40, "num_workers": 1, "val_ns": [1, 5], "pid_dir": str(pid_dir), "max_failures": 0,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    # The driver joins the test's Ray instance, as `sare train` joins a cluster (RAY_ADDRESS).
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "pipelines.cli", "train", "--config", str(path)]
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "runs" / "driver_killed"
    log = pid_dir / "epochs.log"
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if log.is_file() and any(line.split()[2] == "1" for line in log.read_text().splitlines()):
            first.send_signal(signal.SIGKILL)  # epoch 1 is checkpointed; epoch 2 has begun
            break
        time.sleep(0.1)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, "the driver finished before it could be killed"
    reports_before = (pid_dir / "epochs.log").read_text().splitlines()
    assert [line.split()[2] for line in reports_before][:2] == ["0", "1"]

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    history = json.loads((run_dir / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    reports = [line.split()[:3] for line in (pid_dir / "epochs.log").read_text().splitlines()]
    later = reports[len(reports_before):]
    first_pids = {line.split()[1] for line in reports_before}
    assert later and not first_pids & {pid for _, pid, _ in later}  # new workers...
    assert not [e for _, _, e in later if e in ("0", "1")]  # ...that did not train epoch 1 again
    assert later[-1][2] == "2"

"""The GPU check (benchmarks/gpu_device_check.sh) runs on a machine whose PyTorch image has no Ray, no S3
client and no registry to fetch them from. Rehearsed here with those imports refused: the gpu tests it runs
must collect, and benchmarks/gpu_path.py must run its CPU smoke test, without them."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_TEST_FILES = ["tests/pipelines/extract/test_embedder_gpu.py", "tests/sare_core/training/test_distributed.py",
                  "tests/sare_core/evaluation/test_search.py"]
# Top-level packages this project installs that the device image lacks (and does not get from .gpu_bundle).
ABSENT_ON_THE_GPU_MACHINE = ["ray", "s3fs", "aiobotocore", "botocore", "boto3", "moto", "fastapi", "starlette",
                             "uvicorn", "optuna", "selenium", "multipart"]


def device_like_env(tmp_path: Path) -> dict:
    """An environment whose interpreter refuses ABSENT_ON_THE_GPU_MACHINE (a sitecustomize import hook)."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        ABSENT = {ABSENT_ON_THE_GPU_MACHINE!r}
        class _Absent:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ABSENT:
                    raise ImportError(f"{{name}} is not installed on the GPU machine")
                return None
        sys.meta_path.insert(0, _Absent())
    """))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}


def test_the_refusal_works(tmp_path):
    run = subprocess.run([sys.executable, "-c", "import ray"], env=device_like_env(tmp_path), capture_output=True,
                         text=True)
    assert run.returncode != 0 and "not installed on the GPU machine" in run.stderr


def test_the_gpu_tests_collect_without_ray_or_s3(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                          *GPU_TEST_FILES], cwd=REPO, env=device_like_env(tmp_path), capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    collected = [line for line in run.stdout.splitlines() if "::" in line]
    assert len(collected) >= 6, run.stdout  # autocast x2 backbones, shared prefix x2, NCCL x2, FAISS shards


def test_gpu_path_smoke_runs_without_ray_or_s3(tmp_path):
    out = tmp_path / "gpu_path_quick.json"
    run = subprocess.run([sys.executable, "benchmarks/gpu_path.py", "--quick", "--skip", "faiss", "--out", str(out)],
                         cwd=REPO, env=device_like_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["imported"]["ray"] is False
    extraction = report["extraction"]
    # VGG16's 13 convolutions make 15.3 G multiply-adds at 224x224 (30.7 GFLOP counted as 2 each); at 64x80,
    # 0.102 of those pixels, about 3.1 GFLOP, NetVLAD's few MFLOP on top. The peak fractions rest on this count.
    assert 2.9e9 < extraction["forward_flops_per_image"] < 3.4e9
    float32 = extraction["modes"]["float32"]
    assert float32["images_per_s"] > 0 and float32["achieved_tflops"] >= 0
    assert extraction["bf16_matmul_tflops_measured"] is None  # no card: nothing to compare with
    assert report["train_step_ddp_gloo_cpu_smoke"]["steps"] == 2

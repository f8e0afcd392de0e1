"""The GPU check (benchmarks/gpu_device_check.sh) runs on a machine whose PyTorch image has no Ray, no S3
client and no registry to fetch them from, in one call of scarce device time. Rehearsed here with those
imports refused: the gpu tests it runs must collect, benchmarks/gpu_path.py must run its CPU smoke test,
and a wrong bundle or a missing GPU must stop it at once."""

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


def run_device_check(tmp_path: Path, bundle: Path, extra_env: dict | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    """benchmarks/gpu_device_check.sh as the GPU machine runs it, rehearsed on this CPU: Ray and the S3
    clients refused, CPU allowed, gpu_path.py at its --quick sizes; its files go to tmp_path/out."""
    out = tmp_path / "out"
    env = {**device_like_env(tmp_path), "OUT": str(out), "PY": sys.executable, "GPU_BUNDLE": str(bundle),
           "GPU_SITE": str(tmp_path / "site"), "GPU_CHECK_ALLOW_CPU": "1", "GPU_PATH_ARGS": "--quick --skip faiss",
           "GPU_TUNING_ARGS": "--quick --skip compile --skip embedder", **(extra_env or {})}
    run = subprocess.run(["bash", "benchmarks/gpu_device_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=900)
    return run, out


def test_the_device_check_runs_the_gpu_tests_and_gpu_path_without_ray_or_s3(tmp_path):
    run, out = run_device_check(tmp_path, bundle=tmp_path / "no_bundle")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert {"machine.txt", "gpu_tests.xml", "gpu_tests.log", "gpu_path.json", "gpu_path.log", "gpu_tuning.json",
            "gpu_tuning.log"} <= {p.name for p in out.iterdir()}
    assert "pre-flight: imports ok" in (out / "machine.txt").read_text()
    # Every gpu test of the three files collected (an import error would fail collection) and, without CUDA,
    # skipped: autocast x3 models x compiled or not, shared prefix x2, compiled queued-ahead batches, NCCL step
    # and map sharing, FAISS.
    assert "12 skipped" in (out / "gpu_tests.log").read_text()
    report = json.loads((out / "gpu_path.json").read_text())
    assert report["imported"]["ray"] is False
    extraction = report["extraction"]
    # VGG16's 13 convolutions make 15.3 G multiply-adds at 224x224 (30.7 GFLOP counted as 2 each); at 64x80,
    # 0.102 of those pixels, about 3.1 GFLOP, NetVLAD's few MFLOP on top. The peak fractions rest on this count.
    assert 2.9e9 < extraction["forward_flops_per_image"] < 3.4e9
    float32 = extraction["modes"]["float32"]
    assert float32["images_per_s"] > 0 and float32["achieved_tflops"] >= 0
    assert extraction["bf16_matmul_tflops_measured"] > 0 and float32["fraction_of_bf16_matmul_measured"] > 0
    assert extraction["bf16_dense_peak_tflops_spec"] is None  # no card
    step = report["train_step_ddp_gloo_cpu_smoke"]
    assert step["steps"] == 2 and step["channels_last_step_ratio"] > 0 and step["memory_format"] == "channels_last"
    tuning = json.loads((out / "gpu_tuning.json").read_text())
    assert tuning["imported"]["ray"] is False and tuning["layers"] == "skipped: no CUDA"
    # NetVLAD kept in float32 gives bfloat16's descriptors closer to float32 than the layer left to autocast.
    precision = tuning["precision"]
    assert precision["bfloat16_netvlad_float32"]["cosine_min"] > precision["bfloat16_netvlad_autocast"]["cosine_min"]
    assert set(tuning["batch"]) == {"1", "2"} and tuning["compile"] == "skipped: --skip"


def test_the_device_check_stops_at_once_on_a_bundle_for_another_python(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "MANIFEST").write_text("python 2.7: pydantic==2.14.4\n")
    run, out = run_device_check(tmp_path, bundle)
    assert run.returncode == 3
    assert "wheels for Python 2.7" in run.stdout and not (out / "gpu_tests.log").exists()


def test_the_device_check_stops_at_once_without_cuda(tmp_path):
    run, out = run_device_check(tmp_path, bundle=tmp_path / "no_bundle", extra_env={"GPU_CHECK_ALLOW_CPU": "0"})
    assert run.returncode == 4
    assert "torch sees no CUDA device" in (out / "machine.txt").read_text()
    assert not (out / "gpu_path.json").exists()

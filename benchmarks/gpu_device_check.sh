#!/usr/bin/env bash
# The GPU check in one call, on a GPU machine with PyTorch + CUDA and no package registry (the device tool's
# H200: `run` with carry [".gpu_bundle"], after `bash benchmarks/gpu_bundle.sh` here):
#   1. installs .gpu_bundle/wheels into /tmp/site (never touching the image's packages);
#   2. the tests marked gpu: autocast + channels-last descriptors against float32 and a shared frozen prefix on
#      the GPU (tests/pipelines/extract), the NCCL DDP step and frozen-map sharing (two GPUs, else skipped), FAISS
#      GPU shards against the CPU (skipped without faiss-gpu) -> gpu_tests.xml, gpu_tests.log;
#   3. benchmarks/gpu_path.py at full size -> gpu_path.json, gpu_path.log (VGG16-NetVLAD images/s at 480x640 in
#      float32 / bfloat16 / float16 and their fraction of the card's bfloat16 peak, the NCCL DDP training step);
#   4. machine.txt: nvidia-smi and torch's view of the card.
# Everything lands in $OUT (the device tool's folder that comes back), else results/gpu_device/.
# Each step has its own time limit so that one hang leaves the others' files: the whole fits in ~8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_device}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
started=$(date +%s)
{ date -u; nvidia-smi || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'devices', torch.cuda.device_count())"
} > "$OUT/machine.txt" 2>&1
if [ -d .gpu_bundle/wheels ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu_bundle/wheels/*.whl >> "$OUT/machine.txt" 2>&1 || { echo "wheel install failed (machine.txt)"; exit 3; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
[ -d .gpu_bundle/data ] && export SARE_SHARED_DATA=$PWD/.gpu_bundle/data
timeout "${GPU_TESTS_TIMEOUT_S:-240}" "$PY" -m pytest -m gpu -p no:cacheprovider -q -rA \
  tests/pipelines/extract/test_embedder_gpu.py tests/sare_core/training/test_distributed.py \
  tests/sare_core/evaluation/test_search.py --junitxml="$OUT/gpu_tests.xml" > "$OUT/gpu_tests.log" 2>&1
tests_rc=$?
tail -25 "$OUT/gpu_tests.log"
timeout "${GPU_PATH_TIMEOUT_S:-270}" "$PY" benchmarks/gpu_path.py --out "$OUT/gpu_path.json" ${GPU_PATH_ARGS:-} \
  > "$OUT/gpu_path.log" 2>&1
path_rc=$?
tail -15 "$OUT/gpu_path.log"
echo "gpu tests rc $tests_rc, gpu_path rc $path_rc, $(( $(date +%s) - started )) s; files in $OUT"
[ "$tests_rc" = 0 ] && [ "$path_rc" = 0 ]

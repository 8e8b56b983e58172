#!/usr/bin/env bash
# Downloads the wheels of this project's dependencies that a GPU machine image with JAX, Flax,
# Optax, Orbax, PyTorch, OpenCV, tqdm and matplotlib lacks (grain with array_record and
# portpicker, pycocotools, tensorboardX), for `scripts/gpu_check.sh --wheels DIR` on a machine
# that cannot reach a package index. About 5 MB.
#
#   bash scripts/gpu_wheels.sh [DIR] [PYTHON_VERSION]      # default .whl and 3.12
set -euo pipefail
dir=${1:-.whl}
version=${2:-3.12}
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dir" \
    grain==0.2.18 array_record==0.8.6 portpicker==1.6.0 pycocotools==2.0.11 tensorboardX==2.6.5
ls "$dir"

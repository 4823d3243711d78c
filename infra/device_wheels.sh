#!/usr/bin/env bash
# Download, here (with network), the wheels that infra/device_check.sh installs offline on the GPU
# test machine (Python 3.12, x86-64, torch/torchvision/numpy/pillow/tqdm/rich preinstalled, no
# network). Versions are the ones pinned in uv.lock. The folder (default .whl/, listed in
# .git/info/exclude so git ignores it) is sent along with the device tool's `carry: [".whl"]`.
#   infra/device_wheels.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.whl}"
mkdir -p "$dir"
grep -qxF "/$dir/" .git/info/exclude 2>/dev/null || echo "/$dir/" >>.git/info/exclude
# name==version from uv.lock for each package the project imports that the machine lacks
pkgs=(pydantic pydantic-core annotated-types typing-inspection pydantic-settings python-dotenv
      torchdata faster-coco-eval mlperf-logging)
specs=()
for p in "${pkgs[@]}"; do
    v=$(grep -A1 "^name = \"$p\"\$" uv.lock | sed -n 's/^version = "\(.*\)"/\1/p')
    [[ -n "$v" ]] || { echo "device_wheels: $p is not in uv.lock" >&2; exit 1; }
    specs+=("$p==$v")
done
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dir" "${specs[@]}"
ls -la "$dir"

#!/usr/bin/env bash
# The wheels the device check installs offline on a GPU machine, in one command, from a clean
# clone (network needed here, not there): the distributions listed in infra/device_wheels.txt, at
# their uv.lock versions, for CPython 3.12 on x86-64 (the GPU image's Python, which brings torch,
# torchvision, numpy, pillow, tqdm and rich; infra/device_image.txt). Prints their total size and,
# when .venv exists (after `uv sync`), checks that the list and the image cover every requirement
# of the check's code (infra/device_preflight.py --requirements).
#   infra/device_wheels.sh [DIR]      (default .whl/, ignored by git)
# Then copy the checkout with DIR to the GPU machine and run infra/device_check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.whl}"
mkdir -p "$dir"
specs=()
while read -r p; do
    v=$(grep -A1 "^name = \"$p\"\$" uv.lock | sed -n 's/^version = "\(.*\)"/\1/p')
    [[ -n "$v" ]] || { echo "device_wheels: $p (infra/device_wheels.txt) is not in uv.lock" >&2; exit 1; }
    specs+=("$p==$v")
    # keep one version of each: a second would stop the offline install
    u=$(echo "$p" | tr '-' '_')
    for old in "$dir"/"$u"-*.whl "$dir"/"$p"-*.whl; do
        [[ -e "$old" && "$(basename "$old")" != "$u-$v-"* ]] && rm -f "$old"
    done
done < <(sed 's/#.*//; s/[[:space:]]//g; /^$/d' infra/device_wheels.txt)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dir" "${specs[@]}"
n=$(find "$dir" -maxdepth 1 -name '*.whl' | wc -l)
echo "device_wheels: $n wheels in $dir, $(du -ch "$dir"/*.whl | tail -1 | cut -f1) in all"
if [[ -x .venv/bin/python ]]; then
    .venv/bin/python infra/device_preflight.py --requirements
else
    echo "device_wheels: after 'uv sync', infra/device_check.sh --preflight checks the list"
fi

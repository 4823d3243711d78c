#!/usr/bin/env bash
# The prepared device check (issue 12): one table of train-step img/s and peak memory (batch 114
# and 256; eager / compiled / CUDA graphs), the input pipeline and a 5,000-image evaluation.
#   infra/device_check.sh            on the GPU test machine (within 9 minutes, no network)
#   infra/device_check.sh --tiny     CPU smoke run from the repository root after `uv sync`
# Python: .venv/bin/python when present, else python3 with this repo's packages on PYTHONPATH.
# Wheels the machine lacks (infra/device_wheels.sh downloads them into .whl/ here; send them with
# the device tool's carry: [".whl"]) are installed offline into /tmp/device_site first.
# Extra arguments go to infra/device_check.py (--budget SECONDS).
set -euo pipefail
cd "$(dirname "$0")/.."
src=""
for d in packages/*/src; do src="${src:+$src:}$PWD/$d"; done
if [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py=python3
    if [[ -d .whl ]] && ls .whl/*.whl >/dev/null 2>&1; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/device_site .whl/*.whl
        src="$src:/tmp/device_site"
    fi
fi
export PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TORCHINDUCTOR_COMPILE_THREADS="${TORCHINDUCTOR_COMPILE_THREADS:-$(nproc)}"
exec "$py" infra/device_check.py "$@"

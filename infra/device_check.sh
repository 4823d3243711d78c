#!/usr/bin/env bash
# The device check: one table of train-step img/s, ops and host syncs per step, peak memory
# (batch 256, then 114; eager / compiled / CUDA graphs), the input pipeline and a 5,000-image
# evaluation, within 8 minutes and without network; it saves the table, the benchmark JSONs and a
# torch.profiler trace of 10 compiled steps to its output folder. A preflight (< 30 s: imports,
# requirements, a C compiler, one tiny torch.compile on the device) runs first and stops the
# check with one line if anything is missing.
#
# On any GPU machine: run infra/device_wheels.sh here (with network), copy the checkout with its
# .whl/ folder there, run infra/device_check.sh [--out DIR] and keep the output folder it names
# (default runs/device_check-<UTC time>).
#   infra/device_check.sh              the full check (GPU machine)
#   infra/device_check.sh --preflight  only the preflight (any machine: on a CPU-only one it checks
#                                      what it can and says so)
#   infra/device_check.sh --tiny       CPU smoke run from the repository root after `uv sync`
# Python: .venv/bin/python when present, else python3 with this repo's packages on PYTHONPATH and
# the wheels of .whl/ installed offline into /tmp/device_site first.
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

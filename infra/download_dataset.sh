#!/usr/bin/env bash
# Downloads COCO 2017 (train2017, val2017, annotations; ~20 GB, verified by MD5) and the ImageNet
# ResNet-34 backbone into the layout that run.sub, run_with_docker.sh and the trainer expect:
#
#   $DATADIR/train2017/  $DATADIR/val2017/  $DATADIR/annotations/instances_{train,val}2017.json
#   $DATADIR/torch/hub/checkpoints/resnet34-333f7ec4.pth   (TORCH_HOME=$DATADIR/torch at run time)
#
#   infra/download_dataset.sh /raid/datasets/coco2017        # or DATADIR=... infra/download_dataset.sh
#   infra/download_dataset.sh /raid/datasets/coco2017 --remove-archives
#
# Re-running resumes partial downloads and skips what is complete. Extra options go to
# `ssd-data download` (see `ssd-data download --help`: --base-url for a mirror, --retries, ...).
# Uses this checkout's environment (.venv, or `uv run` when uv is installed), else `ssd-data` from
# PATH (e.g. inside the container).
set -euo pipefail

if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  DATADIR="$1"
  shift
fi
: "${DATADIR:?usage: infra/download_dataset.sh DATADIR [ssd-data download options] (or set DATADIR)}"
mkdir -p "$DATADIR"
DATADIR="$(cd "$DATADIR" && pwd)"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$REPO/.venv/bin/ssd-data" ]; then
  ssd_data=("$REPO/.venv/bin/ssd-data")
elif command -v uv >/dev/null 2>&1 && [ -f "$REPO/uv.lock" ]; then
  ssd_data=(uv run --frozen --project "$REPO" ssd-data)
elif command -v ssd-data >/dev/null 2>&1; then
  ssd_data=(ssd-data)
else
  echo "download_dataset.sh: neither uv nor ssd-data found: run 'uv sync' in $REPO or use the container" >&2
  exit 2
fi

export TORCH_HOME="$DATADIR/torch"
echo "Downloading COCO 2017 into $DATADIR and the backbone into $TORCH_HOME/hub/checkpoints"
"${ssd_data[@]}" download --root "$DATADIR" --backbone "$@"
echo "Done. Train with: DATADIR=$DATADIR (run.sub, run_with_docker.sh), or locally:"
echo "  TORCH_HOME=$TORCH_HOME SSD_DATA__ROOT=$DATADIR torchrun --standalone --nproc-per-node=8 -m ssd_train --config infra/configs/dgxa100.toml"

#!/usr/bin/env bash
# MLPerf SSD training on one node with Docker (no Slurm), the seed's run_with_docker.sh:
#
#   docker build --pull -t ssd-mlperf -f infra/docker/Dockerfile .
#   source infra/configs/config_DGXA100.sh
#   CONT=ssd-mlperf DATADIR=<coco root> LOGDIR=<results> infra/docker/run_with_docker.sh
#
# The system config (infra/configs/config_$DGXSYSTEM.sh) is sourced first; its variables, the
# SSD_* settings and the SUBMISSION_* values of this shell are passed into the container with
# --env. One long-lived container (--net=host --uts=host --ipc=host, stack 64 MiB, memlock
# unlimited, all GPUs) with DATADIR at /data (read-only) and LOGDIR at /results; NEXP trials run
# in it with `docker exec`, each in its own run folder $LOGDIR/<DATESTAMP>-<trial> with its output
# teed to $LOGDIR/<DATESTAMP>-<trial>.log. CLEAR_CACHES=1 drops the host's page cache before each
# trial (root or password-less sudo) and the trainer logs cache_clear.
set -euo pipefail

: "${DGXSYSTEM:?DGXSYSTEM is not set: source infra/configs/config_<SYSTEM>.sh first}"
: "${CONT:?CONT is not set: the image built from infra/docker/Dockerfile}"
: "${DATADIR:?DATADIR is not set: the COCO 2017 root (see infra/download_dataset.sh)}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONFIG_FILE="$REPO/infra/configs/config_${DGXSYSTEM}.sh"
[ -f "$CONFIG_FILE" ] || {
  echo "run_with_docker.sh: no config for DGXSYSTEM=$DGXSYSTEM ($CONFIG_FILE)" >&2
  exit 2
}
# shellcheck source=/dev/null
source "$CONFIG_FILE"

NEXP="${NEXP:-5}"
CLEAR_CACHES="${CLEAR_CACHES:-1}"
DATESTAMP="${DATESTAMP:-$(date +'%y%m%d%H%M%S%N')}"
LOGDIR="${LOGDIR:-$PWD/results}"
CONT_NAME="${CONT_NAME:-ssd_mlperf}"
[ -d "$DATADIR" ] || {
  echo "run_with_docker.sh: DATADIR=$DATADIR is not a directory" >&2
  exit 2
}
mkdir -p "$LOGDIR"
DATADIR="$(cd "$DATADIR" && pwd)"
LOGDIR="$(cd "$LOGDIR" && pwd)"

# The variables the config file sets, plus the submission values and every SSD_* setting.
mapfile -t config_vars < <(env -i bash -c "source '$CONFIG_FILE' && compgen -e" | grep -E -v '^(PWD|SHLVL|_|OLDPWD)$')
mapfile -t ssd_vars < <(compgen -e | grep -E '^(SSD_|SUBMISSION_)' || true)
env_args=()
for var in "${config_vars[@]}" "${ssd_vars[@]}"; do
  env_args+=("--env=$var")
done
export MLPERF_HOST_OS="${MLPERF_HOST_OS:-$(
  # shellcheck disable=SC1091
  . /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}"
)}"
export SSD_LOGGING__MLPERF__PLATFORM="${SUBMISSION_PLATFORM:-1x${DGXSYSTEM}}"
env_args+=(--env=MLPERF_HOST_OS --env=SSD_LOGGING__MLPERF__PLATFORM
  --env=SSD_DATA__ROOT=/data --env=TORCH_HOME=/data/torch --env=NPROC_PER_NODE="$DGXNGPU")

cleanup_docker() {
  docker container rm -f "$CONT_NAME" >/dev/null 2>&1 || true
}
cleanup_docker
trap cleanup_docker EXIT

docker run --rm --init --detach --gpus=all \
  --net=host --uts=host --ipc=host --security-opt=seccomp=unconfined \
  --ulimit=stack=67108864 --ulimit=memlock=-1 \
  --name="$CONT_NAME" \
  --volume="$DATADIR:/data:ro" --volume="$LOGDIR:/results" \
  "$CONT" sleep infinity
docker exec "$CONT_NAME" true

failed=0
for ((trial = 1; trial <= NEXP; trial++)); do
  name="${DATESTAMP}-${trial}"
  echo "Beginning trial $trial of $NEXP: run folder $LOGDIR/$name"
  cache_clear=false
  if [ "$CLEAR_CACHES" = 1 ]; then
    if { [ "$(id -u)" = 0 ] && sync && sysctl -q vm.drop_caches=3; } ||
      { [ "$(id -u)" != 0 ] && sync && sudo -n /sbin/sysctl -q vm.drop_caches=3; }; then
      cache_clear=true
    else
      echo "WARNING: could not drop the page cache (needs root or sudo for sysctl); cache_clear is logged as false" >&2
    fi
  fi
  status=0
  docker exec "${env_args[@]}" --env=MLPERF_CACHE_CLEARED="$cache_clear" \
    --env=SSD_RUN_DIR="/results/$name" \
    "$CONT_NAME" ./infra/run_and_time.sh 2>&1 | tee "$LOGDIR/$name.log" || status=$?
  if [ "$status" != 0 ]; then
    echo "trial $trial FAILED with exit status $status (see $LOGDIR/$name.log)" >&2
    failed=$((failed + 1))
  fi
done
echo "all $NEXP trial(s) done, $failed failed"
[ "$failed" = 0 ]

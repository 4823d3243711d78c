#!/usr/bin/env bash
# One timed training run on this node: starts the torchrun agent for this node and, on the first
# node, prints the seed's result line when it ends:
#   RESULT,SINGLE_STAGE_DETECTOR,,<seconds>,<org>,<start date>
# (the official time is run_stop - run_start in the MLPerf log; infra/mlperf_score.py computes it).
#
# Under Slurm (run.sub starts one task per node) it joins the c10d rendezvous on
# MASTER_ADDR:MASTER_PORT with NNODES agents of NPROC_PER_NODE workers each. Without Slurm it runs
# one node on its own (torchrun --standalone), e.g. inside `docker exec` or on a workstation:
#   SSD_CONFIG=infra/configs/dgxa100.toml NPROC_PER_NODE=8 infra/run_and_time.sh [trainer options]
#
# Variables: SSD_RUN_DIR (run folder; default: the trainer's), NNODES (default 1),
# NPROC_PER_NODE (default DGXNGPU, else 1), MASTER_ADDR/MASTER_PORT/RDZV_ID (multi-node),
# MAX_RESTARTS (torchrun restarts after a crash, default 0), TORCHRUN_ARGS (extra torchrun
# options, e.g. "--numa-binding=node" where torchrun has it), SUBMISSION_ORG (for the RESULT line).
# Extra arguments go to the trainer (python -m ssd_train).
set -euo pipefail

NNODES="${NNODES:-1}"
NPROC_PER_NODE="${NPROC_PER_NODE:-${DGXNGPU:-1}}"
MAX_RESTARTS="${MAX_RESTARTS:-0}"
read -r -a extra_torchrun <<<"${TORCHRUN_ARGS:-}"

# Threads: the data workers and the intra-op pool share the node (as the seed's container set).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

start=$(date +%s)
start_fmt=$(date +'%Y-%m-%d %r')
echo "STARTING TIMING RUN AT $start_fmt"

launcher=(torchrun --nproc-per-node="$NPROC_PER_NODE" --max-restarts="$MAX_RESTARTS")
if [ "$NNODES" = 1 ] && [ -z "${MASTER_ADDR:-}" ]; then
  launcher+=(--standalone)
else
  : "${MASTER_ADDR:?MASTER_ADDR is not set (the first node; run.sub sets it)}"
  : "${MASTER_PORT:?MASTER_PORT is not set (run.sub sets it)}"
  launcher+=(--nnodes="$NNODES" --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT"
    --rdzv-id="${RDZV_ID:-${SLURM_JOB_ID:-ssd}}")
fi
launcher+=("${extra_torchrun[@]}" -m ssd_train)
if [ -n "${SSD_RUN_DIR:-}" ]; then
  launcher+=(--run-dir "$SSD_RUN_DIR")
fi

echo "running: ${launcher[*]} $*"
status=0
"${launcher[@]}" "$@" || status=$?

end=$(date +%s)
if [ "${SLURM_NODEID:-0}" = 0 ]; then
  echo "ENDING TIMING RUN AT $(date +'%Y-%m-%d %r')"
  echo "RESULT,SINGLE_STAGE_DETECTOR,,$((end - start)),${SUBMISSION_ORG:-community},$start_fmt"
fi
exit "$status"

#!/usr/bin/env bash
# Launch variables for NVIDIA DGX H200 (H200 141 GB, 2x 56-core Xeon 8480C): 1 x 8 GPUs.
# NOT YET VALIDATED BY A RUN: our own config, not part of the v0.7 submission.
# Source it before run.sub or run_with_docker.sh (see infra/README.md):
#   source infra/configs/config_DGXH200.sh
#   CONT=<image> DATADIR=<coco root> LOGDIR=<results> sbatch -N $DGXNNODES -t $WALLTIME infra/slurm/run.sub
# The hyperparameters live in the TOML preset named by SSD_CONFIG (relative to the repository root,
# which is also the container's working directory); SSD_* variables override single settings.

## System run parameters
export DGXSYSTEM=DGXH200
export DGXNNODES=1
export WALLTIME=$(( ${NEXP:-5} * 20 )) # minutes: 20 per trial, a guess (DGX A100's)

## System config parameters
export DGXNGPU=8
export DGXSOCKETCORES=56
export DGXNSOCKET=2
export DGXHT=2 # 2: hyper-threading on, 1: off

## Hyperparameters (our own, see the preset)
export SSD_CONFIG=infra/configs/dgxh200.toml

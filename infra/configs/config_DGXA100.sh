#!/usr/bin/env bash
# Launch variables for NVIDIA DGX A100 (A100 40 GB): 1 x 8 GPUs.
# Source it before run.sub or run_with_docker.sh (see infra/README.md):
#   source infra/configs/config_DGXA100.sh
#   CONT=<image> DATADIR=<coco root> LOGDIR=<results> sbatch -N $DGXNNODES -t $WALLTIME infra/slurm/run.sub
# The hyperparameters live in the TOML preset named by SSD_CONFIG (relative to the repository root,
# which is also the container's working directory); SSD_* variables override single settings.

## System run parameters
export DGXSYSTEM=DGXA100
export DGXNNODES=1
export WALLTIME=$(( ${NEXP:-5} * 20 )) # minutes: 20 per trial, as in the NVIDIA v0.7 submission

## System config parameters
export DGXNGPU=8
export DGXSOCKETCORES=64
export DGXNSOCKET=2
export DGXHT=2 # 2: hyper-threading on, 1: off

## Hyperparameters (spec section 5.2)
export SSD_CONFIG=infra/configs/dgxa100.toml

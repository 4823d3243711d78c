#!/usr/bin/env bash
# Launch variables for NVIDIA DGX-2H (V100 32 GB): 1 x 16 GPUs.
# Source it before run.sub or run_with_docker.sh (see infra/README.md):
#   source infra/configs/config_DGX2.sh
#   CONT=<image> DATADIR=<coco root> LOGDIR=<results> sbatch -N $DGXNNODES -t $WALLTIME infra/slurm/run.sub
# The hyperparameters live in the TOML preset named by SSD_CONFIG (relative to the repository root,
# which is also the container's working directory); SSD_* variables override single settings.

## System run parameters
export DGXSYSTEM=DGX2
export DGXNNODES=1
export WALLTIME=$(( ${NEXP:-5} * 20 )) # minutes: 20 per trial, as in the NVIDIA v0.7 submission

## System config parameters
export DGXNGPU=16
export DGXSOCKETCORES=24
export DGXNSOCKET=2
export DGXHT=2 # 2: hyper-threading on, 1: off

## Hyperparameters (spec section 5.2)
export SSD_CONFIG=infra/configs/dgx2.toml

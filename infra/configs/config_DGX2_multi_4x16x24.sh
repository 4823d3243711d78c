#!/usr/bin/env bash
# Launch variables for NVIDIA DGX-2H, 24 images per GPU: 4 x 16 GPUs.
# Source it before run.sub or run_with_docker.sh (see infra/README.md):
#   source infra/configs/config_DGX2_multi_4x16x24.sh
#   CONT=<image> DATADIR=<coco root> LOGDIR=<results> sbatch -N $DGXNNODES -t $WALLTIME infra/slurm/run.sub
# The hyperparameters live in the TOML preset named by SSD_CONFIG (relative to the repository root,
# which is also the container's working directory); SSD_* variables override single settings.

## System run parameters
export DGXSYSTEM=DGX2_multi_4x16x24
export DGXNNODES=4
export WALLTIME=$(( ${NEXP:-5} * 15 )) # minutes: 15 per trial, as in the NVIDIA v0.7 submission

## System config parameters
export DGXNGPU=16
export DGXSOCKETCORES=24
export DGXNSOCKET=2
export DGXHT=2 # 2: hyper-threading on, 1: off

## Hyperparameters (spec section 5.2)
export SSD_CONFIG=infra/configs/dgx2_multi_4x16x24.toml

#!/usr/bin/env bash
# A tiny CPU "system" for trying run.sub on the local test cluster (infra/slurm/local-cluster.sh)
# and for tests/infra: 2 nodes x 1 CPU process, a few steps on a small synthetic dataset, one
# evaluation, open division. Not a benchmark configuration.
#   infra/slurm/local-cluster.sh start && export SLURM_CONF=/tmp/ssd-local-slurm/slurm.conf
#   source infra/configs/config_CPU_test.sh
#   NEXP=2 LOGDIR=/tmp/ssd-results sbatch -N $DGXNNODES -t $WALLTIME infra/slurm/run.sub

## System run parameters
export DGXSYSTEM=CPU_test
export DGXNNODES=2
export WALLTIME=30 # minutes; well above the run, so that --signal=B:USR1@300 never fires by itself

## System config parameters
export DGXNGPU=1 # processes per node (CPU ranks, gloo)
export DGXSOCKETCORES=1
export DGXNSOCKET=1
export DGXHT=1

## Hyperparameters: the CPU preset, shrunk to a few steps with the SSD_* overrides below
export SSD_CONFIG=infra/configs/cpu.toml
export SSD_ALLOW_SYNTHETIC=1 # no DATADIR needed: the trainer generates its synthetic dataset
export SUBMISSION_DIVISION=open
export SSD_DEVICE=cpu
export SSD_NUM_THREADS=1
export SSD_COMPILE=false
export SSD_MODEL__BACKBONE_WEIGHTS=none # random init: no weights to download
export SSD_SYNTHETIC__TRAIN_IMAGES=16
export SSD_SYNTHETIC__VAL_IMAGES=8
export SSD_DATA__BATCH_SIZE=4
export SSD_DATA__EVAL_BATCH_SIZE=8
export SSD_DATA__NUM_WORKERS=0
export SSD_SCHEDULE__MAX_EPOCHS=1
export SSD_SCHEDULE__EVAL_EPOCHS='[1]'
export SSD_SCHEDULE__WARMUP_ITERATIONS=1
export SSD_OPTIM__LR_PER_32=0.0025
export SSD_OPTIM__GRAD_CLIP_NORM=1.0
export SSD_LOGGING__LOG_EVERY=1
export SSD_LOGGING__PROGRESS=lines
export SSD_LOGGING__PLOTS=false
export SSD_EVAL__ASYNCHRONOUS=false # no extra scoring process on a 2-core machine
export SSD_RESILIENCE__PREEMPTION__CHECK_EVERY_STEPS=1

#!/usr/bin/env bash
# Distills Minitron-4B from Nemotron-4 15B on 4 nodes of 8 GPUs with SLURM:
#
#   sbatch recipes/examples/slurm-minitron-4b.sh
#
# One task per node drives every GPU of its node (one goroutine each). The
# tasks meet at the first host of the allocation (SLURM_JOB_NODELIST) on a
# port of the job's own (20000 + job id mod 20000), or at MASTER_ADDR and
# MASTER_PORT when they are set, then train over NCCL; the one on the first
# host (rank 0) writes the logs, the checkpoints and the model. The run
# folder must be on a file system every node sees. Resubmitting the script
# resumes from the newest checkpoint, on any number of nodes whose GPUs
# divide train.accumulation.
#
#SBATCH --job-name=minitron-4b
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --exclusive
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.log
set -euo pipefail

MINITRON=${MINITRON:-minitron}
CONFIG=${CONFIG:-recipes/examples/distill-minitron-4b.yaml}
OUT=${OUT:-runs/minitron-4b/distill}

# NCCL finds InfiniBand by itself; NCCL_DEBUG=INFO shows what it chose.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

# --kill-on-bad-exit stops every task when one fails, instead of leaving
# the others waiting in a collective.
srun --kill-on-bad-exit=1 "$MINITRON" distill --config "$CONFIG" --out "$OUT"

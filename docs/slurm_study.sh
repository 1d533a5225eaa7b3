#!/usr/bin/env bash
# A normlab study as a Slurm job array: array task K of N runs the K-th shard of the study, and every
# task writes into one experiment folder on a filesystem that all nodes share (docs/cluster.md).
#
#   sbatch --array=1-8 docs/slurm_study.sh SPEC|PRESET /shared/experiments/NAME [normlab experiment options]
#   sbatch --dependency=afterany:JOBID --wrap "normlab experiment report /shared/experiments/NAME"
#
# NORMLAB names the command when it is not on the nodes' PATH (sbatch passes the environment on):
#   NORMLAB=/shared/normlab/.venv/bin/normlab sbatch --array=1-8 docs/slurm_study.sh ...
# A task that fails, is cancelled or is requeued (preempted) continues where it stopped when it runs
# again: its finished runs are kept and a stopped run resumes from its last checkpoint.
#SBATCH --job-name=normlab-study
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=08:00:00
#SBATCH --requeue
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail

usage="usage: sbatch --array=1-N slurm_study.sh SPEC|PRESET OUT [normlab experiment options]"
if [ $# -lt 2 ]; then echo "$usage" >&2; exit 2; fi
if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then echo "not a Slurm array task (no SLURM_ARRAY_TASK_ID); $usage" >&2; exit 2; fi
spec=$1 out=$2
shift 2
# --array=1-8 and --array=0-7 both give shards 1/8 ... 8/8 (the range must have no step)
k=$((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN + 1))
n=$((SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1))
# torch would start a thread per core of the node, not per core of this task's share
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
exec "${NORMLAB:-normlab}" experiment "$spec" --out "$out" --shard "$k/$n" "$@"

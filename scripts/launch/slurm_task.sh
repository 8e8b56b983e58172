#!/usr/bin/env bash
# One process of a multi-node run: what slurm.sbatch starts with srun on every task (one per
# GPU), and what its --local mode starts N times on this machine.
#
#   slurm_task.sh [ARGS...]   # yolox-jax train ARGS + this process's place in the run
#
# From SLURM (or from slurm.sbatch --local): SLURM_PROCID (this process), SLURM_NTASKS (all
# processes), SLURM_LOCALID (this process on its node: which GPU it uses). From slurm.sbatch:
# YOLOX_JAX_COORDINATOR (host:port of process 0), YOLOX_JAX_LOG_DIR (task-<rank>.log goes there).
# YOLOX_JAX_PYTHON: the Python to run (default python3 on PATH).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/launch/lib.sh
source "$here/lib.sh"

rank=${SLURM_PROCID:?not set: start this with srun from slurm.sbatch, or slurm.sbatch --local}
ntasks=${SLURM_NTASKS:?not set: start this with srun from slurm.sbatch, or slurm.sbatch --local}
coordinator=${YOLOX_JAX_COORDINATOR:?not set: slurm.sbatch sets it}
local_id=${SLURM_LOCALID:-0}

# One GPU per process. SLURM either bound one to this task already (--gpus-per-task=1,
# --gpu-bind=single:1: CUDA_VISIBLE_DEVICES holds one GPU), or lets every task of the node see all
# of them (--gpus-per-node: take the SLURM_LOCALID-th), or set nothing (take GPU SLURM_LOCALID).
if [[ -z ${CUDA_VISIBLE_DEVICES:-} ]]; then
  export CUDA_VISIBLE_DEVICES=$local_id
elif [[ $CUDA_VISIBLE_DEVICES == *,* ]]; then
  IFS=, read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
  ((local_id < ${#gpus[@]})) ||
    yj_die "task $rank (local $local_id) but only ${#gpus[@]} GPUs visible: $CUDA_VISIBLE_DEVICES"
  export CUDA_VISIBLE_DEVICES=${gpus[local_id]}
fi
# jax.distributed.initialize, finding itself under srun, would also pick the SLURM_LOCALID-th of
# the GPUs this process sees; it sees exactly one now, so it must not know SLURM_LOCALID.
unset SLURM_LOCALID

yj_train "$rank" "${YOLOX_JAX_LOG_DIR:-yolox-jax-logs}/task-$rank.log" "$@" \
  run.distributed=on "run.coordinator_address=$coordinator" "run.num_processes=$ntasks" \
  "run.process_id=$rank"

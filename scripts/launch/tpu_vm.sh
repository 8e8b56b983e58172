#!/usr/bin/env bash
# Train on every worker of a Cloud TPU VM slice at once, or (--local) as N CPU processes on this
# machine through the same per-worker script.
#
#   scripts/launch/tpu_vm.sh --tpu NAME [--zone ZONE] [--project ID] [options] [--] [ARGS...]
#   scripts/launch/tpu_vm.sh --local [--workers N] [--log-dir DIR] [--] [ARGS...]
#
# ARGS go to `yolox-jax train` unchanged (-f CONFIG, -n NAME, --data DIR, section.key=value ...);
# every worker also gets run.distributed=on. On a slice, each worker:
#   1. receives this checkout in ~/yolox-jax (tracked and untracked files, not ignored ones, not
#      tests/) and installs it, with the [tpu] extra, in the virtualenv ~/yolox-jax-venv;
#   2. runs scripts/launch/tpu_worker.sh train ARGS, which writes its output to
#      <log dir>/worker-<number>.log on that worker (worker 0's output is also printed here).
#
# Options:
#   --tpu NAME        the TPU VM (default $TPU_NAME)
#   --zone ZONE       its zone (default $TPU_ZONE, else gcloud's compute/zone)
#   --project ID      its project (default $TPU_PROJECT, else gcloud's core/project)
#   --log-dir DIR     folder of the per-worker logs (default yolox-jax-logs/<UTC time>, relative
#                     to each worker's home folder; with --local, to the current folder)
#   --skip-setup      do not copy and install the checkout (an earlier launch did)
#   --detach          return once training has started on every worker; it goes on after you
#                     disconnect (follow it in the log files)
#   --local           start --workers processes (default 2) on 127.0.0.1 with JAX on the CPU
#
# Checkpoints and metrics go to run.output_dir/run.experiment. With more than one worker that
# must be a folder every worker sees at the same path (a Filestore share, or a Cloud Storage
# bucket mounted with Cloud Storage FUSE): Orbax writes a checkpoint from all processes together.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(cd "$here/../.." && pwd)
# shellcheck source=scripts/launch/lib.sh
source "$here/lib.sh"

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

tpu=${TPU_NAME:-}
zone=${TPU_ZONE:-}
project=${TPU_PROJECT:-}
log_dir=""
setup=1
detach=0
local_mode=0
workers=2
while (($#)); do
  case $1 in
    --tpu) tpu=$2; shift 2 ;;
    --zone) zone=$2; shift 2 ;;
    --project) project=$2; shift 2 ;;
    --log-dir) log_dir=$2; shift 2 ;;
    --skip-setup) setup=0; shift ;;
    --detach) detach=1; shift ;;
    --local) local_mode=1; shift ;;
    --workers) workers=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
train_args=("$@")
stamp=$(date -u +%Y%m%d-%H%M%S)
log_dir=${log_dir:-yolox-jax-logs/$stamp}

output_dir=$(yj_output_dir ${train_args[@]+"${train_args[@]}"})

local_worker() {
  export YOLOX_JAX_WORKER_ID=$1
  exec bash "$here/tpu_worker.sh" train ${train_args[@]+"${train_args[@]}"}
}

if ((local_mode)); then
  yj_local_cpu_env
  export YOLOX_JAX_PYTHON=${YOLOX_JAX_PYTHON:-python3}
  YOLOX_JAX_COORDINATOR=127.0.0.1:$(yj_free_port)
  export YOLOX_JAX_COORDINATOR YOLOX_JAX_NUM_WORKERS=$workers YOLOX_JAX_LOG_DIR=$log_dir
  echo "tpu_vm.sh --local: $workers processes, coordinator $YOLOX_JAX_COORDINATOR," \
    "logs in $log_dir/worker-<i>.log" >&2
  yj_run_local "$workers" local_worker
  exit 0
fi

[[ -n $tpu ]] || yj_die "which TPU VM? give --tpu NAME or set TPU_NAME (or use --local)"
gcloud_args=()
if [[ -n $zone ]]; then gcloud_args+=("--zone=$zone"); fi
if [[ -n $project ]]; then gcloud_args+=("--project=$project"); fi
remote_dir=yolox-jax # in each worker's home folder

on_all_workers() { # COMMAND: run it on every worker at once
  gcloud compute tpus tpu-vm ssh "$tpu" --worker=all ${gcloud_args[@]+"${gcloud_args[@]}"} --command="$1"
}

if ((setup)); then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # The files of the checkout that git tracks or would track (without tests/), else the package.
  if git -C "$checkout" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    git -C "$checkout" ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do
        [[ $f == tests/* || ! -e $checkout/$f ]] || printf '%s\0' "$f"
      done > "$tmp/files"
    tar -C "$checkout" --null -T "$tmp/files" -czf "$tmp/yolox-jax.tar.gz"
  else
    tar -C "$checkout" -czf "$tmp/yolox-jax.tar.gz" pyproject.toml README.md yolox_jax configs scripts
  fi
  echo "copying the checkout to every worker of $tpu ..." >&2
  gcloud compute tpus tpu-vm scp "$tmp/yolox-jax.tar.gz" "$tpu:yolox-jax.tar.gz" --worker=all \
    ${gcloud_args[@]+"${gcloud_args[@]}"}
  setup_command="rm -rf $remote_dir/yolox_jax $remote_dir/configs $remote_dir/scripts"
  setup_command+=" && mkdir -p $remote_dir && tar -xzf yolox-jax.tar.gz -C $remote_dir"
  setup_command+=" && rm yolox-jax.tar.gz && bash $remote_dir/scripts/launch/tpu_worker.sh install"
  on_all_workers "$setup_command"
fi

if [[ -z $output_dir ]]; then
  echo "note: no run.output_dir given: checkpoints go to outputs/ in each worker's home folder," \
    "which works on a single-worker slice only" >&2
fi
command="YOLOX_JAX_LOG_DIR=$(printf '%q' "$log_dir") bash $remote_dir/scripts/launch/tpu_worker.sh train"
if ((${#train_args[@]})); then
  command+=" $(printf '%q ' "${train_args[@]}")"
fi
if ((detach)); then
  command="nohup setsid env $command > /dev/null 2>&1 < /dev/null &"
fi
echo "starting on every worker of $tpu: $command" >&2
echo "per-worker logs: $log_dir/worker-<i>.log on each worker (relative paths: from its home)" >&2
on_all_workers "$command"
if ((detach)); then
  echo "started; follow worker 0 with: gcloud compute tpus tpu-vm ssh $tpu ${gcloud_args[*]:-}" \
    "--worker=0 --command='tail -f $log_dir/worker-0.log'" >&2
fi

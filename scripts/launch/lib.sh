# shellcheck shell=bash
# Functions shared by the launch scripts in this folder (sourced by them, not run).

# The Python that runs yolox-jax: $YOLOX_JAX_PYTHON, else python3 on PATH.
yj_python() {
  printf '%s\n' "${YOLOX_JAX_PYTHON:-python3}"
}

yj_die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# A free TCP port on 127.0.0.1.
yj_free_port() {
  "$(yj_python)" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# yj_output_dir [ARGS...]: the last run.output_dir=... of ARGS (empty if none). A URL (gs://...)
# is an error: yolox-jax writes checkpoints and logs to a file system path.
yj_output_dir() {
  local arg dir=""
  for arg in "$@"; do
    case $arg in
      run.output_dir=*) dir=${arg#run.output_dir=} ;;
    esac
  done
  case $dir in
    *://*) yj_die "run.output_dir=$dir: yolox-jax writes checkpoints and logs to a file system" \
      "path; mount the bucket on every host (e.g. Cloud Storage FUSE) and give that path" ;;
  esac
  printf '%s\n' "$dir"
}

# yj_train ID LOG [ARGS...]: run `yolox-jax train ARGS` as process ID with its output in the file
# LOG (created, with a first line naming host, process and arguments); process 0's output also
# goes to this script's standard output. A TERM, INT or HUP is passed on to the training process.
# Returns its exit status; on a failure, the end of LOG goes to standard error.
yj_train() {
  local id=$1 log=$2
  shift 2
  mkdir -p "$(dirname "$log")"
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $HOSTNAME process $id: yolox-jax train $*" > "$log"
  PYTHONUNBUFFERED=1 "$(yj_python)" -m yolox_jax.cli train "$@" >> "$log" 2>&1 &
  local child=$! rc=0 echo_pid=""
  # shellcheck disable=SC2064  # the pid is meant to be expanded now
  trap "kill -TERM $child 2>/dev/null || true" TERM INT HUP
  if [[ $id == 0 ]]; then
    tail -n +1 -f --pid="$child" "$log" &
    echo_pid=$!
  fi
  # A trapped signal ends `wait` early: wait again until the process has exited.
  while :; do
    rc=0
    wait "$child" || rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  trap - TERM INT HUP
  if [[ -n $echo_pid ]]; then
    wait "$echo_pid" || true
  fi
  if ((rc != 0)); then
    echo "process $id on $HOSTNAME failed (exit status $rc); the end of $log:" >&2
    tail -n 40 "$log" >&2
  fi
  return "$rc"
}

# yj_run_local N FUNCTION: run `FUNCTION i` in the background for i = 0 .. N-1 (FUNCTION must
# exec the process it starts) and wait for all of them. When one fails, or this script gets TERM,
# INT or HUP, the others get TERM. Returns the first non-zero exit status, else 0.
yj_run_local() {
  local n=$1 fn=$2 i status rc=0
  local -a pids=()
  trap 'kill -TERM "${pids[@]}" 2>/dev/null || true; exit 143' TERM INT HUP
  for ((i = 0; i < n; i++)); do
    "$fn" "$i" &
    pids+=("$!")
  done
  for ((i = 0; i < n; i++)); do
    status=0
    wait -n || status=$?
    if ((status != 0 && rc == 0)); then
      rc=$status
      kill -TERM "${pids[@]}" 2>/dev/null || true
    fi
  done
  trap - TERM INT HUP
  return "$rc"
}

# Local mode: JAX on the CPU, one device per process (any forced host device count dropped).
yj_local_cpu_env() {
  export JAX_PLATFORMS=cpu
  local flags=${XLA_FLAGS:-}
  flags=$(printf '%s\n' "$flags" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g')
  flags=$(printf '%s\n' "$flags" | sed -E 's/^ +| +$//g')
  if [[ -n $flags ]]; then
    export XLA_FLAGS=$flags
  else
    unset XLA_FLAGS
  fi
}

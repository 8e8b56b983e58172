#!/usr/bin/env bash
# What runs on each worker of a Cloud TPU VM slice (tpu_vm.sh starts it on all workers at once;
# its --local mode starts it as N processes on this machine).
#
#   tpu_worker.sh install            # a virtualenv with this checkout installed, extra [tpu]
#   tpu_worker.sh train [ARGS...]    # yolox-jax train ARGS run.distributed=on, output in a log
#
# Environment:
#   YOLOX_JAX_LOG_DIR      where worker-<id>.log goes (default ~/yolox-jax-logs)
#   YOLOX_JAX_VENV         the virtualenv (default ~/yolox-jax-venv); its python runs training
#   YOLOX_JAX_PYTHON       the Python to train with (default: the virtualenv's, else python3)
#   YOLOX_JAX_WORKER_ID    this worker's number (default: the TPU VM metadata agent-worker-number)
#   YOLOX_JAX_COORDINATOR  host:port, with YOLOX_JAX_NUM_WORKERS: passed to yolox-jax as
#                          run.coordinator_address / run.num_processes / run.process_id. Unset on
#                          a TPU VM, where jax.distributed.initialize() finds them itself.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(cd "$here/../.." && pwd)
# shellcheck source=scripts/launch/lib.sh
source "$here/lib.sh"

venv=${YOLOX_JAX_VENV:-$HOME/yolox-jax-venv}

worker_id() {
  if [[ -n ${YOLOX_JAX_WORKER_ID:-} ]]; then
    printf '%s\n' "$YOLOX_JAX_WORKER_ID"
    return
  fi
  curl -sSf -H "Metadata-Flavor: Google" \
    "http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number" ||
    yj_die "cannot read this TPU VM's worker number from the metadata server; set YOLOX_JAX_WORKER_ID"
}

install() {
  # TPU VM images may ship a Python older than the 3.11 yolox-jax needs: uv provides one.
  local uv
  uv=$(command -v uv || echo "$HOME/.local/bin/uv")
  if [[ ! -x $uv ]]; then
    python3 -m pip install --user --quiet uv ||
      python3 -m pip install --user --quiet --break-system-packages uv
  fi
  if [[ ! -x $venv/bin/python ]]; then
    "$uv" venv --python "${YOLOX_JAX_PYTHON_VERSION:-3.11}" "$venv"
  fi
  # Editable: a later launch copies the checkout again and trains on it without reinstalling.
  "$uv" pip install --python "$venv/bin/python" --quiet -e "${checkout}[tpu]"
  "$venv/bin/python" -c 'import jax, yolox_jax; print("worker ready:", jax.__version__)'
}

train() {
  local id
  id=$(worker_id)
  if [[ -z ${YOLOX_JAX_PYTHON:-} && -x $venv/bin/python ]]; then
    export YOLOX_JAX_PYTHON=$venv/bin/python
  fi
  local -a cluster=(run.distributed=on)
  if [[ -n ${YOLOX_JAX_COORDINATOR:-} ]]; then
    cluster+=("run.coordinator_address=$YOLOX_JAX_COORDINATOR"
              "run.num_processes=${YOLOX_JAX_NUM_WORKERS:?set with YOLOX_JAX_COORDINATOR}"
              "run.process_id=$id")
  fi
  yj_train "$id" "${YOLOX_JAX_LOG_DIR:-$HOME/yolox-jax-logs}/worker-$id.log" "$@" "${cluster[@]}"
}

case ${1:-} in
  install) install ;;
  train) shift; train "$@" ;;
  *) echo "usage: $(basename "$0") install | train [yolox-jax train arguments]" >&2; exit 2 ;;
esac

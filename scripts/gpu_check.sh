#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one run (sized to take under 8 minutes on one H100):
#   - yolox-s 640, batch 64, float32 and bfloat16: training-step time, images/s, MFU, compile
#     time, time to the first step and the compiled program's memory (`yolox-jax bench`), beside
#     the official PyTorch YOLOX on the same GPU (float32, and its --fp16 beside bfloat16);
#   - the forward pass at batch 1 (latency) and 32, the same way;
#   - `yolox-jax train` itself on the synthetic set at that size and batch (the input pipeline
#     on this host included): seconds to the first step, stalls, images/s.
#
#   bash scripts/gpu_check.sh [--out DIR] [--yolox-src DIR] [--wheels DIR] [--smoke] [--dry-run]
#
# --out DIR        where everything goes (default gpu_results): float32/ and bfloat16/ (bench.md,
#                  bench.json, plots), train/ (the run), train.log, summary.md
# --yolox-src DIR  the official YOLOX source, the folder holding yolox/ (the PyTorch side is
#                  skipped, with the reason in the tables, without it or without torch)
# --wheels DIR     first install these wheels and this project (no index, no dependencies) into
#                  a folder put on PYTHONPATH: for a machine without network whose image lacks
#                  some of the dependencies (scripts/gpu_wheels.sh downloads them)
# --smoke          the same commands on yolox-nano at 64 px, batch 2: a check of the script
#                  itself on any machine, CPU included (a few minutes)
# --dry-run        print the commands, run nothing
set -uo pipefail

out=gpu_results
yolox_src=""
wheels=""
smoke=0
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --yolox-src) yolox_src=$2; shift 2 ;;
    --wheels) wheels=$2; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
# Absolute paths: the commands run from the output folder (below).
out=$(realpath -m "$out")
[ -n "$yolox_src" ] && yolox_src=$(realpath -m "$yolox_src")
[ -n "$wheels" ] && wheels=$(realpath -m "$wheels")
cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-python3}

if [ "$smoke" = 1 ]; then
  bench_model=(-n yolox-nano --size 64 --batch 2 --forward-batches 1 --repeats 2 --warmup 1)
  train_model=(model.name=yolox-nano model.width=0.25 "data.input_size=(64,64)"
               data.batch_size=2 data.num_workers=2 run.max_steps=3 train.print_interval=1)
else
  # The synthetic set (3 classes, 160 px images, letterboxed to 640) with the yolox-s
  # architecture; Mosaic and the rest on the host, in worker processes.
  bench_model=(-n yolox-s --size 640 --batch 64 --forward-batches 1,32 --repeats 10 --warmup 3)
  train_model=(model.name=yolox-s model.width=0.5 model.depth=0.33 "data.input_size=(640,640)"
               data.batch_size=64 data.num_workers=12 run.max_steps=30 train.print_interval=5)
fi
src=()
[ -n "$yolox_src" ] && src=(--yolox-src "$yolox_src")

# Each command once, printed (--dry-run) or run.
bench() {
  local dtype=$1
  local cmd=("$py" -m yolox_jax.cli bench "${bench_model[@]}" --dtype "$dtype"
             --workloads train,startup,forward --eager none "${src[@]}" --out "$out/$dtype")
  if [ "$dry" = 1 ]; then echo "${cmd[*]}"; else "${cmd[@]}"; fi
}
train() {
  local cmd=("$py" -m yolox_jax.cli train -f synthetic "${train_model[@]}"
             data.synthetic_val_images=0 run.tensorboard=false "run.output_dir=$out"
             run.experiment=train)
  if [ "$dry" = 1 ]; then echo "${cmd[*]}"; return 0; fi
  # The progress bar's carriage-return updates are left out of the log.
  "${cmd[@]}" 2>&1 | tr '\r' '\n' | grep -v '^train: ' | tee "$out/train.log"
  return "${PIPESTATUS[0]}"
}

if [ "$dry" = 1 ]; then
  bench float32; bench bfloat16; train
  exit 0
fi

if [ -n "$wheels" ]; then
  site=${TMPDIR:-/tmp}/yolox_jax_site
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --no-build-isolation \
      --upgrade --target "$site" "$wheels"/*.whl . || exit 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
# From the output folder: `python -m` puts the working directory first on sys.path, and from
# this checkout it would import the source tree instead of the installed package.
mkdir -p "$out" && cd "$out" || exit 1
"$py" -c "import jax; print('jax', jax.__version__, jax.devices())" | tee "$out/devices.txt"

status=0
bench float32 || status=1
bench bfloat16 || status=1
train || status=1

"$py" "$root/scripts/gpu_summary.py" "$out" | tee "$out/summary.md"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
exit $status

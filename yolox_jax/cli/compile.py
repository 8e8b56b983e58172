"""Compile a run's train step ahead of time and report its memory per device: whether a config
fits the accelerator before the run, or the TPU slice, is paid for.

    yolox-jax compile -n yolox-s data.batch_size=64                 # this machine's devices
    yolox-jax compile -n yolox-s data.batch_size=256 --topology v5e:2x2
    yolox-jax compile -n yolox-s train.compute_dtype=bfloat16 --sizes all --json mem.json

The programs are the trainer's (one per input size; by default the largest size of the run, the
one that needs the most memory). ``--topology`` compiles for a TPU slice on this host, without
TPUs (needs ``pip install "jax[tpu]==<your jax version>"``); nothing runs. Figures per device:
XLA's memory analysis (arguments, temporaries, generated code) and FLOPs per step.
"""
from __future__ import annotations

import json
import os

from yolox_jax.cli import common

HELP = "compile a run's train step ahead of time (also for a TPU slice) and report its memory"


def add_arguments(p):
    common.add_config_arguments(p)
    p.add_argument("--topology", metavar="TPU",
                   help="compile for this TPU slice instead of this machine's devices, e.g. "
                        "v5e:2x2, v4:2x2x1, v5e:1x1 (needs libtpu, no TPU)")
    p.add_argument("--sizes", choices=("largest", "base", "all"), default="largest",
                   help="input sizes to compile: the largest of the run (default), "
                        "data.input_size, or every multiscale size")
    p.add_argument("--json", metavar="PATH", help="also write the reports as JSON")


def run(args) -> int:
    if args.topology:
        # libtpu on a host without TPUs: keep JAX's own backend on the CPU (probing for a TPU
        # that is not there only waits and warns).
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        # No TPU to share: let this command run beside another process that loaded libtpu.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    common.tune()
    cfg = common.load(args)
    from yolox_jax.train import aot

    devices = aot.topology_devices(args.topology) if args.topology else None
    reports = aot.compile_train_programs(cfg, devices, sizes=args.sizes)
    print(aot.table(reports))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.row() for r in reports], f, indent=2)
    return 0

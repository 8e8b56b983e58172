"""Train a detector (default: the synthetic-shapes demo on CPU).

    yolox-jax train                                   # synthetic shapes, minutes on a CPU
    yolox-jax train --data datasets/my_coco           # your COCO-format or VOC folder
    yolox-jax train --data datasets/my_coco --minutes 30
    yolox-jax train -n yolox-s data.batch_size=128
    yolox-jax train -n yolox-s --resume
"""
from __future__ import annotations

import json

from yolox_jax.cli import common

HELP = "train (default: the synthetic-shapes demo on CPU)"


def add_arguments(p):
    common.add_config_arguments(p)
    p.add_argument("--minutes", type=float, default=None,
                   help="fit the schedule (epochs, warm-up, no-aug phase) to about this many "
                        "minutes of training (train.max_minutes)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("-c", "--ckpt", help="initialise from an official .pth or one of our runs")
    p.add_argument("--devices", type=int, default=0,
                   help="on CPU, simulate this many devices (sets XLA_FLAGS before JAX starts)")


def run(args) -> int:
    import os

    if args.devices:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.devices}")
    from yolox_jax.errors import UserError

    common.tune()
    cfg = common.load(args)
    if args.minutes is not None:
        if args.minutes <= 0:
            raise UserError(f"must be positive, got {args.minutes}", "--minutes")
        cfg.train.max_minutes = args.minutes
    if args.resume:
        cfg.run.resume = True
    if args.ckpt:
        cfg.run.init_from = args.ckpt

    from yolox_jax.cpu import precompile
    from yolox_jax.train.loop import preflight, train
    from yolox_jax.train.sharding import maybe_initialize_distributed

    r = cfg.run
    maybe_initialize_distributed(r.distributed, r.coordinator_address, r.num_processes,
                                 r.process_id)          # before anything starts a backend
    preflight(cfg)                      # the user's paths and data, before anything compiles
    # On a tuned CPU process, a child compiles the programs as the run needs them (see
    # yolox_jax.cpu.precompile); elsewhere the loop compiles them ahead in a thread.
    out = train(cfg, compiler=precompile.start(cfg) if precompile.wanted(cfg) else None)
    summary = {"step": out["step"], "run_dir": out["run_dir"],
               "train": {k: round(float(v), 5) for k, v in out["train"].items()},
               "eval": {k: v for k, v in out["eval"].items() if isinstance(v, (int, float))},
               "time_to_first_step_s": round(out["time_to_first_step_s"] or 0.0, 1),
               "stall_s": round(out["stall_s"], 1)}
    print(json.dumps(summary, indent=2))
    return 0

"""Forward-pass benchmark: ``python scripts/benchmark.py model [--models yolox-s,yolox-nano] [--size 640]
[--batch 1] [--dtype float32|bfloat16] [--train] [--repeat 5]``.

Times the jitted forward pass (eval mode, or train mode with the BN-statistics update when
``--train``) on random-initialised weights (``jax.jit(model.init)``; compile time is reported
separately because XLA:CPU compiles the per-parameter RNG slowly). Prints Markdown rows:
model, input, batch, dtype, mode, compile seconds, median ms per batch, images/s, machine.
"""
from __future__ import annotations

import argparse
import time

from bench_common import machine, time_fn


def main(argv=None):
    import jax
    import jax.numpy as jnp

    from yolox_jax.models.yolox import MODEL_NAMES, build_model

    p = argparse.ArgumentParser(prog="benchmark.py model")
    p.add_argument("--models", default="yolox-nano,yolox-s",
                   help=f"comma-separated, from {', '.join(MODEL_NAMES)}")
    p.add_argument("--size", default="640", help="H or HxW, multiples of 32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--train", action="store_true", help="train-mode forward (batch statistics)")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)

    h, _, w = args.size.partition("x")
    hw = (int(h), int(w or h))
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else None
    mode = "train" if args.train else "eval"
    print(f"machine: {machine()}")
    print("| model | input | batch | dtype | mode | compile s | ms / batch | img / s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = build_model(name.strip(), dtype=dtype)
        images = jax.random.uniform(jax.random.PRNGKey(0), (args.batch, *hw, 3), maxval=255.0)
        variables = jax.jit(lambda k, x: model.init(k, x, train=False))(
            jax.random.PRNGKey(1), images)
        if args.train:
            fwd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
        else:
            fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))
        t0 = time.perf_counter()
        compiled = fwd.lower(variables, images).compile()
        compile_s = time.perf_counter() - t0
        sec = time_fn(lambda: jax.block_until_ready(compiled(variables, images)),
                      warmup=1, repeat=args.repeat)
        print(f"| {name} | {hw[0]}x{hw[1]} | {args.batch} | {args.dtype} | {mode} | "
              f"{compile_s:.1f} | {sec * 1e3:.1f} | {args.batch / sec:.1f} |")
    return 0

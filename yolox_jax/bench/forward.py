"""Forward-pass benchmark: the ``forward_b<N>`` workloads of ``yolox-jax bench``, and
``python scripts/benchmark.py model [--models yolox-s,yolox-nano] [--size 640] [--batch 1]
[--dtype float32|bfloat16] [--train] [--repeat 5]``.

Times the jitted forward pass (eval mode, or train mode with the BN-statistics update when
``--train``) on random-initialised weights (``jax.jit(model.init)``; compile time is reported
separately because XLA:CPU compiles the per-parameter RNG slowly). The script prints Markdown
rows: model, input, batch, dtype, mode, compile seconds, median ms per batch, images/s, machine.
"""
from __future__ import annotations

import argparse

from yolox_jax.bench.common import measure_eager, measure_jit, skipped, speedups

def setup(name, hw, dtype="float32", variables=None, **overrides):
    """``(model, variables)``: ``build_model(name, **overrides)`` and ``variables``, else its
    weights from a jitted init at ``hw`` (an rbg key: XLA:CPU compiles threefry's per-parameter
    RNG slowly)."""
    import jax
    import jax.numpy as jnp

    from yolox_jax.models.yolox import build_model

    model = build_model(name, **overrides, **({"dtype": jnp.bfloat16}
                                              if dtype == "bfloat16" else {}))
    if variables is None:
        variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, *hw, 3)), train=False))(
            jax.random.key(1, impl="rbg"))
    return model, jax.device_put(variables)


def images(batch, hw):
    import jax

    return jax.random.uniform(jax.random.PRNGKey(0), (batch, *hw, 3), maxval=255.0)


def main(argv=None):
    from yolox_jax.bench.common import machine
    from yolox_jax.models.yolox import MODEL_NAMES

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
    mode = "train" if args.train else "eval"
    print(f"machine: {machine()}")
    print("| model | input | batch | dtype | mode | compile s | ms / batch | img / s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model, variables = setup(name.strip(), hw, args.dtype)
        x = images(args.batch, hw)
        if args.train:
            def fwd(v, x):
                return model.apply(v, x, train=True, mutable=["batch_stats"])
        else:
            def fwd(v, x):
                return model.apply(v, x, train=False)
        fig, _ = measure_jit(fwd, (variables, x), batch=args.batch, warmup=1,
                             repeats=args.repeat)
        print(f"| {name} | {hw[0]}x{hw[1]} | {args.batch} | {args.dtype} | {mode} | "
              f"{fig['lower_s'] + fig['compile_s']:.1f} | {fig['median_s'] * 1e3:.1f} | "
              f"{fig['images_per_s']:.1f} |")
    return 0


def workload(s) -> dict:
    """``forward_b<N>`` for each batch of ``s.forward_batches``: the eval-mode forward pass
    (raw outputs, no decode) jitted, eager, and the official model's (``decode_in_inference``
    off, ``torch.no_grad``) when the official YOLOX is importable."""
    model, variables = setup(s.model, s.hw, s.dtype, s.shared.get(("variables", s.model, s.width)),
                             conv=s.conv, **s.model_overrides)

    def fwd(v, x):
        return model.apply(v, x, train=False)

    why = s.reference.need_model(s.model, s.model_overrides)
    ref = None
    if why is None:
        ref = s.reference.official("torch-forward", {
            "model": s.model, "hw": list(s.hw), "batches": list(s.forward_batches),
            "warmup": s.warmup, "steps": s.repeats, "device": "auto", "threads": 0,
            "fp16": s.dtype == "bfloat16"})
        if "error" in ref:
            why, ref = ref["error"], None
    out = {}
    for b in s.forward_batches:
        x = images(b, s.hw)
        jit, _ = measure_jit(fwd, (variables, x), batch=b, warmup=s.warmup, repeats=s.repeats,
                             dtype=s.dtype)
        eager = (measure_eager(lambda: fwd(variables, x), batch=b, repeats=s.eager_repeats)
                 if "forward" in s.eager else skipped("not requested (--eager)"))
        if ref is not None:
            r = ref["batches"][str(b)]
            torch = {"impl": ref["impl"], "threads": ref["threads"], "dtype": ref.get("dtype"),
                     "median_s": r["step_s"],
                     "min_s": r["min_s"], "max_s": r["max_s"], "repeats": len(r["times"]),
                     "times_s": r["times"], "images_per_s": r["img_s"],
                     "peak_rss_mib": ref["peak_rss_mib"]}
        else:
            torch = skipped(why)
        entry = {"label": f"forward, batch {b}", "unit": "batch", "model": s.model,
                 "size": list(s.hw), "batch": b, "dtype": s.dtype, "jit": jit, "eager": eager,
                 "torch": torch}
        entry["speedup"] = speedups(entry)
        out[f"forward_b{b}"] = entry
    return out

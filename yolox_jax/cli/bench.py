"""Benchmark XLA against eager execution, and against the official PyTorch YOLOX when it is
importable: the training step, the forward pass at batch 1 and 32, every label assigner,
postprocess (NMS), the input pipeline, and the time to the first training step.

    yolox-jax bench --quick                        # yolox-tiny 160 px: ~3 minutes on a 2-core CPU
    yolox-jax bench -n yolox-s --size 640 --batch 8 --out bench_results
    yolox-jax bench --workloads train,forward --eager none
    yolox-jax bench --torch-python /path/to/venv/bin/python --yolox-src /path/to/YOLOX

Each jitted workload reports its compile time (``jit(f).lower(...)`` and ``.compile()``, timed
apart) separately from its steady state (the median of --repeats calls after --warmup), images/s,
peak memory (getrusage max RSS on CPU; the compiled program's memory_analysis on a GPU/TPU) and
model FLOPs utilisation (cost_analysis FLOPs over the device's peak; GPU/TPU only). Eager is the
same function under jax.disable_jit(): its first call apart (it compiles every primitive), then
the median of --eager-repeats calls. The official side runs in --torch-python (default: this
interpreter when it has torch) on the official YOLOX source (--yolox-src, or an installed
``yolox``); it is skipped, with the reason, when either is missing.

Written to --out: bench.md (the table printed here), bench.json (every figure) and times.png,
compile.png, throughput.png (with matplotlib installed). Compile times are cold compilations:
the persistent compilation cache is off unless --cache.
"""
from __future__ import annotations

HELP = "benchmark jit vs eager (and the official PyTorch YOLOX): train, forward, assign, NMS, data"

# --quick and the full run: (model, size, batch, repeats, warmup, eager repeats, gts).
QUICK = dict(model="yolox-tiny", size=160, batch=4, repeats=3, warmup=1, eager_repeats=1, gts=10)
FULL = dict(model="yolox-s", size=None, batch=8, repeats=10, warmup=2, eager_repeats=2, gts=30)


def add_arguments(p):
    from yolox_jax.bench.suite import EAGER_GROUPS, GROUPS

    p.add_argument("--quick", action="store_true",
                   help="small sizes and few repeats: yolox-tiny at 160 px, batch 4, 3 repeats "
                        "(each value can still be set below)")
    p.add_argument("--workloads", default=",".join(GROUPS),
                   help=f"comma-separated, from {', '.join(GROUPS)} (default: all)")
    p.add_argument("-n", "--name", help="model (default yolox-s; --quick: yolox-tiny)")
    p.add_argument("--width", type=float, help="override the model's width (e.g. 0.125)")
    p.add_argument("--size", help="input size, H or HxW, multiples of 32 (default: the model's, "
                                  "640 or 416; --quick: 160)")
    p.add_argument("--batch", type=int,
                   help="batch of the train step, assigners and NMS (default 8; --quick: 4)")
    p.add_argument("--forward-batches", default="1,32",
                   help="batches of the forward workloads (default 1,32)")
    p.add_argument("--repeats", type=int, help="timed jit calls per workload (default 10; "
                                               "--quick: 3)")
    p.add_argument("--warmup", type=int, help="untimed jit calls first (default 2; --quick: 1)")
    p.add_argument("--eager", default="all",
                   help=f"workloads also run eagerly: all, none or a list from "
                        f"{', '.join(EAGER_GROUPS)} (default all)")
    p.add_argument("--eager-repeats", type=int,
                   help="timed eager calls after the first (default 2; --quick: 1)")
    p.add_argument("--assigners", help="comma-separated assigner names (default: every one)")
    p.add_argument("--gts", type=int,
                   help="ground truths per image for the assigners, padded to 4x (default 30; "
                        "--quick: 10)")
    p.add_argument("--data-workers", type=int, default=0,
                   help="input-pipeline worker processes (default 0: in this process)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--conv", choices=["auto", "xla", "cpu"], default="auto",
                   help="the model's convolutions (auto: cpu on a CPU backend, as yolox-jax "
                        "train; xla elsewhere)")
    p.add_argument("--torch-python", metavar="PATH",
                   help="interpreter with torch for the PyTorch side ('none' to skip; default: "
                        "this one when it has torch)")
    p.add_argument("--yolox-src", metavar="DIR",
                   help="official YOLOX source (the folder holding yolox/); default: an "
                        "installed yolox package")
    p.add_argument("--cache", action="store_true",
                   help="use the persistent compilation cache (compile times become cache loads)")
    p.add_argument("--out", default="bench_results",
                   help="output folder (default bench_results)")


def _ints(text: str, flag: str) -> tuple[int, ...]:
    from yolox_jax.errors import UserError

    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"expected comma-separated integers, got {text!r}", flag) from None
    if not values or min(values) < 1:
        raise UserError("expected positive integers", flag)
    return values


def _size(text: str) -> tuple[int, int]:
    from yolox_jax.errors import UserError

    h, _, w = str(text).lower().partition("x")
    try:
        hw = (int(h), int(w or h))
    except ValueError:
        raise UserError(f"expected H or HxW, got {text!r}", "--size") from None
    if min(hw) < 32 or hw[0] % 32 or hw[1] % 32:
        raise UserError(f"sides must be positive multiples of 32, got {text!r}", "--size")
    return hw


def _groups(text: str, allowed, flag: str) -> list[str]:
    from yolox_jax.errors import UserError

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise UserError(f"unknown {', '.join(unknown) or 'empty list'}; known: "
                        f"{', '.join(allowed)}", flag)
    return names


def settings(args):
    """The :class:`~yolox_jax.bench.suite.Settings` and workload groups of the arguments."""
    from yolox_jax.bench.suite import EAGER_GROUPS, GROUPS, Settings
    from yolox_jax.errors import UserError
    from yolox_jax.models.yolox import MODEL_NAMES

    base = QUICK if args.quick else FULL
    model = args.name or base["model"]
    if model not in MODEL_NAMES:
        raise UserError(f"unknown model {model!r}; known: {', '.join(MODEL_NAMES)}", "-n")
    size = args.size or base["size"] or (416 if model in ("yolox-nano", "yolox-tiny") else 640)
    pick = {k: getattr(args, k) if getattr(args, k) is not None else base[k]
            for k in ("batch", "repeats", "warmup", "eager_repeats", "gts")}
    for k, low in (("batch", 1), ("repeats", 1), ("warmup", 0), ("eager_repeats", 1),
                   ("gts", 1)):
        if pick[k] < low:
            raise UserError(f"must be at least {low}", "--" + k.replace("_", "-"))
    if args.width is not None and args.width <= 0:
        raise UserError("must be positive", "--width")
    if args.data_workers < 0:
        raise UserError("must be at least 0", "--data-workers")
    eager = {"all": list(EAGER_GROUPS), "none": []}.get(args.eager)
    if eager is None:
        eager = _groups(args.eager, EAGER_GROUPS, "--eager")
    assigners = ()
    if args.assigners:
        from yolox_jax.cli.assign_vis import assigner_list

        assigners = tuple(assigner_list(args.assigners))
    s = Settings(model=model, hw=_size(size), width=args.width,
                 forward_batches=_ints(args.forward_batches, "--forward-batches"),
                 dtype=args.dtype, conv=args.conv, eager=frozenset(eager), assigners=assigners,
                 data_workers=args.data_workers, quick=args.quick, **pick)
    return s, _groups(args.workloads, GROUPS, "--workloads")


def run(args) -> int:
    from yolox_jax.cpu import tune_process

    # Before any JAX backend starts: the CPU process tuning of the other commands (a no-op on a
    # GPU or TPU). No persistent compilation cache unless asked: compile times are compiles.
    tune_process()
    s, groups = settings(args)
    if args.cache:
        from yolox_jax.cli.common import enable_compilation_cache

        enable_compilation_cache()
    import dataclasses
    import os

    from yolox_jax.bench import common, suite

    reference = common.Reference.probe(args.torch_python, args.yolox_src)
    if reference.python and not any(k.startswith("XLA_PYTHON_CLIENT_") for k in os.environ):
        # On a GPU the official side shares the device with this process, which would otherwise
        # reserve 75 % of its memory up front (no effect on CPU; the backend starts below).
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = "0.45"
    result = suite.run(dataclasses.replace(s, reference=reference), groups)
    paths = suite.write(result, args.out)
    print()
    print(suite.header(result))
    print(suite.markdown_table(result))
    written = [paths["json"], paths["markdown"], *paths["plots"]]
    print("wrote " + ", ".join(str(p) for p in written))
    if "plots_error" in paths:
        print(paths["plots_error"])
    return 0

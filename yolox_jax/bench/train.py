"""Training-step benchmark: the ``train`` and ``startup`` workloads of ``yolox-jax bench``, and
``python scripts/benchmark.py train [--models yolox-tiny:416,yolox-s:640] [--batch 8]
[--dtype float32|bfloat16] [--warmup 2] [--steps 5] [--torch-python PATH] [--yolox-src DIR]
[--conv auto|xla|cpu|both] [--no-cache] [--skip-jax] [--paired R]``.

Ours: the trainer's step (``bind_train_step`` + ``make_optimizer`` + ``jit_train_step`` on a 1-D
mesh, rbg-key ``jax.jit(model.init)``, EMA on, L1 off) on a synthetic batch
(uint8 images, ~10 random boxes per image padded to 120 rows). Compile time is measured with
``jit(step).lower(...).compile()`` and reported apart from the median step time; FLOPs per step
come from the compiled executable's ``cost_analysis()``; MFU = FLOPs / step time / peak is printed
on a GPU/TPU whose peak is in ``PEAK_FLOPS`` ("n/a" on CPU). XLA's persistent compilation cache
(``$JAX_COMPILATION_CACHE_DIR`` or ~/.cache/yolox_jax/xla, the CLI's) makes reruns fast; the
"cache" column says whether this run's compile was a miss (new cache entries) or a hit.

Official PyTorch YOLOX (optional): runs as a subprocess with ``--torch-python`` (a separate
interpreter that has torch; yolox_jax itself never needs it) on the official YOLOX 0.3.0 source
unpacked at ``--yolox-src`` (yolox_jax/bench/official.py). Nothing is fetched at run time; set up
once with::

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch numpy
    /tmp/tvenv/bin/pip download yolox==0.3.0 --no-deps --no-binary :all: --no-build-isolation \
        -d /tmp/yolox_src && tar xzf /tmp/yolox_src/yolox-0.3.0.tar.gz -C /tmp/yolox_src

``--paired R`` is the comparison to trust on a shared or throttled machine: both steps are
compiled / warmed up once and kept alive (the official one in a ``--torch-serve`` subprocess that
waits on stdin), then R rounds of ``--steps`` steps alternate between the two (ours first in even
rounds, the official first in odd ones). Each round gives a ratio of medians, so a machine whose
speed drifts by more than the difference (a shared VM's often does, from minute to minute) still compares like
with like; the row reports every round's ratio, their median and the rounds ours won.

Every figure comes with ``os.getloadavg()`` (1-min load), taken right after its timed steps: on a
shared machine compare rows only at similar load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from yolox_jax.bench.common import (
    OFFICIAL_SCRIPT,
    compile_timed,
    machine,
    measure_eager,
    memory_figures,
    mfu,
    peak_flops,
    program_stats,
    reset_peak_rss,
    run_official,
    skipped,
    speedups,
    summary,
)
from yolox_jax.bench.official import has_official_source, load1 as _load1, synthetic_batch
from yolox_jax.bench.official import timing as _timing

DEFAULT_MODELS = "yolox-tiny:416,yolox-s:640"


def _parse_models(spec: str):
    out = []
    for item in spec.split(","):
        name, _, size = item.strip().partition(":")
        h, _, w = (size or "640").partition("x")
        out.append((name, (int(h), int(w or h))))
    return out


# ----------------------------------------------------------------------------------------- JAX


def _cache_files(path):
    try:
        return sum(len(f) for _, _, f in os.walk(path))
    except OSError:
        return 0


def setup_jax(name, hw, batch, dtype, cache_dir, conv="xla", share=None, **model_overrides):
    """Compile the trainer's step for ``name`` at ``hw``. Returns ``(run, loss, info, eager)``:
    ``run(n)`` takes n steps from the kept state and returns their seconds, ``loss()`` the last
    step's total loss, ``info`` the compile figures (the first step is taken and timed here,
    ``first_step_s``), ``eager()`` one step of the same function under the caller's
    ``jax.disable_jit()`` from the current state (the state is not advanced). ``share``: a dict
    that receives a host copy of the initial variables (``share["variables"]``)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from yolox_jax import build_model
    from yolox_jax.train.schedule import yolox_warm_cos_lr
    from yolox_jax.train.sharding import jit_train_step, make_mesh, replicated, shard_batch
    from yolox_jax.train.state import create_train_state, make_optimizer
    from yolox_jax.train.step import bind_train_step

    mesh = make_mesh()
    model = build_model(name, num_classes=80, conv=conv, **model_overrides,
                        **({"dtype": jnp.bfloat16} if dtype == "bfloat16" else {}))
    lr_fn = yolox_warm_cos_lr(0.01 / 64 * batch, 1000, 300, warmup_epochs=5, no_aug_epochs=15,
                              min_lr_ratio=0.05)
    tx = make_optimizer(lr_fn, momentum=0.9, weight_decay=5e-4)

    t0 = time.perf_counter()
    rng = jax.random.key(0, impl="rbg")
    init = jax.jit(lambda r: model.init(r, jnp.zeros((1, *hw, 3), jnp.float32), train=False),
                   out_shardings=replicated(mesh))
    variables = init(rng)
    state = jax.jit(lambda v: create_train_state(v, tx), out_shardings=replicated(mesh))(variables)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    share_s = 0.0
    if share is not None:  # before the first step donates buffers the state may share with them
        t0 = time.perf_counter()
        share["variables"] = jax.device_get(variables)
        share_s = time.perf_counter() - t0
    del variables

    step_fn = bind_train_step(model=model, tx=tx, lr_fn=lr_fn, ema=True,
                              loss_kwargs=dict(iou_loss_type="iou", obj_target="binary",
                                               assign_kwargs=dict(center_radius=1.5)))
    step = jit_train_step(step_fn, mesh)
    data = shard_batch(synthetic_batch(batch, hw), mesh)
    use_l1 = np.bool_(False)

    before = _cache_files(cache_dir) if cache_dir else 0
    compiled, lower_s, compile_s = compile_timed(step, state, data, None, use_l1)
    cache = "off"
    if cache_dir:
        cache = "miss" if _cache_files(cache_dir) > before else "hit"
    stats = program_stats(compiled)

    def run_step(st):
        try:
            return compiled(st, data, use_l1)
        except TypeError:  # a jax whose Compiled wants the static arg too
            return step(st, data, None, use_l1)

    box = {"state": state, "metrics": None}

    def run(n):
        if n < 1:
            return []
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            box["state"], box["metrics"] = run_step(box["state"])
            jax.block_until_ready((box["state"], box["metrics"]))
            times.append(time.perf_counter() - t0)
        m = jax.device_get(box["metrics"])
        if int(m["nonfinite"]):
            print(f"  warning: {name} step reported non-finite loss", file=sys.stderr)
        box["loss"] = float(m["total_loss"])
        return times

    (first_step_s,) = run(1)

    def eager():
        return step_fn(box["state"], data, None, use_l1)

    dev = jax.devices()[0]
    info = {"impl": "yolox_jax", "model": name, "hw": hw, "batch": batch, "dtype": dtype,
            "init_s": init_s, "lower_s": lower_s, "compile_s": compile_s, "cache": cache,
            "first_step_s": first_step_s, "share_s": share_s, **stats,
            "peak": peak_flops(getattr(dev, "device_kind", ""), dev.platform, dtype)}
    return run, lambda: box["loss"], info, eager


def _mfu(flops, peak, sec):
    return f"{flops / sec / peak * 100:.1f}%" if (flops and peak) else "n/a"


def bench_jax(name, hw, batch, dtype, warmup, steps, cache_dir, conv="xla"):
    run, loss, info, _ = setup_jax(name, hw, batch, dtype, cache_dir, conv)
    run(warmup - 1)  # the first step was taken in setup_jax
    r = {**info, **_timing(run(steps), batch), "load": _load1(), "loss": loss()}
    r.pop("program_mib", None)
    r["mfu"] = _mfu(r["flops"], r.pop("peak"), r["step_s"])
    return r


# --------------------------------------------------------------------------------------- torch


def bench_torch(python, src, name, hw, batch, warmup, steps, ema, threads, device="auto",
                amp=False):
    if not python or not Path(python).exists():
        return {"error": f"torch interpreter not available ({python or 'no --torch-python'})"}
    if not has_official_source(src):
        return {"error": f"official YOLOX source not available at {src}"}
    cfg = {"yolox_src": src, "model": name, "hw": list(hw), "batch": batch, "warmup": warmup,
           "steps": steps, "ema": ema, "threads": threads, "device": device, "amp": amp}
    return run_official(python, "torch-worker", cfg)


# ------------------------------------------------------------------------- yolox-jax bench


def workload(s, names=("train", "startup")) -> dict:
    """The ``train`` entry (the training step: jit, eager, official) and the ``startup`` entry
    (time to the first step: model init, trace + lower, compile, first step; eager's first step;
    the official model's build and first step) of ``yolox-jax bench``, for settings ``s``."""
    t_start = time.perf_counter()
    share = {}
    run, loss, info, eager_step = setup_jax(s.model, s.hw, s.batch, s.dtype, "", s.conv,
                                            share=share, **s.model_overrides)
    s.shared[("variables", s.model, s.width)] = share["variables"]
    to_first_step = time.perf_counter() - t_start - info["share_s"]  # not the trainer's work
    reset_peak_rss()
    run(s.warmup - 1)
    times = run(s.repeats)
    jit = {"lower_s": info["lower_s"], "compile_s": info["compile_s"],
           **summary(times, s.batch), "flops": info["flops"], "program_mib": info["program_mib"],
           **memory_figures(info["program_mib"]), "loss": loss()}
    jit["mfu"] = mfu(jit["flops"], jit["median_s"], s.dtype)

    if "train" in s.eager:
        eager = measure_eager(eager_step, batch=s.batch, repeats=s.eager_repeats)
    else:
        eager = skipped("not requested (--eager)")

    ref_cfg = {"model": s.model, "hw": list(s.hw), "batch": s.batch, "warmup": s.warmup,
               "steps": s.repeats, "ema": True, "threads": 0, "device": "auto",
               # bfloat16 here is mixed precision; the official counterpart is --fp16 (CUDA only).
               "amp": s.dtype == "bfloat16"}
    why = s.reference.need_model(s.model, s.model_overrides)
    if why is None:
        r = s.reference.official("torch-worker", ref_cfg)
        torch = skipped(r["error"]) if "error" in r else {
            "impl": r["impl"], "threads": r["threads"], "dtype": r.get("dtype"),
            **summary(r["times"], s.batch),
            "build_s": r["build_s"], "first_step_s": r["first_step_s"],
            "peak_rss_mib": r["peak_rss_mib"], "loss": r["loss"]}
    else:
        torch = skipped(why)

    common = {"model": s.model, "size": list(s.hw), "batch": s.batch, "dtype": s.dtype}
    out = {}
    if "train" in names:
        out["train"] = {"label": "train step", "unit": "step", **common, "jit": jit,
                        "eager": eager, "torch": torch}
        out["train"]["speedup"] = speedups(out["train"])
    if "startup" in names:
        first = {"jit": {"median_s": to_first_step, "init_s": info["init_s"],
                         "lower_s": info["lower_s"], "compile_s": info["compile_s"],
                         "first_step_s": info["first_step_s"], "repeats": 1}}
        first["eager"] = ({"median_s": eager["first_call_s"], "repeats": 1}
                          if "first_call_s" in eager else eager)
        first["torch"] = ({"median_s": torch["build_s"] + torch["first_step_s"],
                           "build_s": torch["build_s"], "first_step_s": torch["first_step_s"],
                           "repeats": 1} if "build_s" in torch else torch)
        out["startup"] = {"label": "time to first train step", "unit": "run", **common, **first}
        out["startup"]["speedup"] = speedups(out["startup"])
    return out


# -------------------------------------------------------------------------------------- paired


def paired_summary(ours, official, batch):
    """Compare two implementations timed in alternating rounds on one machine.

    ``ours``, ``official``: one list of step seconds per round (same number of rounds). A round's
    ratio is official median / ours median (> 1: ours faster), so slow drift of the machine
    between rounds cancels out of each ratio. Returns the per-round ratios, their median, the
    rounds ours won, and the pooled timing of each side."""
    import statistics

    if len(ours) != len(official) or not ours:
        raise ValueError(f"need the same non-zero number of rounds, got {len(ours)} and "
                         f"{len(official)}")
    ratios = [statistics.median(o) / statistics.median(u) for u, o in zip(ours, official)]
    return {"ratios": ratios, "ratio_median": statistics.median(ratios),
            "wins": sum(r > 1.0 for r in ratios), "rounds": len(ratios),
            "ours": _timing([t for r in ours for t in r], batch),
            "official": _timing([t for r in official for t in r], batch)}


def _tagged(proc, tag):
    """The JSON after the next stdout line of ``proc`` that starts with ``tag``."""
    for line in proc.stdout:
        if line.startswith(tag):
            return json.loads(line[len(tag):])
    raise RuntimeError(f"official worker exited before {tag.strip()} (its stderr is above)")


def bench_paired(args, name, hw, cache_dir, conv="xla"):
    """``--paired R``: ours and the official step in one process each, both compiled / warmed
    up once, then R rounds of ``--steps`` steps each, alternating which side goes first (ABBA)."""
    if not args.torch_python or not Path(args.torch_python).exists():
        raise SystemExit("--paired needs --torch-python with torch installed")
    cfg = {"yolox_src": args.yolox_src, "model": name, "hw": list(hw), "batch": args.batch,
           "warmup": args.warmup, "steps": args.steps, "ema": not args.torch_no_ema,
           "threads": args.torch_threads, "device": args.torch_device, "amp": args.torch_fp16}
    proc = subprocess.Popen([args.torch_python, str(OFFICIAL_SCRIPT), "--torch-serve",
                             json.dumps(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # its stderr goes to ours
    try:
        run, loss, info, _ = setup_jax(name, hw, args.batch, args.dtype, cache_dir, conv)
        run(args.warmup - 1)  # the first step was taken in setup_jax
        official_info = _tagged(proc, "READY ")
        ours, official = [], []
        for k in range(args.paired):
            for side in ("ours", "official") if k % 2 == 0 else ("official", "ours"):
                if side == "ours":
                    ours.append(run(args.steps))
                else:
                    proc.stdin.write(f"{args.steps}\n")
                    proc.stdin.flush()
                    official.append(_tagged(proc, "TIMES ")["times"])
        proc.stdin.write("\n")
        proc.stdin.flush()
    finally:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    out = paired_summary(ours, official, args.batch)
    out.update(model=name, hw=list(hw), batch=args.batch, dtype=args.dtype, load=_load1(),
               loss=loss(), compile_s=info["compile_s"], cache=info["cache"],
               ours_rounds=ours, official_rounds=official, official_impl=official_info["impl"],
               official_threads=official_info["threads"])
    return out


def _paired_row(r):
    hw = f"{r['hw'][0]}x{r['hw'][1]}"
    u, o = r["ours"], r["official"]
    ratios = " ".join(f"{x:.2f}" for x in r["ratios"])
    return (f"| {r['impl']} vs {r['official_impl']} ({r['official_threads']} threads) | "
            f"{r['model']} | {hw} | {r['batch']} | {r['rounds']} x {len(r['ours_rounds'][0])} | "
            f"{u['step_s'] * 1e3:.0f} [{u['min_s'] * 1e3:.0f}-{u['max_s'] * 1e3:.0f}] | "
            f"{o['step_s'] * 1e3:.0f} [{o['min_s'] * 1e3:.0f}-{o['max_s'] * 1e3:.0f}] | "
            f"{ratios} | **{r['ratio_median']:.2f}x** | {r['wins']}/{r['rounds']} | "
            f"{r['load']:.2f} |")


# ---------------------------------------------------------------------------------------- main


def _fmt_flops(f):
    return f"{f / 1e9:.0f} G" if f else "n/a"


def _row(r):
    hw = f"{r['hw'][0]}x{r['hw'][1]}"
    if str(r.get("impl", "")).startswith("yolox_jax"):
        return (f"| {r['impl']} | {r['model']} | {hw} | {r['batch']} | {r['dtype']} | "
                f"{r['compile_s']:.1f} ({r['cache']}) | {r['step_s'] * 1e3:.0f} "
                f"[{r['min_s'] * 1e3:.0f}-{r['max_s'] * 1e3:.0f}] | **{r['img_s']:.2f}** | "
                f"{_fmt_flops(r['flops'])} | {r['mfu']} | {r['load']:.2f} |")
    extra = "" if r.get("ema", True) else ", no EMA"
    return (f"| {r['impl']} ({r['threads']} threads{extra}) | {r['model']} | {hw} | {r['batch']} | "
            f"{r['dtype']} | eager | {r['step_s'] * 1e3:.0f} "
            f"[{r['min_s'] * 1e3:.0f}-{r['max_s'] * 1e3:.0f}] | **{r['img_s']:.2f}** | "
            f"n/a | n/a | {r['load']:.2f} |")


def main(argv=None):
    p = argparse.ArgumentParser(prog="benchmark.py train")
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help="comma-separated name:size (size H or HxW), e.g. yolox-tiny:416")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--conv", choices=["auto", "xla", "cpu", "both"], default="auto",
                   help="how model layers convolve (build_model's conv): auto = cpu on a CPU "
                        "backend (what yolox-jax train uses there), xla elsewhere; both = time "
                        "xla and cpu")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--torch-python", default="",
                   help="interpreter with torch for the official YOLOX (e.g. /tmp/tvenv/bin/python)")
    p.add_argument("--yolox-src", default="/tmp/yolox_src/yolox-0.3.0",
                   help="unpacked official YOLOX 0.3.0 source (the dir holding yolox/)")
    p.add_argument("--torch-no-ema", action="store_true", help="official step without ModelEMA")
    p.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    p.add_argument("--torch-device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the official step runs (auto: CUDA when torch sees a GPU)")
    p.add_argument("--torch-fp16", action="store_true",
                   help="official step with fp16 autocast + GradScaler on CUDA (its --fp16)")
    p.add_argument("--no-cache", action="store_true", help="no persistent XLA compilation cache")
    p.add_argument("--skip-jax", action="store_true", help="only the official PyTorch rows")
    p.add_argument("--paired", type=int, default=0, metavar="R",
                   help="paired comparison with the official step (needs --torch-python): both "
                        "kept warm, R alternating rounds of --steps steps each; reports the "
                        "per-round ratios (robust to a machine whose speed drifts)")
    p.add_argument("--json", default="", help="also write all results to this JSON file")
    args = p.parse_args(argv)

    cache_dir = ""
    if args.torch_python and not any(k in os.environ for k in (
            "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE",
            "XLA_PYTHON_CLIENT_ALLOCATOR")):
        # On a GPU the official step shares the device with this process, which would otherwise
        # reserve 75 % of its memory up front; no effect on CPU.
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = "0.45"
    if not args.skip_jax:
        import jax

        if not args.no_cache:
            cache_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
                os.path.expanduser("~"), ".cache", "yolox_jax", "xla")
            jax.config.update("jax_compilation_cache_dir", cache_dir)
    print(f"machine: {machine()} | load avg at start {os.getloadavg()[0]:.2f}")
    if args.paired:
        return _main_paired(args, cache_dir)
    print("| implementation | model | input | batch | dtype | compile s (cache) | "
          "ms / step median [min-max] | img / s | FLOPs / step | MFU | load 1-min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for name, hw in _parse_models(args.models):
        if not args.skip_jax:
            for conv in _convs(args, jax.default_backend() == "cpu"):
                r = bench_jax(name, hw, args.batch, args.dtype, args.warmup, args.steps,
                              cache_dir, conv)
                r["conv"] = conv
                r["impl"] = _impl_label(conv)
                results.append(r)
                print(_row(r), flush=True)
                print(f"  (init {r['init_s']:.1f} s, trace+lower {r['lower_s']:.1f} s, "
                      f"loss {r['loss']:.3f})", flush=True)
        if args.torch_python:
            r = bench_torch(args.torch_python, args.yolox_src, name, hw, args.batch, args.warmup,
                            args.steps, not args.torch_no_ema, args.torch_threads,
                            args.torch_device, args.torch_fp16)
            results.append(r)
            if "error" in r:
                print(f"| official PyTorch YOLOX | {name} | {hw[0]}x{hw[1]} | not available: "
                      f"{r['error']} |||||||", flush=True)
            else:
                print(_row(r), flush=True)
                print(f"  (loss {r['loss']:.3f})", flush=True)
    _write_json(args.json, machine(), results)
    return 0


def _impl_label(conv):
    return f"yolox_jax conv={conv}"


def _write_json(path, machine_line, results):
    if path:
        Path(path).write_text(json.dumps({"machine": machine_line, "results": results},
                                         indent=1, default=str))


def _convs(args, on_cpu):
    """The ``conv`` choices ``--conv`` asks for."""
    if args.conv == "auto":
        return ["cpu" if on_cpu else "xla"]
    return ["xla", "cpu"] if args.conv == "both" else [args.conv]


def _main_paired(args, cache_dir):
    import jax

    if args.skip_jax:
        raise SystemExit("--paired compares both sides; drop --skip-jax")
    print("| implementation | model | input | batch | rounds x steps | ours ms / step median "
          "[min-max] | official ms / step median [min-max] | per-round ratio (official / ours) | "
          "median ratio | rounds ours faster | load 1-min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for name, hw in _parse_models(args.models):
        for conv in _convs(args, jax.default_backend() == "cpu"):
            r = bench_paired(args, name, hw, cache_dir, conv)
            r["impl"] = _impl_label(conv)
            r["conv"] = conv
            results.append(r)
            print(_paired_row(r), flush=True)
            print(f"  (compile {r['compile_s']:.1f} s ({r['cache']}), loss {r['loss']:.3f})",
                  flush=True)
    _write_json(args.json, machine(), results)
    return 0

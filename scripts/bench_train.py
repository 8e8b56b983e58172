"""Training-throughput benchmark: ``python scripts/benchmark.py train [--models yolox-tiny:416,yolox-s:640]
[--batch 8] [--dtype float32|bfloat16] [--warmup 2] [--steps 5] [--torch-python PATH]
[--yolox-src DIR] [--conv auto|xla|cpu|both] [--no-cache] [--skip-jax] [--paired R]``.

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
unpacked at ``--yolox-src``. Nothing is fetched at run time; set up once with::

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch numpy
    /tmp/tvenv/bin/pip download yolox==0.3.0 --no-deps --no-binary :all: --no-build-isolation \
        -d /tmp/yolox_src && tar xzf /tmp/yolox_src/yolox-0.3.0.tar.gz -C /tmp/yolox_src

Its step is the official ``Trainer.train_one_iter``: ``model.train()``; ``model(images, targets)``
-> loss dict; ``zero_grad``; ``total_loss.backward()``; ``SGD(momentum 0.9, nesterov, wd 5e-4 on
conv weights only)``.step(); ModelEMA update (disable with ``--torch-no-ema``). It runs on CUDA
when torch sees a GPU (``--torch-device``), then synchronising before each step's clock stops;
``--torch-fp16`` is the official ``--fp16`` (autocast + GradScaler). Only
``yolox.models`` is imported; the few helpers it pulls from ``yolox.utils`` (``bboxes_iou``,
``meshgrid``) are loaded from their files, and loguru/torchvision are stubbed when missing.

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

# Peak dense FLOP/s per device (bf16, fp32) by a lower-case substring of ``device_kind``.
# fp32 on NVIDIA is the non-tensor-core figure; XLA may run fp32 convs/matmuls as TF32 on
# Ampere+ (then the fp32 MFU reads high). TPUs have no separate fp32 peak: bf16 is used.
PEAK_FLOPS = (
    ("h200", 989e12, 67e12),
    ("h100", 989e12, 67e12),
    ("a100", 312e12, 19.5e12),
    ("v5p", 459e12, 459e12),
    ("v5 lite", 197e12, 197e12),
    ("v5e", 197e12, 197e12),
    ("v4", 275e12, 275e12),
)

MAX_LABELS = 120
DEFAULT_MODELS = "yolox-tiny:416,yolox-s:640"
OFFICIAL_DEPTH_WIDTH = {  # official exps/default/*.py
    "yolox-nano": (0.33, 0.25, True), "yolox-tiny": (0.33, 0.375, False),
    "yolox-s": (0.33, 0.50, False), "yolox-m": (0.67, 0.75, False),
    "yolox-l": (1.0, 1.0, False), "yolox-x": (1.33, 1.25, False),
}


def peak_flops(device_kind: str, platform: str, dtype: str):
    if platform == "cpu":
        return None
    kind = (device_kind or "").lower()
    for key, bf16, fp32 in PEAK_FLOPS:
        if key in kind:
            return bf16 if dtype == "bfloat16" else fp32
    return None


def synthetic_batch(batch: int, hw: tuple[int, int], seed: int = 0, boxes: int = 10):
    """uint8 images and ~``boxes`` random boxes per image (cls, cx, cy, w, h in pixels)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = hw
    images = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    labels = np.zeros((batch, MAX_LABELS, 5), np.float32)
    mask = np.zeros((batch, MAX_LABELS), bool)
    for b in range(batch):
        n = int(rng.integers(boxes - 2, boxes + 3))
        bw = rng.uniform(0.05, 0.4, n) * w
        bh = rng.uniform(0.05, 0.4, n) * h
        cx = rng.uniform(bw / 2, w - bw / 2)
        cy = rng.uniform(bh / 2, h - bh / 2)
        labels[b, :n] = np.stack([rng.integers(0, 80, n).astype(np.float32), cx, cy, bw, bh], 1)
        mask[b, :n] = True
    return {"images": images, "labels": labels, "label_mask": mask}


def _parse_models(spec: str):
    out = []
    for item in spec.split(","):
        name, _, size = item.strip().partition(":")
        h, _, w = (size or "640").partition("x")
        out.append((name, (int(h), int(w or h))))
    return out


def _load1() -> float:
    return os.getloadavg()[0]


# ----------------------------------------------------------------------------------------- JAX


def _cache_files(path):
    try:
        return sum(len(f) for _, _, f in os.walk(path))
    except OSError:
        return 0


def setup_jax(name, hw, batch, dtype, cache_dir, conv="xla"):
    """Compile the trainer's step for ``name`` at ``hw``. Returns ``(run, loss, info)``:
    ``run(n)`` takes n steps from the kept state and returns their seconds, ``loss()`` the last
    step's total loss, ``info`` the compile figures."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from yolox_jax import build_model
    from yolox_jax.train.schedule import yolox_warm_cos_lr
    from yolox_jax.train.sharding import jit_train_step, make_mesh, replicated, shard_batch
    from yolox_jax.train.state import create_train_state, make_optimizer
    from yolox_jax.train.step import bind_train_step

    mesh = make_mesh()
    model = build_model(name, num_classes=80, conv=conv,
                        **({"dtype": jnp.bfloat16} if dtype == "bfloat16" else {}))
    lr_fn = yolox_warm_cos_lr(0.01 / 64 * batch, 1000, 300, warmup_epochs=5, no_aug_epochs=15,
                              min_lr_ratio=0.05)
    tx = make_optimizer(lr_fn, momentum=0.9, weight_decay=5e-4)

    t0 = time.perf_counter()
    rng = jax.random.key(0, impl="rbg")
    init = jax.jit(lambda r: model.init(r, jnp.zeros((1, *hw, 3), jnp.float32), train=False),
                   out_shardings=replicated(mesh))
    state = jax.jit(lambda v: create_train_state(v, tx), out_shardings=replicated(mesh))(init(rng))
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0

    step = jit_train_step(
        bind_train_step(model=model, tx=tx, lr_fn=lr_fn, ema=True,
                        loss_kwargs=dict(iou_loss_type="iou", obj_target="binary",
                                         assign_kwargs=dict(center_radius=1.5))), mesh)
    data = shard_batch(synthetic_batch(batch, hw), mesh)
    use_l1 = np.bool_(False)

    before = _cache_files(cache_dir) if cache_dir else 0
    t0 = time.perf_counter()
    lowered = step.lower(state, data, None, use_l1)
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    cache = "off"
    if cache_dir:
        cache = "miss" if _cache_files(cache_dir) > before else "hit"

    flops = None
    try:
        ca = compiled.cost_analysis()
        if isinstance(ca, (list, tuple)):  # older jax: one dict per computation
            ca = ca[0] if ca else None
        if ca:
            flops = float(ca.get("flops", 0.0)) or None
    except Exception as err:  # noqa: BLE001 - optional figure
        print(f"  (cost_analysis unavailable: {err})", file=sys.stderr)

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

    dev = jax.devices()[0]
    info = {"impl": "yolox_jax", "model": name, "hw": hw, "batch": batch, "dtype": dtype,
            "init_s": init_s, "lower_s": lower_s, "compile_s": compile_s, "cache": cache,
            "flops": flops, "peak": peak_flops(getattr(dev, "device_kind", ""), dev.platform,
                                               dtype)}
    return run, lambda: box["loss"], info


def _timing(times, batch):
    """Median / min / max of step seconds and images per second at the median."""
    times = sorted(times)
    sec = times[len(times) // 2]
    return {"step_s": sec, "min_s": times[0], "max_s": times[-1], "img_s": batch / sec}


def _mfu(flops, peak, sec):
    return f"{flops / sec / peak * 100:.1f}%" if (flops and peak) else "n/a"


def bench_jax(name, hw, batch, dtype, warmup, steps, cache_dir, conv="xla"):
    run, loss, info = setup_jax(name, hw, batch, dtype, cache_dir, conv)
    run(warmup)
    r = {**info, **_timing(run(steps), batch), "load": _load1(), "loss": loss()}
    r["mfu"] = _mfu(r["flops"], r.pop("peak"), r["step_s"])
    return r


# --------------------------------------------------------------------------------------- torch


def _import_official(src: str):
    """``yolox.models`` from an unpacked official source tree, without its heavy utils package."""
    import importlib.util
    import types

    root = Path(src)
    if not (root / "yolox" / "models" / "yolox.py").exists():
        raise FileNotFoundError(f"no official YOLOX source at {root} (yolox/models/yolox.py)")
    sys.path.insert(0, str(root))
    try:
        import loguru  # noqa: F401
    except ImportError:
        import logging

        stub = types.ModuleType("loguru")
        stub.logger = logging.getLogger("yolox")
        sys.modules["loguru"] = stub
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or built for another torch
        for k in [k for k in sys.modules if k.startswith("torchvision")]:
            del sys.modules[k]
        sys.modules["torchvision"] = types.ModuleType("torchvision")
    import yolox  # the package __init__ only sets __version__

    utils = types.ModuleType("yolox.utils")
    utils.__path__ = [str(root / "yolox" / "utils")]
    sys.modules["yolox.utils"] = utils
    yolox.utils = utils
    for sub in ("boxes", "compat"):
        spec = importlib.util.spec_from_file_location(f"yolox.utils.{sub}",
                                                      root / "yolox" / "utils" / f"{sub}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    utils.bboxes_iou = sys.modules["yolox.utils.boxes"].bboxes_iou
    utils.meshgrid = sys.modules["yolox.utils.compat"].meshgrid
    import yolox.models as models

    return models


def official_step(cfg: dict):
    """Runs inside the torch interpreter: build the official model, optimizer and EMA for
    ``cfg``; returns ``(step, info)`` where ``step()`` runs one train step and returns its loss."""
    import math
    from copy import deepcopy

    import numpy as np
    import torch
    import torch.nn as nn

    models = _import_official(cfg["yolox_src"])
    name, hw, batch = cfg["model"], tuple(cfg["hw"]), cfg["batch"]
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    depth, width, depthwise = OFFICIAL_DEPTH_WIDTH[name]
    torch.manual_seed(0)
    in_channels = [256, 512, 1024]
    backbone = models.YOLOPAFPN(depth, width, in_channels=in_channels, act="silu",
                                depthwise=depthwise)
    head = models.YOLOXHead(80, width, in_channels=in_channels, act="silu", depthwise=depthwise)
    model = models.YOLOX(backbone, head)
    for m in model.modules():  # official Exp.get_model
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    model.head.initialize_biases(1e-2)
    want = cfg.get("device") or "auto"
    device = torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available())
                          else "cpu")
    amp = bool(cfg.get("amp")) and device.type == "cuda"  # official Trainer's --fp16
    model.to(device).train()

    pg0, pg1, pg2 = [], [], []  # official Exp.get_optimizer
    for _, v in model.named_modules():
        if hasattr(v, "bias") and isinstance(v.bias, nn.Parameter):
            pg2.append(v.bias)
        if isinstance(v, nn.BatchNorm2d) or "bn" in _:
            pg0.append(v.weight)
        elif hasattr(v, "weight") and isinstance(v.weight, nn.Parameter):
            pg1.append(v.weight)
    lr = 0.01 / 64 * batch
    opt = torch.optim.SGD(pg0, lr=lr, momentum=0.9, nesterov=True)
    opt.add_param_group({"params": pg1, "weight_decay": 5e-4})
    opt.add_param_group({"params": pg2})

    ema_model = deepcopy(model).eval() if cfg.get("ema", True) else None
    for p in (ema_model.parameters() if ema_model is not None else []):
        p.requires_grad_(False)
    updates = [0]

    def ema_update():  # official ModelEMA.update
        updates[0] += 1
        d = 0.9998 * (1 - math.exp(-updates[0] / 2000))
        with torch.no_grad():
            msd = model.state_dict()
            for k, v in ema_model.state_dict().items():
                if v.dtype.is_floating_point:
                    v *= d
                    v += (1.0 - d) * msd[k].detach()

    data = synthetic_batch(batch, hw)
    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float().contiguous()
    targets = torch.from_numpy(data["labels"])  # padded rows are all-zero, as the official loader
    images, targets = images.to(device), targets.to(device)
    scaler = torch.cuda.amp.GradScaler(enabled=amp) if amp else None

    def step():  # official Trainer.train_one_iter (the batch already on the device)
        if amp:
            with torch.autocast("cuda", dtype=torch.float16):
                outputs = model(images, targets)
            opt.zero_grad()
            scaler.scale(outputs["total_loss"]).backward()
            scaler.step(opt)
            scaler.update()
        else:
            outputs = model(images, targets)
            opt.zero_grad()
            outputs["total_loss"].backward()
            opt.step()
        if ema_model is not None:
            ema_update()
        loss = float(outputs["total_loss"].detach())
        if device.type == "cuda":
            torch.cuda.synchronize()
        return loss

    info = {"impl": f"official torch {torch.__version__}"
                    + (f" on {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
            "model": name, "hw": list(hw), "batch": batch,
            "dtype": "float16 autocast" if amp else "float32", "threads": torch.get_num_threads(),
            "ema": ema_model is not None, "device": device.type}
    return step, info


def _timed(step, n):
    """Seconds of each of ``n`` calls of ``step`` and the last call's value."""
    times, value = [], float("nan")
    for _ in range(n):
        t0 = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - t0)
    return times, value


def torch_worker(cfg: dict) -> dict:
    """Runs inside the torch interpreter: time the official train step, return a dict."""
    step, info = official_step(cfg)
    _timed(step, cfg["warmup"])
    times, loss = _timed(step, cfg["steps"])
    return {**info, **_timing(times, cfg["batch"]), "load": _load1(), "loss": loss}


def torch_serve(cfg: dict) -> None:
    """Runs inside the torch interpreter for ``--paired``: build and warm up the official step,
    print ``READY``, then for each line ``n`` on stdin run n steps and print their seconds."""
    step, info = official_step(cfg)
    _timed(step, cfg["warmup"])
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        times, loss = _timed(step, int(line))
        print("TIMES " + json.dumps({"times": times, "loss": loss}), flush=True)


def bench_torch(python, src, name, hw, batch, warmup, steps, ema, threads, device="auto",
                amp=False):
    if not python or not Path(python).exists():
        return {"error": f"torch interpreter not available ({python or 'no --torch-python'})"}
    if not Path(src, "yolox", "models", "yolox.py").exists():
        return {"error": f"official YOLOX source not available at {src}"}
    cfg = {"yolox_src": src, "model": name, "hw": list(hw), "batch": batch, "warmup": warmup,
           "steps": steps, "ema": ema, "threads": threads, "device": device, "amp": amp}
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--torch-worker", json.dumps(cfg)],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": "torch run failed: " + " | ".join(tail)}
    return json.loads(lines[-1][len("RESULT "):])


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
    proc = subprocess.Popen([args.torch_python, str(Path(__file__).resolve()), "--torch-serve",
                             json.dumps(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # its stderr goes to ours
    try:
        run, loss, info = setup_jax(name, hw, args.batch, args.dtype, cache_dir, conv)
        run(args.warmup)
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

    from bench_common import machine

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

    from bench_common import machine

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


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--torch-worker":
        print("RESULT " + json.dumps(torch_worker(json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    if len(sys.argv) == 3 and sys.argv[1] == "--torch-serve":
        torch_serve(json.loads(sys.argv[2]))
        sys.exit(0)
    sys.path.insert(0, str(Path(__file__).parent))
    from yolox_jax.cpu import tune_process

    tune_process()          # as benchmark.py and the command line do (a no-op off CPU)
    sys.exit(main())

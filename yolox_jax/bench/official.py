"""The official PyTorch YOLOX side of the benchmarks.

This file runs as a script in an interpreter that has torch (``--torch-python``; yolox_jax
itself never needs torch, and that interpreter need not have JAX or yolox_jax), so it imports
nothing but the standard library and NumPy at module level::

    python official.py --torch-worker '{"yolox_src": ..., "model": "yolox-s", ...}'
    python official.py --torch-serve '{...}'       # --paired: steps on demand over stdin
    python official.py --torch-forward '{...}'     # the eval-mode forward pass

The official code is the YOLOX source tree (the folder holding ``yolox/``: an unpacked release,
or the site-packages folder of an installed ``yolox``). Only ``yolox.models`` is imported; the
few helpers it pulls from ``yolox.utils`` (``bboxes_iou``, ``meshgrid``) are loaded from their
files (``cxcywh2xyxy`` and ``visualize_assign`` too, for sources after the 0.3.0 release), and
loguru/torchvision are stubbed when missing.

The training step is the official ``Trainer.train_one_iter``: ``model.train()``;
``model(images, targets)`` -> loss dict; ``zero_grad``; ``total_loss.backward()``;
``SGD(momentum 0.9, nesterov, wd 5e-4 on conv weights only)``.step(); ModelEMA update. It runs on
CUDA when torch sees a GPU (``device``), then synchronising before each step's clock stops;
``amp`` is the official ``--fp16`` (autocast + GradScaler). The forward pass's ``fp16`` is the
official evaluation's ``--fp16`` (the model and the images in float16), also on CUDA only.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

MAX_LABELS = 120
OFFICIAL_DEPTH_WIDTH = {  # official exps/default/*.py
    "yolox-nano": (0.33, 0.25, True), "yolox-tiny": (0.33, 0.375, False),
    "yolox-s": (0.33, 0.50, False), "yolox-m": (0.67, 0.75, False),
    "yolox-l": (1.0, 1.0, False), "yolox-x": (1.33, 1.25, False),
}

# Run in the torch interpreter by ``probe``: is torch there, and where is an installed yolox?
PROBE = r"""
import importlib.util as u, json, os
t = u.find_spec("torch")
y = u.find_spec("yolox")
root = None
if y is not None and y.submodule_search_locations:
    root = os.path.dirname(list(y.submodule_search_locations)[0])
print(json.dumps({"torch": t is not None, "yolox_root": root}))
"""


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


def timing(times, batch):
    """Median / min / max of step seconds and images per second at the median."""
    times = sorted(times)
    sec = times[len(times) // 2]
    return {"step_s": sec, "min_s": times[0], "max_s": times[-1], "img_s": batch / sec}


def load1() -> float:
    return os.getloadavg()[0]


def has_official_source(root) -> bool:
    return bool(root) and Path(root, "yolox", "models", "yolox.py").exists()


def import_official(src: str):
    """``yolox.models`` from an official source tree, without its heavy utils package."""
    import importlib.util
    import types

    root = Path(src)
    if not has_official_source(root):
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

    def load(sub):
        spec = importlib.util.spec_from_file_location(f"yolox.utils.{sub}",
                                                      root / "yolox" / "utils" / f"{sub}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        for name, value in vars(mod).items():  # what the file defines, as yolox.utils has it
            if not name.startswith("_") and getattr(value, "__module__", None) == spec.name:
                setattr(utils, name, value)

    load("boxes")
    load("compat")
    # The head of releases after 0.3.0 also imports a debugging plot (only called by its
    # visualize_assign_result method): from its file (demo_utils) when OpenCV is there, else a
    # stub.
    if (root / "yolox" / "utils" / "demo_utils.py").is_file():
        try:
            load("demo_utils")
        except ImportError:
            def visualize_assign(*args, **kwargs):
                raise NotImplementedError("yolox.utils.demo_utils needs OpenCV")

            utils.visualize_assign = visualize_assign
    import yolox.models as models

    return models


def official_model(cfg: dict):
    """The official model of ``cfg["model"]`` as ``Exp.get_model`` builds it, on its device.
    Returns ``(model, device)``."""
    import torch
    import torch.nn as nn

    models = import_official(cfg["yolox_src"])
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    depth, width, depthwise = OFFICIAL_DEPTH_WIDTH[cfg["model"]]
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
    return model.to(device), device


def _impl(torch, device) -> str:
    return (f"official torch {torch.__version__}"
            + (f" on {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))


def official_step(cfg: dict):
    """Build the official model, optimizer and EMA for ``cfg``; returns ``(step, info)`` where
    ``step()`` runs one train step and returns its loss."""
    import math
    from copy import deepcopy

    import torch
    import torch.nn as nn

    name, hw, batch = cfg["model"], tuple(cfg["hw"]), cfg["batch"]
    model, device = official_model(cfg)
    amp = bool(cfg.get("amp")) and device.type == "cuda"  # official Trainer's --fp16
    model.train()

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

    info = {"impl": _impl(torch, device), "model": name, "hw": list(hw), "batch": batch,
            "dtype": "float16 autocast" if amp else "float32", "threads": torch.get_num_threads(),
            "ema": ema_model is not None, "device": device.type}
    return step, info


def timed(step, n):
    """Seconds of each of ``n`` calls of ``step`` and the last call's value."""
    times, value = [], float("nan")
    for _ in range(n):
        t0 = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - t0)
    return times, value


def peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM: ru_maxrss would include the parent's, as
    it survives exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def torch_worker(cfg: dict) -> dict:
    """Time the official train step: build time, the first step, then ``warmup`` - 1 more
    untimed steps and ``steps`` timed ones."""
    t0 = time.perf_counter()
    step, info = official_step(cfg)
    build_s = time.perf_counter() - t0
    first, _ = timed(step, 1)
    timed(step, max(cfg["warmup"] - 1, 0))
    times, loss = timed(step, cfg["steps"])
    return {**info, **timing(times, cfg["batch"]), "load": load1(), "loss": loss,
            "build_s": build_s, "first_step_s": first[0], "times": times,
            "peak_rss_mib": peak_rss_mib()}


def torch_serve(cfg: dict) -> None:
    """For ``--paired``: build and warm up the official step, print ``READY``, then for each
    line ``n`` on stdin run n steps and print their seconds."""
    step, info = official_step(cfg)
    timed(step, cfg["warmup"])
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        times, loss = timed(step, int(line))
        print("TIMES " + json.dumps({"times": times, "loss": loss}), flush=True)


def forward_worker(cfg: dict) -> dict:
    """Time the official model's eval-mode forward (raw outputs, ``decode_in_inference`` off)
    for each batch of ``cfg["batches"]``."""
    import numpy as np
    import torch

    model, device = official_model(cfg)
    model.eval()
    model.head.decode_in_inference = False
    half = bool(cfg.get("fp16")) and device.type == "cuda"  # official eval's --fp16
    if half:
        model.half()
    h, w = cfg["hw"]
    out = {"impl": _impl(torch, device), "threads": torch.get_num_threads(), "batches": {},
           "dtype": "float16" if half else "float32"}
    for batch in cfg["batches"]:
        x = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (batch, 3, h, w))
                             .astype(np.float32)).to(device)
        if half:
            x = x.half()

        def fwd():
            with torch.no_grad():
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()

        timed(fwd, cfg["warmup"])
        times, _ = timed(fwd, cfg["steps"])
        out["batches"][str(batch)] = {**timing(times, batch), "times": times}
    out["peak_rss_mib"] = peak_rss_mib()
    return out


if __name__ == "__main__":
    # The folder of this file comes first on sys.path when it runs as a script; its siblings
    # (train.py, data.py, ...) must not shadow anything torch or yolox imports.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    modes = {"--torch-worker": torch_worker, "--torch-forward": forward_worker}
    if len(sys.argv) == 3 and sys.argv[1] in modes:
        print("RESULT " + json.dumps(modes[sys.argv[1]](json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    if len(sys.argv) == 3 and sys.argv[1] == "--torch-serve":
        torch_serve(json.loads(sys.argv[2]))
        sys.exit(0)
    print(__doc__, file=sys.stderr)
    sys.exit(2)

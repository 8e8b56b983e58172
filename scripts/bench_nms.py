"""Post-processing / NMS benchmark: ``python scripts/benchmark.py nms [--batch 8] [--quick]``.

Setting of the official COCO evaluation: 8400 candidates (640x640 input), 80 classes,
confidence 0.01, class-aware NMS at IoU 0.65. Inputs are synthetic but shaped like a trained
detector's output: objectness is low almost everywhere, with clusters of overlapping,
confident boxes around a few objects per image (see ``make_decoded``).

Rows:
* ``postprocess`` jitted (hard NMS) for K = 100 (COCO's maxDets) and K = 1000 (no cap hit);
* the same eagerly under ``jax.disable_jit()`` (only with ``--eager``: it takes minutes);
* the official-style torch postprocess (per-image loop, conf filter, ``batched_nms``): with
  torchvision's C++ ``batched_nms`` when it imports, otherwise a torch-only greedy equivalent
  (class-offset trick + "take the best, drop IoU > t" loop). Torch runs in the interpreter given
  by ``--torch-python`` (default: this one, else /tmp/tvenv/bin/python) in a subprocess;
* Soft-NMS (gaussian, sigma 0.5, and the seed's sigma="mean") jitted vs a NumPy loop, K = 100.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CONF, IOU, NUM_CLASSES, HW = 0.01, 0.65, 80, (640, 640)


def make_decoded(batch, seed=0, objects=12):
    """[B, 8400, 85] decoded outputs: cx, cy, w, h, sigmoid(obj), sigmoid(cls)."""
    rng = np.random.default_rng(seed)
    grids = []
    for s in (8, 16, 32):
        h, w = HW[0] // s, HW[1] // s
        yv, xv = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        grids.append(np.stack([xv.ravel(), yv.ravel(), np.full(h * w, s)], 1))
    grid = np.concatenate(grids).astype(np.float32)  # [A, 3] gx, gy, stride
    a = len(grid)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    out = np.empty((batch, a, 5 + NUM_CLASSES), np.float32)
    for b in range(batch):
        centre = (grid[:, :2] + 0.5) * grid[:, 2:3]
        wh = grid[:, 2:3] * np.exp(rng.normal(1.0, 0.6, (a, 2)))
        obj_logit = rng.normal(-7.5, 1.6, a)
        cls_logit = rng.normal(-5.0, 1.5, (a, NUM_CLASSES))
        for _ in range(objects):
            ocx, ocy = rng.uniform(40, 600, 2)
            ow, oh = np.exp(rng.uniform(np.log(16), np.log(400), 2))
            ocls = rng.integers(NUM_CLASSES)
            near = np.hypot(centre[:, 0] - ocx, centre[:, 1] - ocy) < np.maximum(
                2.5 * grid[:, 2], 0.4 * min(ow, oh))
            m = int(near.sum())
            centre[near] = np.array([ocx, ocy]) + rng.normal(0, 0.08, (m, 2)) * [ow, oh]
            wh[near] = np.array([ow, oh]) * np.exp(rng.normal(0, 0.15, (m, 2)))
            obj_logit[near] = rng.normal(0.5, 2.0, m)
            cls_logit[near, ocls] = rng.normal(2.0, 1.5, m)
            if rng.random() < 0.3:  # a confusable second class on the same object
                cls_logit[near, rng.integers(NUM_CLASSES)] = rng.normal(0.5, 1.5, m)
        out[b, :, :2] = centre
        out[b, :, 2:4] = wh
        out[b, :, 4] = sig(obj_logit)
        out[b, :, 5:] = sig(cls_logit)
    return out


def numpy_soft_nms(decoded, k, sigma, conf=CONF, iou_thr=IOU):
    """Plain NumPy Soft-NMS (gaussian), class-aware, per image: what the JAX path replaces."""
    results = []
    for det in decoded:
        cls = det[:, 5:]
        scores = det[:, 4] * cls.max(1)
        keep_mask = scores >= conf
        s = scores[keep_mask].astype(np.float32)
        c = cls.argmax(1)[keep_mask]
        xy, wh = det[keep_mask, :2], det[keep_mask, 2:4]
        x1, y1 = xy[:, 0] - wh[:, 0] / 2, xy[:, 1] - wh[:, 1] / 2
        x2, y2 = xy[:, 0] + wh[:, 0] / 2, xy[:, 1] + wh[:, 1] / 2
        area = (x2 - x1) * (y2 - y1)
        alive = np.ones(len(s), bool)
        out = []
        while alive.any() and len(out) < k:
            i = int(np.argmax(np.where(alive, s, -np.inf)))
            out.append((i, s[i]))
            alive[i] = False
            w = np.maximum(np.minimum(x2[i], x2) - np.maximum(x1[i], x1), 0)
            h = np.maximum(np.minimum(y2[i], y2) - np.maximum(y1[i], y1), 0)
            iou = w * h / (area[i] + area - w * h)
            aff = alive & (c == c[i])
            if sigma == "mean":
                mean = s[aff].mean() if aff.any() else 1.0
                decay = np.where(iou > iou_thr, np.exp(-(iou * iou) / mean), 1.0)
            else:
                decay = np.exp(-(iou * iou) / sigma)
            s = np.where(aff, s * decay, s).astype(np.float32)
            alive &= s >= conf
        results.append(out)
    return results


TORCH_SRC = r'''
import json, sys, time
import numpy as np
import torch
decoded = torch.from_numpy(np.load(sys.argv[1]))
conf, iou_thr, repeat = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
try:
    import torchvision
    torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)  # C++ op present?
    batched_nms, impl = torchvision.ops.batched_nms, "torchvision " + torchvision.__version__
except Exception:
    def batched_nms(boxes, scores, idxs, thr):
        # Own torch-only greedy NMS: classes separated by offsetting coordinates, then
        # repeatedly keep the best remaining box and drop the rest with IoU > thr.
        off = boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]
        area = (off[:, 2] - off[:, 0]) * (off[:, 3] - off[:, 1])
        order = torch.sort(scores, descending=True, stable=True).indices
        keep = []
        while order.numel():
            i = order[0]
            keep.append(i)
            rest = order[1:]
            lt = torch.maximum(off[i, :2], off[rest, :2])
            rb = torch.minimum(off[i, 2:], off[rest, 2:])
            inter = (rb - lt).clamp(min=0).prod(1)
            iou = inter / (area[i] + area[rest] - inter)
            order = rest[iou <= thr]
        return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long)
    impl = "torch-only greedy batched_nms (torchvision not importable)"

def postprocess(pred):
    corners = torch.cat([pred[..., :2] - pred[..., 2:4] / 2, pred[..., :2] + pred[..., 2:4] / 2], -1)
    out = []
    for b in range(pred.shape[0]):
        class_conf, class_pred = pred[b, :, 5:].max(1)
        score = pred[b, :, 4] * class_conf
        m = score >= conf
        keep = batched_nms(corners[b][m], score[m], class_pred[m], iou_thr)
        out.append((torch.nonzero(m)[:, 0][keep], score[m][keep]))
    return out

with torch.inference_mode():
    res = postprocess(decoded)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); postprocess(decoded); times.append(time.perf_counter() - t0)
print(json.dumps({"impl": impl, "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "median_s": sorted(times)[len(times) // 2],
                  "kept": [r[0].tolist() for r in res]}))
'''


def torch_python(arg):
    if arg:
        return arg
    try:
        import torch  # noqa: F401
        return sys.executable
    except ImportError:
        return "/tmp/tvenv/bin/python" if os.path.exists("/tmp/tvenv/bin/python") else None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="benchmark.py nms", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--eager", action="store_true", help="also time jax.disable_jit()")
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--out", default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)

    import jax

    import yolox_jax
    from bench_common import machine, time_fn

    decoded_np = make_decoded(args.batch)
    decoded = jax.device_put(decoded_np)
    cls = decoded_np[..., 5:]
    n_cand = ((decoded_np[..., 4] * cls.max(-1)) >= CONF).sum(1)
    rows = []

    def post(k, method="hard", sigma=0.5):
        return lambda: jax.block_until_ready(yolox_jax.postprocess(
            decoded, conf_threshold=CONF, nms_threshold=IOU, max_detections=k, method=method,
            sigma=sigma))

    jax_ms = {}
    for k in (100, 1000):
        t = time_fn(post(k), warmup=2, repeat=args.repeat)
        jax_ms[k] = t * 1e3
        rows.append((f"postprocess hard, jit, K={k}", t))
    full = jax.device_get(post(1000)())
    n_kept = full.valid.sum(1)

    if args.eager:
        with jax.disable_jit():
            t = time_fn(post(100), warmup=0, repeat=1)
        rows.append(("postprocess hard, eager (jax.disable_jit), K=100", t))

    torch_note = "torch not found: no torch comparison"
    py = torch_python(args.torch_python)
    if py:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "decoded.npy")
            src = os.path.join(tmp, "torch_post.py")
            np.save(path, decoded_np)
            with open(src, "w") as f:
                f.write(TORCH_SRC)
            proc = subprocess.run([py, src, path, str(CONF), str(IOU), str(args.repeat)],
                                  capture_output=True, text=True)
        if proc.returncode == 0:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append((f"official-style torch postprocess: {res['impl']}, all kept",
                         res["median_s"]))
            torch_note = (f"torch {res['torch']} ({res['threads']} threads) via {py}; "
                          f"{res['impl']}")
            same = all(
                np.array_equal(np.asarray(full.scores[b][full.valid[b]]),
                               decoded_np[b, res["kept"][b], 4]
                               * decoded_np[b, res["kept"][b], 5:].max(-1))
                for b in range(args.batch))
            torch_note += f"; identical kept sets/order to K=1000 JAX: {same}"
        else:
            torch_note = f"torch run failed: {proc.stderr.strip().splitlines()[-1:]}"

    for sigma in (0.5, "mean"):
        t = time_fn(post(100, "gaussian", sigma), warmup=2, repeat=args.repeat)
        t_np = time_fn(lambda: numpy_soft_nms(decoded_np, 100, sigma), warmup=0,
                       repeat=max(1, args.repeat // 2))
        rows.append((f"Soft-NMS gaussian sigma={sigma}, jit, K=100", t))
        rows.append((f"Soft-NMS gaussian sigma={sigma}, NumPy loop, K=100", t_np))

    lines = [
        "## NMS / postprocess",
        "",
        f"Machine: {machine()}",
        "",
        f"Batch {args.batch} x 8400 candidates, 80 classes, conf {CONF}, IoU {IOU}, class-aware. "
        f"Candidates over conf per image: {n_cand.tolist()}; kept by hard NMS: "
        f"{n_kept.tolist()}.",
        f"Torch: {torch_note}.",
        "",
        "| what | median ms / batch |",
        "|---|---|",
    ]
    lines += [f"| {name} | {t * 1e3:.2f} |" for name, t in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

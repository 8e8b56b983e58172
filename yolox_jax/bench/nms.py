"""Post-processing / NMS benchmark: the ``nms`` workload of ``yolox-jax bench``, and
``python scripts/benchmark.py nms [--batch 8] [--repeat 5] [--no-eager]``.

Setting of the official COCO evaluation: 8400 candidates (640x640 input), 80 classes,
confidence 0.01, class-aware NMS at IoU 0.65. Inputs are synthetic but shaped like a trained
detector's output: objectness is low almost everywhere, with clusters of overlapping,
confident boxes around a few objects per image (see ``make_decoded``).

Rows:
* ``postprocess`` jitted (hard NMS) for K = 100 (COCO's maxDets) and K = 1000 (no cap hit);
* the same eagerly under ``jax.disable_jit()`` (one run, ~10 s; ``--no-eager`` skips it);
* the official-style torch postprocess (per-image loop, conf filter, ``batched_nms``): with
  torchvision's C++ ``batched_nms`` when it imports, otherwise a torch-only greedy equivalent
  (class-offset trick + "take the best, drop IoU > t" loop). Torch runs in the interpreter given
  by ``--torch-python`` (default: this one, else /tmp/tvenv/bin/python) in a subprocess.
  PyPI's torchvision is a CUDA build whose ``_C.so`` will not load next to a CPU-only torch;
  ``scripts/torchvision_cpu_stubs.sh`` (in the repository) builds stub CUDA libraries so that it does (run this
  benchmark with ``LD_LIBRARY_PATH`` pointing at them);
* the hard NMS stage alone: torchvision ``batched_nms`` per image on the candidates over conf
  vs jitted ``nms_batched`` (K = 1000, so every survivor is kept as torchvision keeps them);
* Soft-NMS (gaussian, sigma 0.5, and the adaptive sigma="mean"), K = 100: the NMS stage alone
  (jitted ``nms_batched`` vs a NumPy loop, both given boxes / scores / labels and filtering by
  conf themselves), and whole post-processing (jitted ``postprocess`` vs NumPy incl. the
  class max/argmax).

Both wall time (median) and process CPU time (all threads, mean) are printed: on a shared,
loaded machine the wall figures mostly measure waiting for a core.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from yolox_jax.bench.common import (
    find_torch_python,
    machine,
    measure_eager,
    measure_jit,
    run_script,
    skipped,
    speedups,
    time_fn,
)

CONF, IOU, NUM_CLASSES, HW = 0.01, 0.65, 80, (640, 640)


def make_decoded(batch, seed=0, objects=12, hw=HW):
    """[B, A, 85] decoded outputs: cx, cy, w, h, sigmoid(obj), sigmoid(cls) (A = 8400 at the
    default 640x640; objects and their sizes scale with ``hw``)."""
    rng = np.random.default_rng(seed)
    grids = []
    for s in (8, 16, 32):
        h, w = hw[0] // s, hw[1] // s
        yv, xv = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        grids.append(np.stack([xv.ravel(), yv.ravel(), np.full(h * w, s)], 1))
    grid = np.concatenate(grids).astype(np.float32)  # [A, 3] gx, gy, stride
    a = len(grid)
    scale = np.array([hw[1] / HW[1], hw[0] / HW[0]])  # x, y
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    out = np.empty((batch, a, 5 + NUM_CLASSES), np.float32)
    for b in range(batch):
        centre = (grid[:, :2] + 0.5) * grid[:, 2:3]
        wh = grid[:, 2:3] * np.exp(rng.normal(1.0, 0.6, (a, 2)))
        obj_logit = rng.normal(-7.5, 1.6, a)
        cls_logit = rng.normal(-5.0, 1.5, (a, NUM_CLASSES))
        for _ in range(objects):
            ocx, ocy = rng.uniform(40 * scale, 600 * scale)
            ow, oh = np.exp(rng.uniform(np.log(16 * scale), np.log(400 * scale)))
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


def prepare(decoded):
    """decoded [B, A, 5 + C] -> boxes_xyxy [B, A, 4], scores [B, A], labels [B, A] (NumPy)."""
    cls = decoded[..., 5:]
    xy, wh = decoded[..., :2], decoded[..., 2:4]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], -1)
    return boxes, decoded[..., 4] * cls.max(-1), cls.argmax(-1)


def numpy_soft_nms(boxes, scores, labels, k, sigma, conf=CONF, iou_thr=IOU):
    """Plain NumPy Soft-NMS (gaussian), class-aware, per image: what the JAX path replaces."""
    results = []
    for bx, sc, lab in zip(boxes, scores, labels):
        keep_mask = sc >= conf
        s = sc[keep_mask].astype(np.float32)
        c = lab[keep_mask]
        x1, y1, x2, y2 = bx[keep_mask].T
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


def cpu_ms(fn, repeat=5):
    """Mean process CPU milliseconds of fn() (all threads), after one warm-up call."""
    fn()
    t0 = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t0) / repeat * 1e3


TORCH_SRC = r'''
import json, sys, time
import numpy as np
import torch
decoded = torch.from_numpy(np.load(sys.argv[1])["decoded"])
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
    xy, half = pred[..., :2], pred[..., 2:4] / 2
    corners = torch.cat([xy - half, xy + half], -1)
    out = []
    for b in range(pred.shape[0]):
        class_conf, class_pred = pred[b, :, 5:].max(1)
        score = pred[b, :, 4] * class_conf
        m = score >= conf
        keep = batched_nms(corners[b][m], score[m], class_pred[m], iou_thr)
        out.append((torch.nonzero(m)[:, 0][keep], score[m][keep]))
    return out

def timed(fn):
    fn()
    times = []
    c0 = time.process_time()
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], (time.process_time() - c0) / repeat * 1e3

with torch.inference_mode():
    res = postprocess(decoded)
    median_s, cpu_ms = timed(lambda: postprocess(decoded))
    # The NMS stage alone: batched_nms per image on the candidates over conf (prepared before).
    xy, half = decoded[..., :2], decoded[..., 2:4] / 2
    corners = torch.cat([xy - half, xy + half], -1)
    class_conf, class_pred = decoded[..., 5:].max(-1)
    score = decoded[..., 4] * class_conf
    stage_in = [(corners[b][m], score[b][m], class_pred[b][m])
                for b, m in enumerate(score >= conf)]
    stage_s, stage_cpu_ms = timed(lambda: [batched_nms(bx, sc, cl, iou_thr)
                                           for bx, sc, cl in stage_in])
print(json.dumps({"impl": impl, "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "median_s": median_s, "cpu_ms": cpu_ms, "stage_s": stage_s,
                  "stage_cpu_ms": stage_cpu_ms, "kept": [r[0].tolist() for r in res]}))
'''


def torch_python(arg):
    """``arg``, else this interpreter if it has torch, else /tmp/tvenv/bin/python if present."""
    found = find_torch_python(arg)
    if found or arg:
        return found
    return "/tmp/tvenv/bin/python" if os.path.exists("/tmp/tvenv/bin/python") else None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="benchmark.py nms", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-eager", action="store_true", help="skip the jax.disable_jit() row")
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--out", default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)

    import jax

    import yolox_jax
    from yolox_jax.nms import nms_batched

    decoded_np = make_decoded(args.batch)
    decoded = jax.device_put(decoded_np)
    boxes_np, scores_np, labels_np = prepare(decoded_np)
    prepared = [jax.device_put(x) for x in (boxes_np, scores_np, labels_np)]
    n_cand = (scores_np >= CONF).sum(1)
    rows = []  # (what, wall ms, cpu ms)

    def measure(name, fn, warmup=2):
        wall = time_fn(fn, warmup=warmup, repeat=args.repeat) * 1e3
        rows.append((name, wall, cpu_ms(fn, args.repeat)))
        return wall

    def post(k, method="hard", sigma=0.5):
        return lambda: jax.block_until_ready(yolox_jax.postprocess(
            decoded, conf_threshold=CONF, nms_threshold=IOU, max_detections=k, method=method,
            sigma=sigma))

    for k in (100, 1000):
        measure(f"postprocess hard, jit, K={k}", post(k))
    full = jax.device_get(post(1000)())
    n_kept = full.valid.sum(1)

    if not args.no_eager:
        with jax.disable_jit():
            post(100)()  # the eager op cache warms up too
            t0, c0 = time.perf_counter(), time.process_time()
            post(100)()
            rows.append(("postprocess hard, eager (jax.disable_jit), K=100",
                         (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3))

    torch_note = "torch not found: no torch comparison"
    py = torch_python(args.torch_python)
    if py:
        try:
            res = run_script(py, TORCH_SRC, {"decoded": decoded_np}, CONF, IOU, args.repeat)
        except RuntimeError as err:
            res = None
            torch_note = f"torch run failed: {str(err).strip().splitlines()[-1:]}"
        if res is not None:
            rows.append((f"official-style torch postprocess, {res['impl']}, all kept",
                         res["median_s"] * 1e3, res["cpu_ms"]))
            rows.append((f"hard NMS stage only, {res['impl']} per image, all kept",
                         res["stage_s"] * 1e3, res["stage_cpu_ms"]))
            torch_note = (f"torch {res['torch']} ({res['threads']} threads) via {py}; "
                          f"{res['impl']}")
            same = same_kept(full, scores_np, res["kept"])
            torch_note += f"; kept boxes and order identical to JAX K=1000: {same}"

    hard_stage = jax.jit(lambda b, s, c: nms_batched(
        b, s, IOU, max_output=1000, classes=c, score_threshold=CONF, method="hard"))
    measure("hard NMS stage only, jit nms_batched, K=1000 (all kept)",
            lambda: jax.block_until_ready(hard_stage(*prepared)))
    for sigma in (0.5, "mean"):
        stage = jax.jit(lambda b, s, c, sigma=sigma: nms_batched(
            b, s, IOU, max_output=100, classes=c, score_threshold=CONF, method="gaussian",
            sigma=sigma))
        measure(f"Soft-NMS stage, gaussian sigma={sigma}, jit nms_batched, K=100",
                lambda: jax.block_until_ready(stage(*prepared)))
        measure(f"Soft-NMS stage, gaussian sigma={sigma}, NumPy loop, K=100",
                lambda: numpy_soft_nms(boxes_np, scores_np, labels_np, 100, sigma), warmup=0)
    measure("Soft-NMS postprocess, gaussian sigma=0.5, jit, K=100", post(100, "gaussian", 0.5))
    measure("Soft-NMS postprocess, gaussian sigma=0.5, NumPy (prepare + loop), K=100",
            lambda: numpy_soft_nms(*prepare(decoded_np), 100, 0.5), warmup=0)

    lines = [
        "## NMS / postprocess",
        "",
        f"Machine: {machine()}",
        "",
        f"Batch {args.batch} x 8400 candidates, 80 classes, conf {CONF}, IoU {IOU}, class-aware "
        f"(synthetic decoded outputs, `yolox_jax/bench/nms.py`). Candidates over conf per image: "
        f"{n_cand.tolist()}; kept by hard NMS: {n_kept.tolist()}.",
        f"Torch: {torch_note}.",
        "",
        "| what | wall ms / batch (median) | CPU ms / batch (all threads) |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {wall:.2f} | {cpu:.2f} |" for name, wall, cpu in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


def same_kept(dets, scores_np, kept) -> bool:
    """Whether ``dets`` (all survivors, in order) keep the boxes a torch run kept, in its order."""
    import jax

    dets = jax.device_get(dets)
    return all(np.array_equal(np.asarray(dets.scores[b][dets.valid[b]]), scores_np[b, kept[b]])
               for b in range(len(kept)))


def workload(s) -> dict:
    """The ``nms`` entry: hard-NMS postprocess (conf 0.01, IoU 0.65, class-aware, K = 100) of
    synthetic decoded outputs at the benchmark's size; jitted, eager, and the official-style
    torch postprocess (per-image loop with torchvision's ``batched_nms``, or a torch-only
    equivalent when torchvision does not load)."""
    import jax

    import yolox_jax

    decoded_np = make_decoded(s.batch, hw=s.hw)
    decoded = jax.device_put(decoded_np)

    def post(d, k=100):
        return yolox_jax.postprocess(d, conf_threshold=CONF, nms_threshold=IOU, max_detections=k)

    jit, _ = measure_jit(post, (decoded,), batch=s.batch, warmup=s.warmup, repeats=s.repeats)
    scores = prepare(decoded_np)[1]
    jit["candidates"] = int((scores >= CONF).sum())
    eager = (measure_eager(lambda: post(decoded), batch=s.batch, repeats=s.eager_repeats)
             if "nms" in s.eager else skipped("not requested (--eager)"))
    why = s.reference.need(official=False)
    if why is None:
        try:
            res = s.reference.script(TORCH_SRC, {"decoded": decoded_np}, CONF, IOU, s.repeats)
            full = jax.jit(lambda d: post(d, 1000))(decoded)
            torch = {"impl": f"official-style postprocess, {res['impl']}, every survivor kept "
                             f"(torch {res['torch']}, {res['threads']} threads)",
                     "median_s": res["median_s"], "repeats": s.repeats,
                     "images_per_s": s.batch / res["median_s"],
                     "same_kept": same_kept(full, scores, res["kept"])}
        except RuntimeError as err:
            torch = skipped(" ".join(str(err).split())[-300:])
    else:
        torch = skipped(why)
    entry = {"label": "postprocess (hard NMS)", "unit": "batch", "size": list(s.hw),
             "batch": s.batch, "anchors": int(decoded_np.shape[1]), "conf": CONF, "iou": IOU,
             "max_detections": 100, "jit": jit, "eager": eager, "torch": torch}
    entry["speedup"] = speedups(entry)
    return {"nms": entry}


if __name__ == "__main__":
    sys.exit(main())

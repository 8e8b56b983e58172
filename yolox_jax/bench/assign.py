"""Label-assignment benchmark: the ``assign_<name>`` workloads of ``yolox-jax bench`` (every
assigner of the registry, jitted and eager), and ``python scripts/benchmark.py assign [options]``.

The script times the batched, jitted assignment two ways: ``jax.jit(simota_batch)`` (what the
loss uses: gt buckets and anchor compaction, decided on device) and the plain
``jax.jit(jax.vmap(simota))`` (dense ``[G, A]`` per image); both get gts padded to a fixed count.
They are compared with (a) ``simota_batch`` run eagerly under ``jax.disable_jit()`` and (b) an
official-style PyTorch loop over images, and the compiled programs' temporary memory and the
process peak RSS are reported.

Two PyTorch baselines. (1) The official code itself when an unpacked yolox source tree is given
(``--yolox-src``, default /tmp/yolox_src/yolox-0.3.0) or, in ``yolox-jax bench``, an installed
``yolox``: its ``YOLOXHead.get_assignments`` per image. Release 0.3.0 still has the legacy
in-box-or-centre rule, so it is compared with ``candidate_rule="box_or_center"``. (2) For the
current centre rule, a per-image re-implementation of the official ``get_assignments`` /
``simota_matching`` control flow (``TORCH_LOOP`` below, written from docs/official-behaviour.md
§3.1-3.3): boolean indexing to the candidate anchors, a [G, N, C] repeated
``F.binary_cross_entropy`` class cost, a Python loop of ``torch.topk`` per gt and the conflict
fix-up, one image at a time with only that image's valid gts (no padding). Both run in a
subprocess with ``--torch-python`` (default: this interpreter if it has torch, else
/tmp/tvenv/bin/python if present), so torch need not live in the JAX environment.

``--assigners tal,atss,dsl,ota,...`` times registry assigners instead (``time_assigners``):
jitted, eager, and against the per-image PyTorch reference of each (SimOTA: ``TORCH_LOOP``; OTA,
TAL, ATSS, DSL: ``yolox_jax/bench/assign_torch.py``, the official OTA and MMYOLO's assigners in
PyTorch, one image at a time), with the agreement of their foreground masks and matched gts.
Each assigner is called as the default loss calls it (``as_the_loss_calls``: no all-anchor
``max_iou``, which the references do not compute either).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np

from yolox_jax.bench.assign_torch import JAX_OPTIONS
from yolox_jax.bench.common import (
    OFFICIAL_SCRIPT,
    machine,
    measure_eager,
    measure_jit,
    peak_rss_mib,
    run_script,
    skipped,
    speedups,
    time_fn,
)

TORCH_LOOP = r'''
import json, resource, sys, time
import numpy as np
import torch
import torch.nn.functional as F

def peak_rss_mb():
    """VmHWM of this process (ru_maxrss would include the parent's, it survives exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")

def assign_one(gt, gt_cls, pred, cls_logits, obj_logits, xs, ys, strides, num_classes):
    """Official-style SimOTA for one image (variable shapes, boolean indexing, Python loop)."""
    num_gt = gt.shape[0]
    xc = ((xs + 0.5) * strides).unsqueeze(0)
    yc = ((ys + 0.5) * strides).unsqueeze(0)
    d = strides.unsqueeze(0) * 1.5
    deltas = torch.stack([xc - (gt[:, 0:1] - d), yc - (gt[:, 1:2] - d),
                          (gt[:, 0:1] + d) - xc, (gt[:, 1:2] + d) - yc], 2)
    in_center = deltas.min(dim=-1).values > 0.0
    cand = in_center.sum(dim=0) > 0
    relation = in_center[:, cand]
    p_boxes, p_cls, p_obj = pred[cand], cls_logits[cand], obj_logits[cand]
    n = p_boxes.shape[0]
    tl = torch.max(gt[:, None, :2] - gt[:, None, 2:] / 2, p_boxes[None, :, :2] - p_boxes[None, :, 2:] / 2)
    br = torch.min(gt[:, None, :2] + gt[:, None, 2:] / 2, p_boxes[None, :, :2] + p_boxes[None, :, 2:] / 2)
    inter = torch.prod(br - tl, 2) * (tl < br).all(2)
    ious = inter / (torch.prod(gt[:, 2:], 1)[:, None] + torch.prod(p_boxes[:, 2:], 1)[None] - inter)
    onehot = F.one_hot(gt_cls.long(), num_classes).float()
    p = (p_cls.float().sigmoid() * p_obj.float().sigmoid().unsqueeze(-1)).sqrt()
    cls_cost = F.binary_cross_entropy(p.unsqueeze(0).repeat(num_gt, 1, 1),
                                      onehot.unsqueeze(1).repeat(1, n, 1), reduction="none").sum(-1)
    cost = cls_cost + 3.0 * -torch.log(ious + 1e-8) + 1e6 * (~relation)
    matching = torch.zeros_like(cost, dtype=torch.uint8)
    top, _ = torch.topk(ious, min(10, n), dim=1)
    ks = torch.clamp(top.sum(1).int(), min=1)
    for g in range(num_gt):
        _, idx = torch.topk(cost[g], k=int(ks[g]), largest=False)
        matching[g][idx] = 1
    per_anchor = matching.sum(0)
    if per_anchor.max() > 1:
        multi = per_anchor > 1
        _, best = torch.min(cost[:, multi], dim=0)
        matching[:, multi] *= 0
        matching[best, multi] = 1
    fg_in = matching.sum(0) > 0
    fg = cand.clone()
    fg[cand.clone()] = fg_in
    matched = matching[:, fg_in].argmax(0)
    return fg, matched, (matching * ious).sum(0)[fg_in]

def main(path, repeat, threads):
    if threads:
        torch.set_num_threads(threads)
    d = np.load(path)
    t = {k: torch.from_numpy(d[k]) for k in d.files}
    b = t["pred"].shape[0]
    def run():
        out = []
        with torch.no_grad():
            for i in range(b):
                n = int(t["gt_mask"][i].sum())
                out.append(assign_one(t["gt_boxes"][i, :n], t["gt_classes"][i, :n], t["pred"][i],
                                      t["cls"][i], t["obj"][i], t["grid_xy"][:, 0], t["grid_xy"][:, 1],
                                      t["strides"], t["cls"].shape[-1]))
        return out
    out = run()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
    times.sort()
    fg = np.stack([o[0].numpy() for o in out])
    np.save(path + ".fg.npy", fg)
    print(json.dumps({"seconds": times[len(times) // 2], "torch": torch.__version__,
                      "threads": torch.get_num_threads(),
                      "maxrss_mb": peak_rss_mb()}))

if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
'''


def make_inputs(batch, hw, num_classes, num_gts, pad, seed=0):
    """Random but plausible predictions (decoded around their anchors) and gts padded to ``pad``."""
    from yolox_jax.ops.anchors import anchor_grid

    rng = np.random.default_rng(seed)
    grid_xy, strides = (np.asarray(x) for x in anchor_grid(hw))
    a = len(strides)
    raw = rng.normal(0.0, 0.5, (batch, a, 4)).astype(np.float32)
    pred = np.concatenate([(raw[..., :2] + 0.5 + grid_xy) * strides[:, None],
                           np.exp(raw[..., 2:] + 1.0) * strides[:, None]], -1).astype(np.float32)
    cls = rng.normal(-4.0, 2.0, (batch, a, num_classes)).astype(np.float32)
    obj = rng.normal(-4.0, 2.0, (batch, a)).astype(np.float32)
    h, w = hw
    gt_boxes = np.zeros((batch, pad, 4), np.float32)
    gt_boxes[:, :num_gts, :2] = rng.uniform(0, 1, (batch, num_gts, 2)) * np.array([w, h])
    gt_boxes[:, :num_gts, 2:] = rng.uniform(10, 0.5 * min(h, w), (batch, num_gts, 2))
    gt_classes = np.zeros((batch, pad), np.int32)
    gt_classes[:, :num_gts] = rng.integers(0, num_classes, (batch, num_gts))
    gt_mask = np.zeros((batch, pad), bool)
    gt_mask[:, :num_gts] = True
    return dict(pred=pred, cls=cls, obj=obj, grid_xy=grid_xy, strides=strides,
                gt_boxes=gt_boxes, gt_classes=gt_classes, gt_mask=gt_mask)


# The official code itself: YOLOXHead.get_assignments of an unpacked yolox source tree, called per
# image the way YOLOXHead.get_losses calls it (valid gts only). The pip release 0.3.0 still has
# the legacy "in box or in centre" rule (r = 2.5, penalty 1e5): compare with that option.
TORCH_OFFICIAL = r'''
import importlib.util, json, sys, time
import numpy as np
import torch
spec = importlib.util.spec_from_file_location("yolox_bench_official", sys.argv[5])
official = importlib.util.module_from_spec(spec)
spec.loader.exec_module(official)

def main(path, repeat, threads, src):
    if threads:
        torch.set_num_threads(threads)
    models = official.import_official(src)
    d = np.load(path)
    t = {k: torch.from_numpy(d[k]) for k in d.files}
    b, a, c = t["cls"].shape
    head = models.YOLOXHead(c)
    strides, xs, ys = t["strides"][None], t["grid_xy"][None, :, 0], t["grid_xy"][None, :, 1]
    obj = t["obj"][..., None]
    def run():
        fgs = []
        with torch.no_grad():
            for i in range(b):
                n = int(t["gt_mask"][i].sum())
                out = head.get_assignments(i, n, a, t["gt_boxes"][i, :n], t["gt_classes"][i, :n].float(),
                                           t["pred"][i], strides, xs, ys, t["cls"], None, obj, None, None)
                fgs.append(out[1].numpy().copy())
        return fgs
    fgs = run()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
    times.sort()
    np.save(path + ".fg.npy", np.stack(fgs))
    print(json.dumps({"seconds": times[len(times) // 2], "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))

if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
'''


def find_torch_python(explicit):
    """``explicit`` ('none': none), else this interpreter if it has torch, else
    /tmp/tvenv/bin/python if present."""
    from yolox_jax.bench.common import find_torch_python as find

    found = find(explicit)
    if found or explicit:
        return found
    cand = "/tmp/tvenv/bin/python"
    return cand if os.path.exists(cand) else None


def main(argv=None):
    ap = argparse.ArgumentParser(prog="benchmark.py assign", description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--hw", type=int, nargs=2, default=[640, 640])
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--gts", type=int, default=30, help="valid gts per image")
    ap.add_argument("--pad", type=int, default=120, help="gt rows after padding")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--eager-max-batch", type=int, default=8,
                    help="run the disable_jit() eager variant only up to this batch (it is slow)")
    ap.add_argument("--ota", action="store_true", help="also time jit(vmap(ota)) (50 Sinkhorn its)")
    ap.add_argument("--assigners", default="",
                    help="comma-separated registry names (e.g. tal,atss,dsl,ota): time each "
                         "instead of the SimOTA comparison, jitted and eager")
    ap.add_argument("--torch-python", default=None,
                    help="python with torch for the per-image loop ('none' to skip)")
    ap.add_argument("--yolox-src", default="/tmp/yolox_src/yolox-0.3.0",
                    help="unpacked official yolox source: also time its own get_assignments loop "
                         "(legacy rule in 0.3.0) against simota_batch(candidate_rule="
                         "'box_or_center'); skipped when missing")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0 = default)")
    ap.add_argument("--markdown", default=None, help="also write the Markdown section to this file")
    args = ap.parse_args(argv)

    import jax

    from yolox_jax.assign import ota, simota, simota_batch

    hw = tuple(args.hw)
    in_axes = (0, 0, 0, None, None, 0, 0, 0)
    keys = ("pred", "cls", "obj", "grid_xy", "strides", "gt_boxes", "gt_classes", "gt_mask")
    torch_python = find_torch_python(args.torch_python)
    rows, notes = [], []

    def compile_and_time(fn, inputs):
        # The anchor grid is a compile-time constant, as in the loss (anchor_grid is NumPy).
        grid_xy, strides = inputs["grid_xy"], inputs["strides"]
        xs = [jax.device_put(inputs[k]) for k in keys if k not in ("grid_xy", "strides")]
        fig, out = measure_jit(lambda p, c, o, gb, gc, gm: fn(p, c, o, grid_xy, strides, gb, gc, gm),
                               xs, batch=1, warmup=1, repeats=args.repeat)
        temp_mb = fig["program_mib"]["temp"] if fig["program_mib"] else float("nan")
        return out, fig["median_s"], fig["lower_s"] + fig["compile_s"], temp_mb

    if args.assigners:
        return time_assigners(args, hw, keys, compile_and_time, torch_python)

    for b in args.batches:
        inputs = make_inputs(b, hw, args.classes, args.gts, args.pad)
        xs = [jax.device_put(inputs[k]) for k in keys]
        a = inputs["pred"].shape[1]
        out, batch_s, compile_s, temp_mb = compile_and_time(simota_batch, inputs)
        _, official_s, _, _ = compile_and_time(partial(simota_batch, with_max_iou=False), inputs)
        dense, dense_s, dense_compile_s, dense_temp_mb = compile_and_time(
            jax.vmap(simota, in_axes=in_axes), inputs)
        row = {"batch": b, "anchors": a, "jit_s": official_s, "all_fields_s": batch_s,
               "compile_s": compile_s,
               "temp_mb": temp_mb, "dense_s": dense_s, "dense_compile_s": dense_compile_s,
               "dense_temp_mb": dense_temp_mb, "num_fg": int(np.asarray(out.num_fg).sum()),
               "same_as_dense": bool((np.asarray(out.fg_mask) == np.asarray(dense.fg_mask)).all()
                                     and (np.asarray(out.matched_gt)
                                          == np.asarray(dense.matched_gt)).all()),
               "rss_mb": peak_rss_mib()}
        if b <= args.eager_max_batch:
            with jax.disable_jit():
                row["eager_s"] = time_fn(lambda: jax.block_until_ready(simota_batch(*xs)),
                                         warmup=1, repeat=1)
        if args.ota and b <= args.eager_max_batch:
            ofn = jax.jit(jax.vmap(ota, in_axes=in_axes))
            row["ota_s"] = time_fn(lambda: jax.block_until_ready(ofn(*xs)), warmup=1, repeat=1)
        if torch_python:
            tr = run_script(torch_python, TORCH_LOOP, inputs, args.repeat, args.torch_threads)
            row["torch_s"], row["torch_rss_mb"] = tr["seconds"], tr["maxrss_mb"]
            row["torch_agree"] = bool((tr["fg"] == np.asarray(out.fg_mask)).all())
            notes.append(f"torch {tr['torch']} ({tr['threads']} threads)")
        if torch_python and os.path.exists(os.path.join(args.yolox_src, "yolox", "models")):
            legacy, legacy_s, _, _ = compile_and_time(
                partial(simota_batch, candidate_rule="box_or_center", with_max_iou=False), inputs)
            off = run_script(torch_python, TORCH_OFFICIAL, inputs, args.repeat,
                             args.torch_threads, args.yolox_src, OFFICIAL_SCRIPT)
            row.update(legacy_s=legacy_s, official_s=off["seconds"],
                       official_agree=bool((off["fg"] == np.asarray(legacy.fg_mask)).all()))
        rows.append(row)
        print(json.dumps(row), flush=True)

    fmt = lambda v: "-" if v is None else (f"{v * 1e3:.0f} ms" if v < 1 else f"{v:.2f} s")  # noqa: E731
    lines = [
        f"Machine: {machine()}" + (f"; {notes[0]}" if notes else ""),
        "",
        f"SimOTA, {hw[0]}x{hw[1]} input ({rows[0]['anchors']} anchors), {args.classes} classes, "
        f"{args.gts} gts per image padded to {args.pad}; median of {args.repeat} runs after warm-up.",
        "",
        "| batch | jit(simota_batch) official outputs‡ | all fields | compile | "
        "jit(vmap(simota)) dense | eager simota_batch (disable_jit) | PyTorch per-image loop† | "
        "speed-up vs loop (official outputs / all fields / dense) | XLA temp (batch / dense) | "
        "peak RSS so far (JAX / torch process) | same fg as loop |"
        + (" jit(vmap(ota)) |" if args.ota else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.ota else ""),
    ]
    for r in rows:
        speed = (f"{r['torch_s'] / r['jit_s']:.1f}x / {r['torch_s'] / r['all_fields_s']:.1f}x / "
                 f"{r['torch_s'] / r['dense_s']:.1f}x" if "torch_s" in r else "-")
        lines.append(
            f"| {r['batch']} | {fmt(r['jit_s'])} | {fmt(r['all_fields_s'])} | "
            f"{r['compile_s']:.1f} s | {fmt(r['dense_s'])} | "
            f"{fmt(r.get('eager_s'))} | {fmt(r.get('torch_s'))} | {speed} | "
            f"{r['temp_mb']:.0f} / {r['dense_temp_mb']:.0f} MiB | "
            f"{r['rss_mb']:.0f} / {r.get('torch_rss_mb', float('nan')):.0f} MiB | "
            f"{r.get('torch_agree', '-')} |" + (f" {fmt(r.get('ota_s'))} |" if args.ota else ""))
    lines += ["", "† This project's per-image PyTorch re-implementation of the official SimOTA "
              "loop with the current centre rule (GitHub main; the pip release 0.3.0 predates it, "
              "see the table below for that code itself): yolox_jax/bench/assign.py `TORCH_LOOP`, "
              "unpadded gts, CPU.",
              "‡ `with_max_iou=False`: fg mask, matched gt/class/IoU, dynamic k, candidates — what "
              "the official loop computes (and what the loss uses with the official binary "
              "objectness target); \"all fields\" adds `max_iou` over all anchors."]
    if any("official_s" in r for r in rows):
        lines += ["", f"Against the official code ({args.yolox_src}: pip release 0.3.0, whose "
                  "SimOTA still uses the legacy in-box-or-centre rule): its "
                  "`YOLOXHead.get_assignments` called per image as `get_losses` does, vs "
                  "`jit(simota_batch(candidate_rule=\"box_or_center\"))` (gt buckets only: box "
                  "candidates have no static bound, so no anchor compaction).", "",
                  "| batch | official get_assignments loop | jit(simota_batch) legacy rule | "
                  "speed-up | same fg |", "|---|---|---|---|---|"]
        for r in rows:
            if "official_s" in r:
                lines.append(f"| {r['batch']} | {fmt(r['official_s'])} | {fmt(r['legacy_s'])} | "
                             f"{r['official_s'] / r['legacy_s']:.1f}x | {r['official_agree']} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


def reference_rows(names):
    """``(label, name, options, reference)`` per benchmark row of ``time_assigners``: each
    registry name as it is (``reference``: the name of its per-image PyTorch reference, or None),
    plus, where the reference reproduces the assigner only with options (OTA: ``cost="ota"``), a
    row of the assigner with those options that carries the comparison."""
    from yolox_jax.bench.assign_torch import JAX_OPTIONS

    rows = []
    for name in names:
        options = JAX_OPTIONS.get(name)
        if name == "simota" or options == {}:
            rows.append((name, name, {}, name))
            continue
        rows.append((name, name, {}, None))
        if options:
            label = name + " " + ",".join(f"{k}={v}" for k, v in options.items())
            rows.append((label, name, options, name))
    return rows


def torch_reference(python, name, inputs, repeat, threads=0) -> dict:
    """The per-image PyTorch reference of ``name`` (SimOTA: ``TORCH_LOOP``; OTA, TAL, ATSS,
    DSL: ``yolox_jax/bench/assign_torch.py``) on ``inputs``: ``seconds`` (median over the batch),
    ``maxrss_mb``, ``torch``, ``threads`` and ``result`` (SimOTA: fg [B, A] bool; the others:
    owner [B, A], -1 background, else the matched gt row)."""
    from yolox_jax.bench.assign_torch import run_reference

    if name == "simota":
        tr = run_script(python, TORCH_LOOP, inputs, repeat, threads)
        return {"seconds": tr["seconds"], "maxrss_mb": tr["maxrss_mb"], "torch": tr["torch"],
                "threads": tr["threads"], "result": tr["fg"]}
    tr = run_reference(python, name, inputs, repeat, threads)
    tr["result"] = tr.pop("owner")
    return tr


def as_the_loss_calls(fn):
    """``fn`` as the default loss calls it: with ``with_max_iou=False`` where the assigner takes
    it. ``max_iou`` (every anchor's largest IoU over all gts) is used only by the
    ``obj_target="max_iou"/"iou"`` losses, and the per-image references do not compute it."""
    from yolox_jax.assign.registry import loss_assign_kwargs

    extra = loss_assign_kwargs(fn, {})
    return partial(fn, **extra) if extra else fn


def time_assigners(args, hw, keys, compile_and_time, torch_python=None) -> int:
    """One row per (assigner, batch): jitted (compile, run, XLA temporaries), eager
    (``jax.disable_jit``, batches up to ``--eager-max-batch``) and, where this assigner has one
    and torch runs (``torch_python``), the per-image PyTorch reference on the same inputs: its
    time, the speed-up of jit over it, and whether the foreground (and matched gts) agree."""
    import jax

    from yolox_jax.assign.registry import get_assigner
    from yolox_jax.bench.assign_torch import agreement

    fmt = lambda v: "-" if v is None else (f"{v * 1e3:.0f} ms" if v < 1 else f"{v:.2f} s")  # noqa: E731
    lines = [f"Machine: {machine()}", "",
             f"{hw[0]}x{hw[1]} input, {args.classes} classes, {args.gts} gts per image padded to "
             f"{args.pad}; median of {args.repeat} runs after warm-up.", "",
             "| assigner | batch | jit | compile | XLA temp | eager (disable_jit) | eager / jit | "
             "PyTorch per-image | speed-up vs PyTorch | same fg | fg per gt |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    torch_note = None
    for label, name, options, ref in reference_rows(args.assigners.split(",")):
        fn = as_the_loss_calls(partial(get_assigner(name), **options) if options
                               else get_assigner(name))
        for b in args.batches:
            inputs = make_inputs(b, hw, args.classes, args.gts, args.pad)
            out, run_s, compile_s, temp_mb = compile_and_time(fn, inputs)
            eager_s = None
            if b <= args.eager_max_batch:
                xs = [jax.device_put(inputs[k]) for k in keys]
                with jax.disable_jit():
                    eager_s = time_fn(lambda: jax.block_until_ready(fn(*xs)), warmup=0, repeat=1)
            fg = float(np.asarray(out.num_fg).sum()) / (b * args.gts)
            row = dict(assigner=label, batch=b, jit_s=run_s, compile_s=compile_s,
                       temp_mb=temp_mb, eager_s=eager_s, fg_per_gt=fg, torch_s=None,
                       torch_rss_mb=None, speedup_vs_torch=None, same_fg=None)
            if ref is None:
                row["torch_skipped"] = "no PyTorch reference of these options"
            elif not torch_python:
                row["torch_skipped"] = "torch not importable (--torch-python)"
            else:
                try:
                    tr = torch_reference(torch_python, ref, inputs, args.repeat,
                                         args.torch_threads)
                except RuntimeError as err:
                    row["torch_skipped"] = " ".join(str(err).split())[-300:]
                else:
                    row.update(torch_s=tr["seconds"], torch_rss_mb=tr["maxrss_mb"],
                               speedup_vs_torch=tr["seconds"] / run_s,
                               **agreement(tr["result"], out))
                    torch_note = f"torch {tr['torch']} ({tr['threads']} threads)"
            print(json.dumps(row), flush=True)
            speed = "-" if row["speedup_vs_torch"] is None else f"{row['speedup_vs_torch']:.1f}x"
            same = "-" if row["same_fg"] is None else str(row["same_fg"])
            if row["same_fg"] is False:
                same += f" ({row['fg_mismatch']} anchors differ)"
            elif row.get("same_matched") is False:
                same += f" (matched gt differs at {row['matched_mismatch']} anchors)"
            lines.append(f"| {label} | {b} | {fmt(run_s)} | {compile_s:.1f} s | {temp_mb:.0f} MiB | "
                         f"{fmt(eager_s)} | "
                         f"{'-' if eager_s is None else f'{eager_s / run_s:.0f}x'} | "
                         f"{fmt(row['torch_s'])} | {speed} | {same} | {fg:.1f} |")
    if torch_note:
        lines[0] += f"; {torch_note}"
    lines += ["", "PyTorch per-image: the reference's control flow in PyTorch, one image at a "
              "time with its valid gts only, CPU (SimOTA: `TORCH_LOOP` in "
              "yolox_jax/bench/assign.py; OTA, TAL, ATSS, DSL: yolox_jax/bench/assign_torch.py, "
              "the official OTA and MMYOLO's assigners). OTA's reference is the official OTA, "
              "compared in the `ota cost=ota` row. \"same fg\": equal foreground masks (and "
              "matched gts) on the same inputs. jit: the assigner as the default loss calls it "
              "(`with_max_iou=False` where it takes that option: no all-anchor max IoU, which "
              "the references do not compute)."]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


KEYS = ("pred", "cls", "obj", "grid_xy", "strides", "gt_boxes", "gt_classes", "gt_mask")


def workload(s) -> dict:
    """One ``assign_<name>`` entry per assigner of ``s.assigners`` (default: every name of the
    registry): jitted and eager on the same inputs (``s.gts`` gts per image padded to ``s.pad``,
    80 classes). ``torch``: the per-image PyTorch reference where the assigner has one and torch
    runs (SimOTA: the official control flow, and, when the official YOLOX is importable, its own
    ``get_assignments``; OTA, TAL, ATSS, DSL: ``assign_torch.py``), with ``same_fg`` against the
    jitted result. OTA's reference is the official OTA, which the registry's ``ota`` computes
    with ``cost="ota"``: its ``torch`` entry holds that program's ``jit_median_s`` and
    ``over_jit``, and ``speedup.torch_over_jit`` is that ratio (same algorithm on both sides)."""
    import jax

    from yolox_jax.assign.registry import assigner_names, get_assigner

    inputs = make_inputs(s.batch, s.hw, 80, s.gts, s.pad)
    # The anchor grid is a compile-time constant, as in the loss (anchor_grid is NumPy).
    grid_xy, strides = inputs["grid_xy"], inputs["strides"]
    xs = [jax.device_put(inputs[k]) for k in KEYS if k not in ("grid_xy", "strides")]
    out = {}
    for name in s.assigners or assigner_names():
        fn = as_the_loss_calls(get_assigner(name))

        def call(p, c, o, gb, gc, gm, fn=fn):
            return fn(p, c, o, grid_xy, strides, gb, gc, gm)

        jit, res = measure_jit(call, xs, batch=s.batch, warmup=s.warmup, repeats=s.repeats)
        jit["fg_per_gt"] = float(np.asarray(res.num_fg).sum()) / (s.batch * s.gts)
        eager = (measure_eager(lambda: call(*xs), batch=s.batch, repeats=s.eager_repeats)
                 if "assign" in s.eager else skipped("not requested (--eager)"))
        entry = {"label": f"assign {name}", "unit": "batch", "size": list(s.hw),
                 "batch": s.batch, "anchors": int(inputs["pred"].shape[1]), "gts": s.gts,
                 "pad": s.pad, "jit": jit, "eager": eager,
                 "torch": skipped("no PyTorch reference of this assigner")}
        if name == "simota":
            entry.update(_simota_references(s, inputs, res))
        elif name in JAX_OPTIONS:
            entry["torch"] = _torch_reference(s, name, inputs, res, call)
        entry["speedup"] = speedups(entry)
        if "over_jit" in entry["torch"]:
            entry["speedup"]["torch_over_jit"] = entry["torch"]["over_jit"]
        out[f"assign_{name}"] = entry
    return out


def _torch_reference(s, name, inputs, res, call) -> dict:
    """The ``torch`` entry of OTA, TAL, ATSS or DSL: the per-image PyTorch reference
    (``assign_torch.py``) on ``inputs``, compared with the jitted result ``res`` (OTA: with a
    jitted ``ota(cost="ota")``, timed here too) of ``call(p, c, o, gb, gc, gm, fn=...)``."""
    from yolox_jax.bench.assign_torch import IMPLS, agreement, run_reference

    why = s.reference.need(official=False)
    if why is not None:
        return skipped(why)
    options = JAX_OPTIONS[name]
    extra = {}
    if options:
        import jax

        from yolox_jax.assign.registry import get_assigner

        xs = [jax.device_put(inputs[k]) for k in KEYS if k not in ("grid_xy", "strides")]
        fn = as_the_loss_calls(partial(get_assigner(name), **options))
        jit, res = measure_jit(partial(call, fn=fn), xs, batch=s.batch, warmup=s.warmup,
                               repeats=s.repeats)
        extra = {"jax": f"{name}({', '.join(f'{k}={v!r}' for k, v in options.items())})",
                 "jit_median_s": jit["median_s"]}
    try:
        tr = run_reference(s.reference.python, name, inputs, s.repeats, 0)
    except RuntimeError as err:
        return skipped(" ".join(str(err).split())[-300:])
    entry = {"impl": f"PyTorch per-image, {IMPLS[name]} (torch {tr['torch']}, "
                     f"{tr['threads']} threads)",
             "median_s": tr["seconds"], "repeats": s.repeats,
             "images_per_s": s.batch / tr["seconds"], "peak_rss_mib": tr["maxrss_mb"],
             **agreement(tr["owner"], res), **extra}
    if options:
        entry["over_jit"] = tr["seconds"] / extra["jit_median_s"]
    return entry


def _simota_references(s, inputs, res) -> dict:
    """``torch``: the per-image PyTorch loop (official SimOTA control flow, centre rule);
    ``torch_official``: the official ``get_assignments`` per image (the 0.3.0 release's legacy
    rule) against ``simota_batch(candidate_rule="box_or_center")``."""
    out = {}
    why = s.reference.need(official=False)
    if why is not None:
        return {"torch": skipped(why)}
    try:
        tr = s.reference.script(TORCH_LOOP, inputs, s.repeats, 0)
    except RuntimeError as err:
        return {"torch": skipped(" ".join(str(err).split())[-300:])}
    out["torch"] = {"impl": f"PyTorch per-image loop, official SimOTA control flow "
                            f"(torch {tr['torch']}, {tr['threads']} threads)",
                    "median_s": tr["seconds"], "repeats": s.repeats,
                    "images_per_s": s.batch / tr["seconds"], "peak_rss_mib": tr["maxrss_mb"],
                    "same_fg": bool((tr["fg"] == np.asarray(res.fg_mask)).all())}
    if s.reference.need(official=True) is None:
        import jax

        from yolox_jax.assign import simota_batch

        grid_xy, strides = inputs["grid_xy"], inputs["strides"]
        xs = [jax.device_put(inputs[k]) for k in KEYS if k not in ("grid_xy", "strides")]
        legacy = partial(simota_batch, candidate_rule="box_or_center", with_max_iou=False)
        jit, lres = measure_jit(lambda p, c, o, gb, gc, gm: legacy(p, c, o, grid_xy, strides,
                                                                    gb, gc, gm),
                                xs, batch=s.batch, warmup=s.warmup, repeats=s.repeats)
        try:
            off = s.reference.script(TORCH_OFFICIAL, inputs, s.repeats, 0, s.reference.root,
                                     OFFICIAL_SCRIPT)
            out["torch_official"] = {
                "impl": "official YOLOX get_assignments per image (legacy in-box-or-centre "
                        f"rule of release 0.3.0; torch {off['torch']})",
                "median_s": off["seconds"], "jit_median_s": jit["median_s"],
                "over_jit": off["seconds"] / jit["median_s"],
                "same_fg": bool((off["fg"] == np.asarray(lres.fg_mask)).all())}
        except RuntimeError as err:
            out["torch_official"] = skipped(" ".join(str(err).split())[-300:])
    return out


if __name__ == "__main__":
    sys.exit(main())

"""The per-image PyTorch references of the assignment benchmark (yolox_jax/bench/assign_torch.py)
give the JAX assigners' foreground and matched gts on small inputs (gts at random padded rows,
an image without gts, one with a single gt). Skipped where torch is not importable."""
import functools
import subprocess
import sys

import jax
import numpy as np
import pytest

from yolox_jax.assign.registry import get_assigner
from yolox_jax.bench.assign import make_inputs, reference_rows
from yolox_jax.bench.assign_torch import JAX_OPTIONS, SCRIPT, agreement
from yolox_jax.bench.common import find_torch_python, run_script
from yolox_jax.ops.anchors import anchor_grid

TORCH = find_torch_python(None)
needs_torch = pytest.mark.skipif(TORCH is None, reason="torch not importable")

HW, C, PAD, B = (128, 128), 4, 8, 2
KEYS = ("pred", "cls", "obj", "gt_boxes", "gt_classes", "gt_mask")
GRID_XY, STRIDES = (np.asarray(x) for x in anchor_grid(HW))


def batch(counts, seed):
    """``make_inputs`` predictions with ``counts[i]`` valid gts of image i at random rows of
    ``PAD``; the other rows hold junk (NaN boxes, out-of-range classes)."""
    inputs = make_inputs(B, HW, C, max(counts), PAD, seed=seed)
    rng = np.random.default_rng(seed)
    boxes = np.full((B, PAD, 4), np.nan, np.float32)
    classes = np.full((B, PAD), 99, np.int32)
    mask = np.zeros((B, PAD), bool)
    for i, n in enumerate(counts):
        rows = np.sort(rng.choice(PAD, n, replace=False))
        boxes[i, rows] = inputs["gt_boxes"][i, :n]
        classes[i, rows] = inputs["gt_classes"][i, :n]
        mask[i, rows] = True
    inputs.update(gt_boxes=boxes, gt_classes=classes, gt_mask=mask)
    return inputs


@functools.lru_cache(maxsize=None)
def jitted(name):
    """The JAX side of ``name``'s reference (its registry assigner with ``JAX_OPTIONS``), the
    anchor grid a constant as in the benchmark; one compilation for both test batches."""
    fn = functools.partial(get_assigner(name), **JAX_OPTIONS[name])
    return jax.jit(lambda p, c, o, gb, gc, gm: fn(p, c, o, GRID_XY, STRIDES, gb, gc, gm))


@needs_torch
@pytest.mark.parametrize("counts,seed", [((5, 3), 0), ((0, 1), 1)])
def test_references_match_jax(counts, seed):
    inputs = batch(counts, seed)
    names = list(JAX_OPTIONS)
    tr = run_script(TORCH, SCRIPT.read_text(), inputs, 0, 1, ",".join(names))
    owners = tr["fg"]
    assert owners.shape == (len(names), B, inputs["pred"].shape[1])
    for name, owner in zip(names, owners):
        out = jitted(name)(*(inputs[k] for k in KEYS))
        fg = np.asarray(out.fg_mask)
        got = agreement(owner, out)
        assert got["same_fg"] and got["same_matched"], (name, got)
        np.testing.assert_array_equal(owner, np.where(fg, np.asarray(out.matched_gt), -1))
        for i, n in enumerate(counts):
            rows = set(np.flatnonzero(inputs["gt_mask"][i]))
            assert set(owner[i][owner[i] >= 0]) <= rows, name
            assert (owner[i] >= 0).any() == (n > 0), (name, i)


@needs_torch
def test_benchmark_reference_runs_one_assigner():
    """``run_reference``, as the benchmark calls it: one assigner, timed, owner per image."""
    from yolox_jax.bench.assign_torch import run_reference

    inputs = batch((2, 1), 2)
    tr = run_reference(TORCH, "tal", inputs, 1, 1)
    assert tr["seconds"] > 0 and tr["maxrss_mb"] > 0 and tr["threads"] == 1
    assert tr["owner"].shape == inputs["pred"].shape[:2]


def test_rows_and_agreement_need_no_torch():
    """Importing the references does not import torch; OTA's comparison row carries its
    options; the agreement counts differing anchors."""
    code = "import sys, yolox_jax.bench.assign_torch; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    rows = reference_rows(["simota", "ota", "tal", "ota_soft"])
    assert [r[0] for r in rows] == ["simota", "ota", "ota cost=ota", "tal", "ota_soft"]
    assert [r[3] for r in rows] == ["simota", None, "ota", "tal", None]

    class Out:
        fg_mask = np.array([[True, False, True]])
        matched_gt = np.array([[2, 0, 1]])

    assert agreement(np.array([[2, -1, 1]]), Out) == {
        "same_fg": True, "fg_mismatch": 0, "same_matched": True, "matched_mismatch": 0}
    got = agreement(np.array([[3, 0, 1]]), Out)
    assert got["fg_mismatch"] == 1 and got["matched_mismatch"] == 1 and not got["same_matched"]
    assert agreement(np.array([[True, False, False]]), Out) == {"same_fg": False,
                                                                "fg_mismatch": 1}

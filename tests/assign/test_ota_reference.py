"""``ota(cost="ota")`` against a NumPy transcription of the official OTA assigner (ota_oracle.py).

Hard decisions (foreground mask, matched gt, matched class, dynamic k) must be equal; the plan
equal to float32 tolerance. Ground truths are padded to ``PAD_G`` rows with junk behind the mask,
at random slots; the oracle sees the valid rows only.
"""
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax.assign import ota
from yolox_jax.ops.anchors import anchor_grid

sys.path.insert(0, str(Path(__file__).parent))
from ota_oracle import ota_oracle  # noqa: E402

HW = (128, 160)          # 320 + 80 + 20 = 420 anchors
NUM_CLASSES = 5
PAD_G = 6
GRID, STRIDES = (np.asarray(x) for x in anchor_grid(HW))
NUM_ANCHORS = len(STRIDES)
PLAN_ATOL, PLAN_RTOL = 2e-5, 1e-4


@functools.lru_cache(maxsize=None)
def _jit(options=()):
    return jax.jit(functools.partial(ota, cost="ota", **dict(options)))


def points(offset=0.5):
    return (GRID + offset) * STRIDES[:, None]


def random_case(seed, num_gt):
    """Random gts; half the anchors predict a perturbed gt, the rest random boxes near the
    anchor; random class and objectness logits."""
    rng = np.random.default_rng(seed)
    wh = rng.uniform(6, 90, (num_gt, 2))
    centres = rng.uniform([0, 0], [HW[1], HW[0]], (num_gt, 2))
    gts = np.concatenate([centres, wh], 1).astype(np.float32)
    gcls = rng.integers(0, NUM_CLASSES, num_gt).astype(np.int32)
    pred = np.concatenate([points() + rng.normal(0, 4, (NUM_ANCHORS, 2)),
                           rng.uniform(4, 60, (NUM_ANCHORS, 2))], 1)
    if num_gt:
        near = rng.random(NUM_ANCHORS) < 0.5
        owner = rng.integers(0, num_gt, NUM_ANCHORS)
        pred[near] = gts[owner[near]] * (1 + rng.normal(0, 0.15, (int(near.sum()), 4)))
        pred[:, 2:] = np.abs(pred[:, 2:])
    cls = rng.normal(-2, 2, (NUM_ANCHORS, NUM_CLASSES)).astype(np.float32)
    obj = rng.normal(-1, 2, NUM_ANCHORS).astype(np.float32)
    return pred.astype(np.float32), cls, obj, gts, gcls


def pad(gts, gcls, slots, junk="nan"):
    """Pad to PAD_G rows with the valid ones at ``slots``; the rest holds junk."""
    boxes = {"nan": np.full((PAD_G, 4), np.nan), "huge": np.full((PAD_G, 4), 1e30),
             "negative": np.tile([50.0, 50.0, -20.0, -30.0], (PAD_G, 1)),
             "zero": np.zeros((PAD_G, 4))}[junk].astype(np.float32)
    classes = np.full(PAD_G, 0 if junk == "zero" else 99, np.int32)
    mask = np.zeros(PAD_G, bool)
    boxes[slots], classes[slots], mask[slots] = gts, gcls, True
    return boxes, classes, mask


def compare(pred, cls, obj, gts, gcls, slots=None, junk="nan", options=(), oracle_options=None,
            point_offset=0.5):
    """Run both and assert agreement; returns (assignment, plan, oracle result)."""
    slots = np.arange(len(gts)) if slots is None else np.asarray(slots)
    gb, gc, gm = pad(gts, gcls, slots, junk)
    a, plan = _jit(tuple(options))(pred, cls, obj, GRID, STRIDES, gb, gc, gm)
    o = ota_oracle(pred, cls, obj, points(point_offset), STRIDES, gts.reshape(-1, 4),
                   np.asarray(gcls).reshape(-1), **(oracle_options or {}))
    fg = np.asarray(a.fg_mask)
    np.testing.assert_array_equal(fg, o["fg"])
    np.testing.assert_array_equal(np.asarray(a.matched_gt)[fg], slots[o["matched_gt"][fg]])
    np.testing.assert_array_equal(np.asarray(a.matched_class)[fg], o["matched_class"][fg])
    assert int(a.num_fg) == int(o["fg"].sum())
    k = np.asarray(a.dynamic_k)
    np.testing.assert_array_equal(k[slots], o["k"])
    assert (np.delete(k, slots) == 0).all()
    np.testing.assert_allclose(np.asarray(a.matched_iou), o["matched_iou"], atol=1e-6, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(a.candidate_mask), o["is_in"].any(0))
    plan = np.asarray(plan)
    assert plan.shape == (PAD_G + 1, NUM_ANCHORS) and np.isfinite(plan).all()
    np.testing.assert_allclose(plan[slots], o["pi"][:-1], atol=PLAN_ATOL, rtol=PLAN_RTOL)
    np.testing.assert_allclose(plan[-1], o["pi"][-1], atol=PLAN_ATOL, rtol=PLAN_RTOL)
    assert np.abs(np.delete(plan[:-1], slots, axis=0)).max(initial=0.0) == 0.0
    return a, plan, o


@pytest.mark.parametrize("seed", range(12))
def test_random_cases_match_official(seed):
    num_gt = 1 + seed % PAD_G
    pred, cls, obj, gts, gcls = random_case(seed, num_gt)
    slots = np.sort(np.random.default_rng(seed + 1000).choice(PAD_G, num_gt, replace=False))
    junk = ("nan", "huge", "negative")[seed % 3]
    a, _, o = compare(pred, cls, obj, gts, gcls, slots, junk)
    assert o["fg"].any()


@pytest.mark.parametrize("name,options,oracle_options,offset", [
    ("joint score", (("score_from", "joint"),), {"score_from": "joint"}, 0.5),
    ("giou cost", (("reg_cost", "giou"),), {"reg_cost": "giou"}, 0.5),
    ("official points", (("point_offset", 0.0),), {}, 0.0),
    ("other solver settings", (("epsilon", 0.3), ("num_iters", 20), ("iou_weight", 3.0),
                               ("topk_iou", 10), ("focal_alpha", 0.5), ("focal_gamma", 1.5)),
     {"eps": 0.3, "num_iters": 20, "reg_weight": 3.0, "top_candidates": 10, "alpha": 0.5,
      "gamma": 1.5}, 0.5),
])
def test_options_match_official(name, options, oracle_options, offset):
    for seed in (100, 101, 102):
        pred, cls, obj, gts, gcls = random_case(seed, 4)
        compare(pred, cls, obj, gts, gcls, [0, 2, 3, 5], options=options,
                oracle_options=oracle_options, point_offset=offset)


def test_no_gts_all_background():
    pred, cls, obj, gts, gcls = random_case(7, 0)
    a, plan, _ = compare(pred, cls, obj, gts, gcls)
    assert int(a.num_fg) == 0
    np.testing.assert_allclose(plan[-1], 1.0, atol=1e-6)


def test_one_gt():
    pred, cls, obj, gts, gcls = random_case(8, 3)
    a, plan, o = compare(pred, cls, obj, gts[:1], gcls[:1], [4])
    assert int(a.num_fg) > 0 and set(np.asarray(a.matched_gt)[np.asarray(a.fg_mask)]) == {4}
    np.testing.assert_allclose(plan[4].sum(), o["k"][0], rtol=1e-3)


def test_duplicate_gts_first_wins():
    """Identical gts with the same class tie exactly; the first of them takes the anchors, as
    torch.max's first maximum does."""
    pred, cls, obj, gts, gcls = random_case(9, 2)
    dup = np.stack([gts[0], gts[1], gts[0], gts[0]])
    dcls = np.array([gcls[0], gcls[1], gcls[0], (gcls[0] + 1) % NUM_CLASSES], np.int32)
    a, plan, _ = compare(pred, cls, obj, dup, dcls, [0, 1, 3, 5])
    matched = np.asarray(a.matched_gt)[np.asarray(a.fg_mask)]
    assert 0 in matched and 3 not in matched
    np.testing.assert_array_equal(plan[0], plan[3])


def test_tiny_boxes():
    """Boxes smaller than a stride: some contain no anchor point (every cost carries the 1e6
    penalty; k = 1 anyway), some one or a few."""
    pred, cls, obj, _, _ = random_case(10, 1)
    tiny = np.array([[21.0, 21.0, 2.0, 2.0], [44.0, 44.0, 3.0, 3.0], [100.5, 60.5, 1.5, 1.0],
                     [12.0, 12.0, 9.0, 9.0], [140.0, 100.0, 0.5, 0.5]], np.float32)
    a, _, o = compare(pred, cls, obj, tiny, np.arange(5, dtype=np.int32) % NUM_CLASSES,
                      [0, 1, 2, 3, 5])
    assert (o["is_in"].sum(1) == 0).any() and (o["k"] == 1).all()


def test_more_gts_than_candidates():
    """Six overlapping small gts share two in-region anchors: sum of k exceeds the candidates."""
    pred, cls, obj, _, _ = random_case(11, 1)
    crowd = np.array([[60, 60, 10, 10]] * 3 + [[61, 59, 11, 9], [59, 61, 9, 11], [62, 60, 12, 12]],
                     np.float32)
    a, _, o = compare(pred, cls, obj, crowd, np.array([0, 1, 2, 3, 4, 0], np.int32))
    assert o["k"].sum() > o["is_in"].any(0).sum()


def test_junk_padding_equals_clean_padding():
    pred, cls, obj, gts, gcls = random_case(12, 3)
    slots = [1, 2, 4]
    ref = None
    for junk in ("zero", "nan", "huge", "negative"):
        a, plan = _jit()(pred, cls, obj, GRID, STRIDES, *pad(gts, gcls, slots, junk))
        out = [np.asarray(x) for x in a if x is not None] + [np.asarray(plan)]
        if ref is None:
            ref = out
        else:
            for x, y in zip(ref, out):
                np.testing.assert_array_equal(x, y)


def test_obj_logits_not_needed_for_cls_score():
    pred, cls, obj, gts, gcls = random_case(13, 3)
    gb, gc, gm = pad(gts, gcls, [0, 1, 2])
    a1, p1 = _jit()(pred, cls, obj, GRID, STRIDES, gb, gc, gm)
    a2, p2 = _jit()(pred, cls, None, GRID, STRIDES, gb, gc, gm)
    np.testing.assert_array_equal(np.asarray(a1.matched_gt), np.asarray(a2.matched_gt))
    np.testing.assert_array_equal(np.asarray(p1), np.asarray(p2))


def test_vmap_and_gradient():
    """Batched (vmap) results equal the per-image ones; the plan is differentiable."""
    cases = [random_case(s, 3) for s in (14, 15)]
    padded = [pad(c[3], c[4], [0, 2, 5]) for c in cases]
    stack = lambda i, src: np.stack([x[i] for x in src])                 # noqa: E731
    fn = jax.jit(jax.vmap(functools.partial(ota, cost="ota"),
                          in_axes=(0, 0, 0, None, None, 0, 0, 0)))
    a, plan = fn(stack(0, cases), stack(1, cases), stack(2, cases), GRID, STRIDES,
                 stack(0, padded), stack(1, padded), stack(2, padded))
    for i, (c, p) in enumerate(zip(cases, padded)):
        a1, plan1 = _jit()(c[0], c[1], c[2], GRID, STRIDES, *p)
        np.testing.assert_array_equal(np.asarray(a.matched_gt)[i], np.asarray(a1.matched_gt))
        np.testing.assert_array_equal(np.asarray(a.fg_mask)[i], np.asarray(a1.fg_mask))
        np.testing.assert_allclose(np.asarray(plan)[i], np.asarray(plan1), atol=PLAN_ATOL)

    pred, cls, obj, _, _ = cases[0]
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(PAD_G + 1, NUM_ANCHORS)),
                          jnp.float32)

    def f(pred, cls):
        _, plan = ota(pred, cls, None, GRID, STRIDES, *padded[0], cost="ota", num_iters=10)
        return jnp.sum(plan * weights)

    grads = jax.jit(jax.grad(f, argnums=(0, 1)))(pred, cls)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    assert max(float(np.abs(np.asarray(g)).max()) for g in grads) > 0

"""Gt buckets (``yolox_jax.assign._buckets``): every built-in assigner gives the same assignment
whether it runs on all padded gt rows or on the bucket that holds the batch's valid rows, with
valid rows scattered among junk padding rows. OTA's anchor compaction gives the dense plan."""
import functools

import jax
import numpy as np
import pytest

from yolox_jax.assign._buckets import bucket_sizes
from yolox_jax.assign.registry import get_assigner
from yolox_jax.ops.anchors import anchor_grid

HW = (64, 96)                     # levels 8x12, 4x6, 2x3: A = 126
C = 4
G = 12
B = 3
BUCKETS = (2, 5)                  # with G: three branches
GRID, STRIDES = (np.asarray(x) for x in anchor_grid(HW))
A = len(STRIDES)
NAMES = ("tal", "atss", "dsl", "ota")


def batch(rng, counts, hw=HW, min_side=6.0):
    """Predictions around the anchors; per image ``counts[i]`` valid gts at random rows, the
    other rows junk (NaN, huge or negative boxes, out-of-range classes)."""
    grid, strides = (np.asarray(x) for x in anchor_grid(hw))
    a = len(strides)
    raw = rng.normal(0.0, 0.5, (B, a, 4)).astype(np.float32)
    pred = np.concatenate([(raw[..., :2] + 0.5 + grid) * strides[:, None],
                           np.exp(raw[..., 2:] + 1.0) * strides[:, None]], -1).astype(np.float32)
    cls = rng.normal(-2.0, 1.5, (B, a, C)).astype(np.float32)
    obj = rng.normal(-2.0, 1.5, (B, a)).astype(np.float32)
    junk = np.array([[np.nan, 1.0, 5.0, 5.0], [1e30, 1e30, 1e30, 1e30], [10.0, 10.0, -4.0, 6.0]],
                    np.float32)
    gtb = junk[rng.integers(0, len(junk), (B, G))]
    gtc = rng.integers(C, 3 * C, (B, G)).astype(np.int32)
    gtm = np.zeros((B, G), bool)
    for i, n in enumerate(counts):
        rows = rng.choice(G, n, replace=False)
        gtm[i, rows] = True
        gtb[i, rows, :2] = rng.uniform(4, [hw[1] - 4, hw[0] - 4], (n, 2))
        gtb[i, rows, 2:] = rng.uniform(min_side, 40, (n, 2))
        gtc[i, rows] = rng.integers(0, C, n)
    return pred, cls, obj, gtb, gtc, gtm


@functools.lru_cache(maxsize=None)
def jitted(name, buckets):
    fn = get_assigner(name)
    extra = {"num_iters": 10} if name == "ota" else {}
    return jax.jit(lambda p, c, o, gb, gc, gm: fn(p, c, o, GRID, STRIDES, gb, gc, gm,
                                                 gt_buckets=buckets, **extra))


def test_bucket_sizes_end_with_the_padded_count():
    assert bucket_sizes((8, 32), 120) == [8, 32, 120]
    assert bucket_sizes((32, 8, 200, 0), 30) == [8, 30]
    assert bucket_sizes((), 16) == [16]


@pytest.mark.parametrize("name", NAMES)
def test_buckets_give_the_unbucketed_assignment(name):
    rng = np.random.default_rng(3)
    # Largest count per batch picks the branch: 2 (first), 4 (second), 9 (all rows), 0 (none).
    for counts in ((2, 0, 1), (4, 3, 2), (9, 1, 6), (0, 0, 0)):
        case = batch(rng, counts)
        full = jax.tree_util.tree_map(np.asarray, jitted(name, ())(*case))
        fast = jax.tree_util.tree_map(np.asarray, jitted(name, BUCKETS)(*case))
        np.testing.assert_array_equal(fast.fg_mask, full.fg_mask, err_msg=f"{name} {counts}")
        np.testing.assert_array_equal(fast.matched_gt, full.matched_gt)
        np.testing.assert_array_equal(fast.matched_class, full.matched_class)
        np.testing.assert_array_equal(fast.dynamic_k, full.dynamic_k)
        np.testing.assert_array_equal(fast.num_fg, full.num_fg)
        for field in ("matched_iou", "quality", "weight", "max_iou"):
            a, b = getattr(fast, field), getattr(full, field)
            if b is None:
                assert a is None
            else:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=field)
        # Matches point at valid rows of the caller's order.
        fg = full.fg_mask
        assert case[5][np.nonzero(fg)[0], full.matched_gt[fg]].all()
        if any(counts):
            assert fg.any()


HW_C = (128, 160)                 # A = 420: compaction applies in every bucket of these cases
GRID_C, STRIDES_C = (np.asarray(x) for x in anchor_grid(HW_C))


@functools.lru_cache(maxsize=None)
def ota_jitted(name, compact, cost):
    fn = get_assigner(name)
    return jax.jit(lambda p, c, o, gb, gc, gm: fn(p, c, o, GRID_C, STRIDES_C, gb, gc, gm,
                                                 gt_buckets=BUCKETS, compact=compact, cost=cost,
                                                 num_iters=10))


@pytest.mark.parametrize("name,cost", [("ota", "simota"), ("ota", "ota"), ("ota_soft", "simota")])
def test_ota_on_candidate_anchors_equals_dense(name, cost):
    from yolox_jax.assign._ota import resolve_options
    from yolox_jax.assign._ota_batch import _OPTION_DEFAULTS, _fits, slots_per_gt

    o = resolve_options(**{**_OPTION_DEFAULTS, "cost": cost})
    per_gt = slots_per_gt(STRIDES_C, o)
    assert per_gt == (27 if cost == "simota" else 75)
    rng = np.random.default_rng(5)
    # Boxes of 10 px and more hold an anchor point of stride 8 in each region; the last case has
    # a 3 px box, whose official OTA region is empty: that batch must take the dense path.
    for counts, tiny in (((2, 1, 0), False), ((5, 4, 3), False), ((12, 7, 9), False),
                         ((3, 2, 1), True)):
        case = batch(rng, counts, HW_C, min_side=10.0)
        if tiny:
            case[3][0, np.nonzero(case[5][0])[0][0], 2:] = 3.0
        g = 2 if max(counts) <= 2 else 5 if max(counts) <= 5 else G
        order = np.argsort(~case[5], axis=1, kind="stable")[:, :g]
        boxes = np.take_along_axis(np.nan_to_num(case[3]), order[..., None], axis=1)
        mask = np.take_along_axis(case[5], order, axis=1)
        if per_gt * g < len(STRIDES_C):   # which path the batch takes
            fits = bool(_fits(per_gt * g, o, GRID_C, STRIDES_C, boxes, mask))
            assert fits == (not (tiny and cost == "ota")), counts
        dense = jax.tree_util.tree_map(np.asarray, ota_jitted(name, False, cost)(*case))
        fast = jax.tree_util.tree_map(np.asarray, ota_jitted(name, True, cost)(*case))
        np.testing.assert_array_equal(fast.fg_mask, dense.fg_mask, err_msg=f"{counts}")
        np.testing.assert_array_equal(fast.matched_gt, dense.matched_gt)
        np.testing.assert_array_equal(fast.dynamic_k, dense.dynamic_k)
        np.testing.assert_array_equal(fast.candidate_mask, dense.candidate_mask)
        for field in ("matched_iou", "quality", "weight", "max_iou"):
            a, b = getattr(fast, field), getattr(dense, field)
            if b is not None:
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=field)
        assert dense.fg_mask.sum() > 0


def test_ota_soft_gradient_on_candidate_anchors_equals_dense():
    fn = get_assigner("ota_soft")
    rng = np.random.default_rng(6)
    pred, cls, obj, gtb, gtc, gtm = batch(rng, (3, 2, 4), HW_C)

    def loss(compact):
        def f(cls, obj):
            out = fn(pred, cls, obj, GRID_C, STRIDES_C, gtb, gtc, gtm, gt_buckets=BUCKETS,
                     compact=compact, num_iters=10, weight_grad=True)
            return (out.weight ** 2).sum() + out.quality.sum()
        return jax.jit(jax.grad(f, argnums=(0, 1)))(cls, obj)

    dense, fast = loss(False), loss(True)
    for d, f in zip(dense, fast):
        assert np.abs(np.asarray(d)).max() > 0
        np.testing.assert_allclose(np.asarray(f), np.asarray(d), rtol=1e-3, atol=1e-5)

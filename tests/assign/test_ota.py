"""OTA (Sinkhorn) assignment: agreement with SimOTA on an easy case, marginals, gradients, vmap."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax.assign import ota, simota
from yolox_jax.ops.anchors import anchor_grid

HW = (128, 160)          # 320 + 80 + 20 = 420 anchors
NUM_CLASSES = 5
PAD_G = 6


@functools.lru_cache(maxsize=None)
def _jit(fn, options=()):
    return jax.jit(functools.partial(fn, **dict(options)))


def easy_problem(seed=0):
    """Well-separated objects; 5 anchors per gt predict it almost perfectly with a confident
    class, the other in-region anchors predict tiny boxes with low scores, so that dynamic k is
    exactly 5 and the 5 good anchors are far cheaper than the rest."""
    rng = np.random.default_rng(seed)
    grid_xy, strides = (np.asarray(x) for x in anchor_grid(HW))
    a = len(strides)
    centres = (grid_xy + 0.5) * strides[:, None]
    pred = np.concatenate([centres, strides[:, None].repeat(2, 1)], 1).astype(np.float32)
    cls = np.full((a, NUM_CLASSES), -6.0, np.float32)
    obj = np.full((a,), -6.0, np.float32)
    gts = np.array([[30, 30, 40, 36], [110, 90, 56, 48], [130, 24, 24, 30]], np.float32)
    gcls = np.array([1, 3, 0], np.int32)
    for box, c in zip(gts, gcls):
        dist = np.abs(centres - box[:2]).max(1) / strides
        region = np.nonzero(dist < 1.5)[0]
        good = region[np.argsort(dist[region], kind="stable")[:5]]
        bad = np.setdiff1d(region, good)
        pred[bad] = np.concatenate([box[:2], box[2:] * 0.3])
        pred[good] = box * (1 + rng.uniform(-0.01, 0.01, (len(good), 4)))
        cls[good, c] = 4.0
        obj[good] = 4.0
    gt_boxes = np.zeros((PAD_G, 4), np.float32)
    gt_boxes[3:] = np.nan                                         # junk behind the mask
    gt_boxes[:3] = gts
    gt_classes = np.zeros(PAD_G, np.int32)
    gt_classes[:3] = gcls
    gt_mask = np.arange(PAD_G) < 3
    return pred, cls, obj, grid_xy, strides, gt_boxes, gt_classes, gt_mask


def test_easy_case_foreground_matches_simota():
    args = easy_problem()
    s = _jit(simota)(*args)
    o, plan = _jit(ota)(*args)
    assert np.asarray(s.dynamic_k)[:3].tolist() == [5, 5, 5]
    np.testing.assert_array_equal(np.asarray(o.fg_mask), np.asarray(s.fg_mask))
    fg = np.asarray(s.fg_mask)
    np.testing.assert_array_equal(np.asarray(o.matched_gt)[fg], np.asarray(s.matched_gt)[fg])
    np.testing.assert_allclose(np.asarray(o.matched_iou), np.asarray(s.matched_iou), atol=1e-6)
    assert int(o.num_fg) == 15


def test_plan_marginals_and_padded_suppliers():
    args = easy_problem()
    o, plan = _jit(ota)(*args)
    plan = np.asarray(plan)
    a = plan.shape[1]
    assert plan.shape == (PAD_G + 1, a) and np.isfinite(plan).all()
    np.testing.assert_allclose(plan.sum(0), 1.0, atol=1e-3)               # demand 1 per anchor
    np.testing.assert_allclose(plan.sum(1)[:3], 5.0, atol=1e-2)           # supply = dynamic k
    assert np.abs(plan[3:PAD_G]).max() == 0.0                             # padded gts: nothing
    np.testing.assert_allclose(plan[-1].sum(), a - 15, atol=1e-1)         # background takes the rest


def test_gradient_of_plan_is_finite_and_nonzero():
    pred, cls, obj, grid_xy, strides, gtb, gtc, gtm = easy_problem()
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(PAD_G + 1, len(strides))),
                          jnp.float32)

    def f(pred, cls, obj):
        _, plan = ota(pred, cls, obj, grid_xy, strides, gtb, gtc, gtm, num_iters=20)
        return jnp.sum(plan * weights)

    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(pred, cls, obj)
    for g in grads:
        g = np.asarray(g)
        assert np.isfinite(g).all()
    assert max(float(np.abs(g).max()) for g in grads) > 0


def test_soft_center_prior_and_vmap():
    pred, cls, obj, grid_xy, strides, gtb, gtc, gtm = easy_problem()
    gtm_none = np.zeros_like(gtm)
    batch = [np.stack([x, x]) for x in (pred, cls, obj)]
    fn = jax.jit(jax.vmap(functools.partial(ota, center_prior=5.0),
                          in_axes=(0, 0, 0, None, None, 0, 0, 0)))
    o, plan = fn(*batch, grid_xy, strides, np.stack([gtb, gtb]), np.stack([gtc, gtc]),
                 np.stack([gtm, gtm_none]))
    assert np.isfinite(np.asarray(plan)).all()
    assert int(o.num_fg[0]) == 15                          # still the 5 good anchors per gt
    assert int(o.num_fg[1]) == 0                           # image without gts: all background


@pytest.mark.parametrize("eps", [0.05, 0.5])
def test_epsilon_keeps_easy_assignment(eps):
    args = easy_problem(seed=2)
    o, _ = _jit(ota, (("epsilon", eps),))(*args)
    s = _jit(simota)(*args)
    np.testing.assert_array_equal(np.asarray(o.fg_mask), np.asarray(s.fg_mask))

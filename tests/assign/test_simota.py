"""SimOTA: official reference cases, NumPy oracle, edge cases, options, batching and memory."""
import functools
import sys
from functools import partial
from pathlib import Path

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax.assign import Assignment, simota
from yolox_jax.ops.anchors import anchor_grid

sys.path.insert(0, str(Path(__file__).parent))
from simota_oracle import simota_numpy  # noqa: E402

PAD_G = 128
IN_AXES = (0, 0, 0, None, None, 0, 0, 0)


@functools.lru_cache(maxsize=None)
def _jitted(options):
    return jax.jit(partial(simota, **dict(options)))


def jsimota(*args, **options):
    """``simota`` under a cached jit (eager op-by-op dispatch is much slower on a busy CPU)."""
    return _jitted(tuple(sorted(options.items())))(*args)


def _junk_padded(gt_boxes, gt_classes, pad, rng):
    """Pad gts to ``pad`` rows of garbage (NaN, +-1e30, negative sizes, bad classes) + mask."""
    g = len(gt_boxes)
    boxes = rng.normal(size=(pad, 4)).astype(np.float32) * 1e30
    boxes[::3] = np.nan
    boxes[1::5] = np.array([100.0, 100.0, -50.0, 0.0], np.float32)
    classes = rng.integers(-1000, 1000, pad).astype(np.int32)
    boxes[:g], classes[:g] = gt_boxes, gt_classes
    mask = np.zeros(pad, bool)
    mask[:g] = True
    return boxes, classes, mask


@pytest.mark.parametrize("case", range(8))
def test_matches_official_reference_cases_with_junk_padding(simota_ref, case):
    r = {k.split("/", 1)[1]: v for k, v in simota_ref.items() if k.startswith(f"case{case}/")}
    rng = np.random.default_rng(case)
    gt_boxes, gt_classes, gt_mask = _junk_padded(r["gt_boxes_cxcywh"], r["gt_classes"], PAD_G, rng)
    grid_xy = np.stack([r["x_shifts"], r["y_shifts"]], -1)
    out = jsimota(r["pred_boxes_cxcywh"], r["cls_logits"], r["obj_logits"], grid_xy,
                          r["strides"], gt_boxes, gt_classes, gt_mask)
    fg = np.asarray(out.fg_mask)
    np.testing.assert_array_equal(fg, r["fg_mask"])
    assert int(out.num_fg) == int(r["num_fg"])
    np.testing.assert_array_equal(np.asarray(out.matched_gt)[fg], r["matched_gt_inds"])
    np.testing.assert_array_equal(np.asarray(out.matched_class)[fg], r["gt_matched_classes"])
    np.testing.assert_allclose(np.asarray(out.matched_iou)[fg], r["pred_ious_this_matching"],
                               atol=1e-5, rtol=0)
    assert np.all(np.asarray(out.matched_iou)[~fg] == 0)


# --------------------------------------------------------------------------------------------
# Random problems vs the NumPy oracle.

HW = (64, 96)            # 96 + 24 + 6 = 126 anchors
NUM_CLASSES = 5
MAX_G = 12


def _random_problem(rng, num_gt, hw=HW, num_classes=NUM_CLASSES, tiny=False):
    grid_xy, strides = (np.asarray(x) for x in anchor_grid(hw))
    a = len(strides)
    centres = (grid_xy + 0.5) * strides[:, None]
    # Predictions around their anchor with random sizes; continuous values => no exact ties.
    pred = np.concatenate([centres + rng.normal(0, 1, (a, 2)) * strides[:, None],
                           np.exp(rng.normal(0, 0.7, (a, 2))) * strides[:, None] * 2], 1)
    cls_logits = rng.normal(0, 2, (a, num_classes))
    obj_logits = rng.normal(0, 2, a)
    h, w = hw
    wh = rng.uniform(0.3, 4, (num_gt, 2)) if tiny else rng.uniform(4, 0.8 * min(h, w), (num_gt, 2))
    cxy = rng.uniform(0, 1, (num_gt, 2)) * np.array([w, h])
    gts = np.concatenate([cxy, wh], 1)
    gcls = rng.integers(0, num_classes, num_gt)
    f32 = np.float32
    return (pred.astype(f32), cls_logits.astype(f32), obj_logits.astype(f32), grid_xy, strides,
            gts.astype(f32), gcls.astype(np.int32))


def _check_against_oracle(problems, pad=MAX_G, **options):
    """Run all problems as one vmapped batch and compare each image with the oracle."""
    rng = np.random.default_rng(123)
    batch = {k: [] for k in ("pred", "cls", "obj", "gtb", "gtc", "gtm")}
    for pred, cls, obj, grid_xy, strides, gts, gcls in problems:
        gtb, gtc, gtm = _junk_padded(gts, gcls, pad, rng)
        for k, v in zip(batch, (pred, cls, obj, gtb, gtc, gtm)):
            batch[k].append(v)
    stacked = [np.stack(v) for v in batch.values()]
    fn = jax.jit(jax.vmap(partial(simota, **options), in_axes=IN_AXES))
    out = fn(*stacked[:3], grid_xy, strides, *stacked[3:])
    for i, (pred, cls, obj, grid_xy, strides, gts, gcls) in enumerate(problems):
        fg_ref, gt_ref, iou_ref = simota_numpy(pred, cls, obj, grid_xy, strides, gts, gcls, **options)
        fg = np.asarray(out.fg_mask[i])
        np.testing.assert_array_equal(fg, fg_ref, err_msg=f"problem {i}")
        np.testing.assert_array_equal(np.asarray(out.matched_gt[i])[fg], gt_ref[fg_ref],
                                      err_msg=f"problem {i}")
        np.testing.assert_allclose(np.asarray(out.matched_iou[i]), iou_ref, atol=1e-5, rtol=0)
        assert int(out.num_fg[i]) == fg_ref.sum()
    return out


def test_random_problems_match_numpy_oracle():
    rng = np.random.default_rng(0)
    problems = [_random_problem(rng, int(rng.integers(0, MAX_G + 1))) for _ in range(150)]
    _check_against_oracle(problems)


@pytest.mark.parametrize("options", [
    {"candidate_rule": "box_or_center"},
    {"candidate_rule": "box_or_center", "center_radius": 1.0},
    {"center_radius": 2.5},
    {"soft_center_prior": 5.0},
    {"topk_iou": 20, "k_rounding": "round"},
    {"topk_iou": 3},
])
def test_options_match_numpy_oracle(options):
    rng = np.random.default_rng(1)
    problems = [_random_problem(rng, int(rng.integers(1, MAX_G + 1))) for _ in range(40)]
    _check_against_oracle(problems, **options)


def test_edge_cases_match_oracle():
    """No gts, duplicate gts, tiny boxes, a gt without any candidate anchor, many (>100) gts."""
    rng = np.random.default_rng(2)
    problems = []
    p = _random_problem(rng, 0)
    problems.append(p)                                                # no gts
    pred, cls, obj, grid_xy, strides, gts, gcls = _random_problem(rng, 3)
    problems.append((pred, cls, obj, grid_xy, strides, np.concatenate([gts, gts[:2]]),
                     np.concatenate([gcls, gcls[:2]])))               # duplicate gts
    problems.append(_random_problem(rng, 6, tiny=True))               # tiny boxes
    pred, cls, obj, grid_xy, strides, gts, gcls = _random_problem(rng, 3)
    far = np.array([[-500.0, -500.0, 30.0, 30.0]], np.float32)        # centre region holds no anchor
    problems.append((pred, cls, obj, grid_xy, strides, np.concatenate([gts, far]),
                     np.concatenate([gcls, [1]]).astype(np.int32)))
    out = _check_against_oracle(problems)
    assert int(out.num_fg[0]) == 0 and not np.asarray(out.fg_mask[0]).any()
    assert np.asarray(out.max_iou[0]).max() == 0
    # Duplicates: the first copy wins every conflict (argmin takes the first minimum).
    fg = np.asarray(out.fg_mask[1])
    assert not np.isin(np.asarray(out.matched_gt[1])[fg], [3, 4]).any()

    many = [_random_problem(rng, 150, hw=(128, 160), num_classes=3) for _ in range(2)]
    _check_against_oracle(many, pad=160)


def test_no_candidate_anywhere_gives_no_foreground():
    """Official code would crash (topk on an empty set); we return an empty assignment."""
    rng = np.random.default_rng(3)
    pred, cls, obj, grid_xy, strides, _, _ = _random_problem(rng, 0)
    gts = np.array([[-500.0, -500.0, 30.0, 30.0], [900.0, 50.0, 10.0, 10.0]], np.float32)
    out = jsimota(pred, cls, obj, grid_xy, strides, gts, np.array([0, 1]), np.array([True, True]))
    assert int(out.num_fg) == 0
    assert np.asarray(out.dynamic_k).tolist() == [1, 1]


def test_soft_prior_allows_out_of_region_anchor():
    """With a soft centre prior a gt far from every anchor still gets the anchor nearest to it."""
    rng = np.random.default_rng(4)
    pred, cls, obj, grid_xy, strides, _, _ = _random_problem(rng, 0)
    gts = np.array([[-40.0, 30.0, 20.0, 20.0]], np.float32)
    pred[0] = gts[0]                                 # a perfect prediction, but at anchor 0
    args = (pred, cls, obj, grid_xy, strides, gts, np.array([0]), np.array([True]))
    assert int(jsimota(*args).num_fg) == 0
    soft = jsimota(*args, soft_center_prior=2.0)
    assert bool(soft.fg_mask[0]) and int(soft.num_fg) >= 1


def test_topk_and_rounding_change_dynamic_k():
    rng = np.random.default_rng(5)
    pred, cls, obj, grid_xy, strides, gts, gcls = _random_problem(rng, 4)
    m = np.ones(4, bool)
    args = (pred, cls, obj, grid_xy, strides, gts, gcls, m)
    k10 = np.asarray(jsimota(*args).dynamic_k)
    k20 = np.asarray(jsimota(*args, topk_iou=20).dynamic_k)
    kr = np.asarray(jsimota(*args, k_rounding="round").dynamic_k)
    assert (k20 >= k10).all() and (kr >= k10).all() and (kr <= k10 + 1).all()
    assert (k10 >= 1).all()


def test_assignment_is_constant_for_autodiff():
    rng = np.random.default_rng(6)
    pred, cls, obj, grid_xy, strides, gts, gcls = _random_problem(rng, 3)
    m = np.ones(3, bool)

    def f(pred, cls, obj):
        return jnp.sum(simota(pred, cls, obj, grid_xy, strides, gts, gcls, m).matched_iou)

    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(pred, cls, obj)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in grads)


# --------------------------------------------------------------------------------------------
# Batching and memory.

def _iter_avals(jaxpr):
    for eqn in jaxpr.eqns:
        for v in list(eqn.outvars) + [x for x in eqn.invars if hasattr(x, "aval")]:
            yield v.aval
        for p in eqn.params.values():
            subs = p if isinstance(p, (list, tuple)) else [p]
            for s in subs:
                inner = getattr(s, "jaxpr", s)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    yield from _iter_avals(inner)


def test_vmapped_jaxpr_has_no_gac_intermediate():
    """Prove the memory claim: no array with G * A * C elements or more exists in the graph."""
    b, g, c = 2, 7, 80
    rng = np.random.default_rng(7)
    grid_xy, strides = anchor_grid(HW)
    a = grid_xy.shape[0]
    fn = jax.vmap(simota, in_axes=IN_AXES)
    args = (np.zeros((b, a, 4), np.float32), np.zeros((b, a, c), np.float32),
            np.zeros((b, a), np.float32), grid_xy, strides,
            rng.uniform(10, 50, (b, g, 4)).astype(np.float32), np.zeros((b, g), np.int32),
            np.ones((b, g), bool))
    closed = jax.make_jaxpr(jax.jit(fn))(*args)
    sizes = [int(np.prod(av.shape)) for av in _iter_avals(closed.jaxpr) if hasattr(av, "shape")]
    assert max(sizes) >= b * a * c            # the inputs are there, so the walk works
    assert max(sizes) < g * a * c, max(sizes)


def test_jit_vmap_batch_equals_per_image():
    rng = np.random.default_rng(8)
    problems = [_random_problem(rng, n) for n in (0, 2, 5, 9)]
    pad = 10
    rows = [_junk_padded(p[5], p[6], pad, rng) for p in problems]
    stack = lambda i: np.stack([p[i] for p in problems])  # noqa: E731
    grid_xy, strides = problems[0][3], problems[0][4]
    batched = jax.jit(jax.vmap(simota, in_axes=IN_AXES))(
        stack(0), stack(1), stack(2), grid_xy, strides, *(np.stack(x) for x in zip(*rows)))
    assert isinstance(batched, Assignment)
    for i, p in enumerate(problems):
        single = jsimota(p[0], p[1], p[2], grid_xy, strides, *rows[i])
        for name, x in single._asdict().items():
            if x is None:  # quality, weight: SimOTA has none
                assert getattr(batched, name) is None
                continue
            # jit fuses float ops differently from eager: floats agree to rounding, the rest exactly.
            np.testing.assert_allclose(np.asarray(getattr(batched, name)[i]), np.asarray(x),
                                       rtol=1e-6, atol=1e-7, err_msg=name)


# --------------------------------------------------------------------------------------------
# Fast-path helpers (two-level top-k, argmin without variadic reduce) equal the plain primitives.

@pytest.mark.parametrize("n,k,block", [(8400, 10, None), (1000, 10, 7), (126, 3, None),
                                       (300, 20, 16), (64, 10, None)])
def test_top_k_last_equals_lax_top_k_with_ties_inf_nan(n, k, block):
    from yolox_jax.assign._simota import top_k_last

    rng = np.random.default_rng(n + k)
    x = rng.normal(size=(6, n)).astype(np.float32)
    x[0] = np.round(x[0])                   # massive ties
    x[1, ::3] = -np.inf
    x[2, :] = -np.inf
    x[2, n // 2] = 1.0                      # fewer finite values than k
    x[3, 5::17] = np.nan
    x[3, 7::19] = -np.nan
    x[4, :] = 0.0
    x[4, ::2] = -0.0
    x[5] = -x[5]
    ref_v, ref_i = jax.lax.top_k(jnp.asarray(x), k)
    # Second level gathered from x, and read from ``at`` (x's values at given indices: here the
    # same array gathered along the last axis, as an assigner recomputes them from its inputs).
    v, i, v_at, i_at = jax.jit(lambda a: (
        *top_k_last(a, k, block),
        *top_k_last(a, k, block, at=lambda idx: jnp.take_along_axis(a, idx, axis=-1))))(x)
    # The column form: the same rows stored down the columns of x.T ([n, 6]).
    c, ci, c_at, ci_at = jax.jit(lambda a: (
        *top_k_last(a.T, k, block, columns=True),
        *top_k_last(a.T, k, block, columns=True,
                    at=lambda idx: jnp.take_along_axis(a, idx, axis=-1))))(x)
    for got_v, got_i in ((v, i), (v_at, i_at), (c, ci), (c_at, ci_at)):
        np.testing.assert_array_equal(np.asarray(got_i), np.asarray(ref_i))
        np.testing.assert_array_equal(np.asarray(got_v).view(np.int32),
                                      np.asarray(ref_v).view(np.int32))


def test_first_argmin_and_pick_resolution_equal_dense_versions():
    from yolox_jax.assign import _simota

    # Each function jitted whole: one compile each instead of one per primitive.
    first_argmin = jax.jit(_simota.first_argmin, static_argnames="axis")
    lowest_cost_picks = jax.jit(_simota.lowest_cost_picks, static_argnums=2)
    resolve_conflicts, resolve_picks = jax.jit(_simota.resolve_conflicts), jax.jit(_simota.resolve_picks)
    select_lowest_cost = jax.jit(_simota.select_lowest_cost, static_argnums=2)

    rng = np.random.default_rng(11)
    cost = np.round(rng.normal(size=(9, 500)) * 2).astype(np.float32)   # many ties
    cost[:, ::7] = np.inf
    cost[3, 40:60] = np.nan
    np.testing.assert_array_equal(np.asarray(first_argmin(jnp.asarray(cost), axis=0)),
                                  np.asarray(jnp.argmin(jnp.asarray(cost), axis=0)))
    cost[3, 40:60] = 0.5
    k = rng.integers(0, 11, 9).astype(np.int32)
    idx, take = lowest_cost_picks(jnp.asarray(cost), jnp.asarray(k), 10)
    fg, matched = resolve_picks(idx, take, jnp.asarray(cost))
    matching = select_lowest_cost(jnp.asarray(cost), jnp.asarray(k), 10)
    fg_ref = np.asarray(matching).any(0)
    count = np.asarray(matching).sum(0)
    ref = np.where(count > 1, np.argmin(cost, 0), np.argmax(np.asarray(matching), 0))
    np.testing.assert_array_equal(np.asarray(fg), fg_ref)
    np.testing.assert_array_equal(np.asarray(matched), np.where(fg_ref, ref, 0))
    fg2, matched2 = resolve_conflicts(matching, jnp.asarray(cost))
    np.testing.assert_array_equal(np.asarray(fg2), fg_ref)
    np.testing.assert_array_equal(np.asarray(matched2), np.asarray(matched))


# --------------------------------------------------------------------------------------------
# simota_batch: gt buckets + anchor compaction must give exactly jax.vmap(simota).

def _batch_problems(rng, counts, pad, hw=HW, interleave=True):
    """Stack problems with ``counts`` valid gts each; valid rows scattered among junk rows."""
    problems = [_random_problem(rng, n, hw=hw) for n in counts]
    cols = {k: [] for k in ("pred", "cls", "obj", "gtb", "gtc", "gtm")}
    for pred, cls, obj, _, _, gts, gcls in problems:
        gtb, gtc, gtm = _junk_padded(gts, gcls, pad, rng)
        if interleave:
            order = rng.permutation(pad)
            gtb, gtc, gtm = gtb[order], gtc[order], gtm[order]
        for k, v in zip(cols, (pred, cls, obj, gtb, gtc, gtm)):
            cols[k].append(v)
    grid_xy, strides = problems[0][3], problems[0][4]
    s = {k: np.stack(v) for k, v in cols.items()}
    return (s["pred"], s["cls"], s["obj"], grid_xy, strides, s["gtb"], s["gtc"], s["gtm"])


def _assert_same_assignment(a, b):
    """Decisions (masks, indices, counts, k) identical; IoUs to float rounding (different fusion)."""
    for name in Assignment._fields:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


# One jitted function per (assigner, options) for the batch tests below, so that the cases of
# one shape share their compiled programs.
@functools.lru_cache(maxsize=None)
def _vmapped(options=()):
    return jax.jit(jax.vmap(partial(simota, **dict(options)), in_axes=IN_AXES))


@functools.lru_cache(maxsize=None)
def _batched(options=()):
    from yolox_jax.assign import simota_batch

    return jax.jit(partial(simota_batch, **dict(options)))


@functools.lru_cache(maxsize=None)
def _batched_const_grid(hw, options=()):
    """``simota_batch`` with the anchor grid of an ``hw`` input as a compile-time constant."""
    from yolox_jax.assign import simota_batch

    grid_xy, strides = (np.asarray(x) for x in anchor_grid(hw))
    return jax.jit(lambda p, c, o, b, k, m: simota_batch(p, c, o, grid_xy, strides, b, k, m,
                                                         **dict(options)))


def _key(options):
    return tuple(sorted(options.items()))


def test_window_candidates_equal_margin_test():
    """The per-level window search finds exactly the anchors of the dense centre test, also for
    gts at and beyond the image border, on region edges and with NaN boxes."""
    from yolox_jax.assign._simota import _candidates, _window_candidates, geometry_margins, grid_levels

    rng = np.random.default_rng(21)
    for hw, r in (((64, 96), 1.5), ((128, 160), 2.5), ((96, 64), 0.5), ((64, 64), 1.0)):
        grid_xy, strides = anchor_grid(hw)
        levels = grid_levels(grid_xy, strides)
        assert levels is not None and len(levels) == 3
        n = 300
        boxes = np.concatenate([rng.uniform(-40, max(hw) + 40, (n, 2)),
                                rng.uniform(1, 50, (n, 2))], 1).astype(np.float32)
        boxes[:40, :2] = np.round(boxes[:40, :2] / 4) * 4       # centres on grid / region edges
        boxes[40:50, 0] = np.nan
        mask = rng.uniform(size=n) < 0.8
        any_m = geometry_margins(grid_xy, strides, boxes, candidate_rule="center",
                                 center_radius=r)[1]
        dense = jax.jit(lambda m, k: _candidates(m, k, None))
        window = jax.jit(lambda b, k, levels=levels, r=r: _window_candidates(levels, b, k, r))
        for i in range(0, n, 30):        # small groups, so the union stays informative
            sl = slice(i, i + 30)
            want = dense(any_m[sl], mask[sl])
            got = window(boxes[sl], mask[sl])
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=f"{hw} {r} {i}")
    assert grid_levels(np.zeros((5, 2), np.float32), np.full(5, 8.0, np.float32)) is None


@pytest.mark.parametrize("counts,pad,batch_options", [
    ((0, 2, 5, 3), 12, {}),                                   # bucket 8 of (8, 12)
    ((0, 11, 5, 12), 12, {}),                                 # bucket 12 (= pad)
    ((1, 3, 2, 6), 12, {"candidates_per_gt": 9}),             # compacted to 72 of 126 anchors
    ((4, 7, 8, 2), 12, {"candidates_per_gt": 3}),             # candidates overflow -> dense path
    ((0, 0, 0, 0), 12, {}),                                   # no gt at all
    ((2, 9, 30, 17), 40, {"gt_buckets": (4, 8, 16, 32), "candidates_per_gt": 4}),
])
def test_simota_batch_equals_vmapped_simota(counts, pad, batch_options):
    rng = np.random.default_rng(sum(counts) + pad)
    args = _batch_problems(rng, counts, pad)
    ref = _vmapped()(*args)
    out = _batched(_key(batch_options))(*args)   # traced grid: margin test
    _assert_same_assignment(out, ref)
    pred, cls, obj, _, _, gtb, gtc, gtm = args
    out = _batched_const_grid(HW, _key(batch_options))(pred, cls, obj, gtb, gtc, gtm)   # window test
    _assert_same_assignment(out, ref)
    if any(counts):
        assert int(np.asarray(out.num_fg).sum()) > 0


@pytest.mark.parametrize("options", [
    {"candidate_rule": "box_or_center"},
    {"soft_center_prior": 5.0},
    {"topk_iou": 20, "k_rounding": "round", "iou_weight": 2.0},
    {"center_radius": 2.5},
])
def test_simota_batch_options_equal_vmapped_simota(options):
    """With each option, simota_batch gives the vmapped simota's assignment. Checked on the
    constant grid (the form the loss compiles, with the per-level window search); the traced
    grid's margin test is checked against the vmapped simota in
    test_simota_batch_equals_vmapped_simota."""
    rng = np.random.default_rng(11)
    args = _batch_problems(rng, (3, 7, 1, 12), 12)
    ref = _vmapped(_key(options))(*args)
    pred, cls, obj, _, _, gtb, gtc, gtm = args
    out = _batched_const_grid(HW, _key({"candidates_per_gt": 9, **options}))(
        pred, cls, obj, gtb, gtc, gtm)
    _assert_same_assignment(out, ref)


def test_simota_batch_matches_numpy_oracle_at_640():
    """Full-size anchors (8400) where the default compaction really applies (U = 48 * g)."""
    rng = np.random.default_rng(12)
    hw = (640, 640)
    args = _batch_problems(rng, (25, 3), 40, hw=hw)
    pred, cls, obj, grid_xy, strides, gtb, gtc, gtm = args
    out = _batched_const_grid(hw)(pred, cls, obj, gtb, gtc, gtm)
    for i in range(2):
        fg_ref, gt_ref, iou_ref = simota_numpy(pred[i], cls[i], obj[i], grid_xy, strides,
                                               gtb[i][gtm[i]], gtc[i][gtm[i]])
        fg = np.asarray(out.fg_mask[i])
        np.testing.assert_array_equal(fg, fg_ref)
        # matched_gt indexes the caller's (interleaved) rows.
        rows = np.flatnonzero(gtm[i])
        np.testing.assert_array_equal(np.asarray(out.matched_gt[i])[fg], rows[gt_ref[fg_ref]])
        np.testing.assert_allclose(np.asarray(out.matched_iou[i]), iou_ref, atol=1e-5, rtol=0)
        assert fg.sum() > 0


@pytest.mark.parametrize("case", [0, 5])
def test_simota_batch_on_official_cases(simota_ref, case):
    from yolox_jax.assign import simota_batch

    r = {k.split("/", 1)[1]: v for k, v in simota_ref.items() if k.startswith(f"case{case}/")}
    rng = np.random.default_rng(case)
    gt_boxes, gt_classes, gt_mask = _junk_padded(r["gt_boxes_cxcywh"], r["gt_classes"], PAD_G, rng)
    grid_xy = np.stack([r["x_shifts"], r["y_shifts"]], -1)
    out = jax.jit(simota_batch)(r["pred_boxes_cxcywh"][None], r["cls_logits"][None],
                                r["obj_logits"][None], grid_xy, r["strides"], gt_boxes[None],
                                gt_classes[None], gt_mask[None])
    fg = np.asarray(out.fg_mask[0])
    np.testing.assert_array_equal(fg, r["fg_mask"])
    np.testing.assert_array_equal(np.asarray(out.matched_gt[0])[fg], r["matched_gt_inds"])
    np.testing.assert_allclose(np.asarray(out.matched_iou[0])[fg], r["pred_ious_this_matching"],
                               atol=1e-5, rtol=0)

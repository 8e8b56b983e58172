"""ATSS assigner: NumPy oracle of MMYOLO's BatchATSSAssigner, edge cases, junk padding, options,
concrete and traced anchor grids, jit and memory."""
import functools
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from yolox_jax.assign._atss import atss, default_layout, level_bounds
from yolox_jax.ops.anchors import anchor_grid

sys.path.insert(0, str(Path(__file__).parent))
from atss_oracle import F32, BatchATSSAssigner  # noqa: E402

HW = (128, 160)                       # levels 16x20, 8x10, 4x5: A = 420
C = 5
G = 8
GRID, STRIDES = (np.asarray(x) for x in anchor_grid(HW))
A = len(STRIDES)
POINTS = ((GRID + 0.5) * STRIDES[:, None]).astype(F32)
NUM_LEVEL_PRIORS = [320, 80, 20]


@functools.lru_cache(maxsize=None)
def jitted(traced, options=()):
    """One compiled batched ``atss`` per (grid kind, option set). ``traced``: the grid is a jit
    argument (a device check picks the static level slices or the sort); else it is a NumPy
    constant closed over (static level slices)."""
    fn = functools.partial(atss, **dict(options))
    if traced:
        return jax.jit(fn)
    return jax.jit(lambda p, c, o, b, k, m: fn(p, c, o, GRID, STRIDES, b, k, m))


def run(case, traced=False, strides=STRIDES, **options):
    pred, cls, obj, gtb, gtc, gtm = case
    f = jitted(traced, tuple(sorted(options.items())))
    out = f(pred, cls, obj, GRID, strides, gtb, gtc, gtm) if traced else \
        f(pred, cls, obj, gtb, gtc, gtm)
    return jax.tree_util.tree_map(np.asarray, out)


# ----------------------------------------------------------------------------- cases
def predictions(rng, b, strides=STRIDES):
    """Boxes around their anchor point, random logits (ATSS ignores the scores)."""
    s = strides[:, None]
    centre = (GRID + 0.5) * s + rng.uniform(-0.4, 0.4, (b, A, 2)) * s
    size = s * np.exp(rng.uniform(0.0, np.log(12.0), (b, A, 2)))
    pred = np.concatenate([centre, size], -1).astype(F32)
    cls = rng.normal(0.0, 2.0, (b, A, C)).astype(F32)
    obj = rng.normal(0.0, 2.0, (b, A)).astype(F32)
    return pred, cls, obj


def random_gts(rng, n, scale=1.0):
    """n random cxcywh boxes (random float centres: no equal distances to two anchor points)."""
    cxcy = rng.uniform([0, 0], [HW[1] * scale, HW[0] * scale], (n, 2))
    wh = rng.uniform(4.0, 110.0 * scale, (n, 2))
    return np.concatenate([cxcy, wh], -1).astype(F32), rng.integers(0, C, n).astype(np.int32)


def pack(per_image, rng, junk=False):
    """[(boxes [n, 4], classes [n])] per image -> padded [B, G] arrays, the valid rows at random
    positions; padded rows are zeros, or junk (NaN, +-1e30, negative sizes, bad classes)."""
    b = len(per_image)
    gtb = np.zeros((b, G, 4), F32)
    gtc = np.zeros((b, G), np.int32)
    gtm = np.zeros((b, G), bool)
    for i, (boxes, classes) in enumerate(per_image):
        rows = np.sort(rng.choice(G, len(boxes), replace=False))
        gtb[i, rows], gtc[i, rows], gtm[i, rows] = boxes, classes, True
    if junk:
        junk_b = (rng.normal(size=gtb.shape) * 1e30).astype(F32)
        junk_b[:, ::3] = np.nan
        junk_b[:, 1::4] = [50.0, 60.0, -40.0, -30.0]
        junk_b[:, 2::5] = [80.0, 64.0, 200.0, 200.0]    # a plausible box covering the image
        junk_c = rng.integers(-1000, 1000, gtc.shape).astype(np.int32)
        gtb = np.where(gtm[..., None], gtb, junk_b).astype(F32)
        gtc = np.where(gtm, gtc, junk_c).astype(np.int32)
    return gtb, gtc, gtm


def random_case(seed, b=3, junk=False, strides=STRIDES):
    rng = np.random.default_rng(seed)
    scale = float(strides[0] / STRIDES[0])
    per_image = [random_gts(rng, int(rng.integers(1, G + 1)), scale) for _ in range(b)]
    return (*predictions(rng, b, strides), *pack(per_image, rng, junk))


def edge_case_a(seed=100):
    """No gts / one gt / duplicates (same box twice with the same class, once with another)."""
    rng = np.random.default_rng(seed)
    one = random_gts(rng, 1)
    boxes, classes = random_gts(rng, 2)
    dup = np.array([[61.3, 47.7, 44.1, 38.9]], F32)
    boxes = np.concatenate([dup, boxes[:1], dup, dup, boxes[1:]])
    classes = np.array([2, classes[0], 2, 4, classes[1]], np.int32)
    per_image = [(np.zeros((0, 4), F32), np.zeros(0, np.int32)), one, (boxes, classes)]
    return (*predictions(rng, 3), *pack(per_image, rng, junk=True))


def edge_case_b(seed=200):
    """Tiny gts (under a stride) / crowded: more gts than the anchors inside can serve / a gt over
    the whole image with small ones inside it."""
    rng = np.random.default_rng(seed)
    tiny = np.concatenate([rng.uniform([8, 8], [150, 120], (6, 2)),
                           rng.uniform(1.5, 7.5, (6, 2))], -1).astype(F32)
    tiny[0] = [44.7, 11.1, 4.0, 5.0]       # holds exactly one anchor point, (44, 12) at stride 8
    tiny[1] = [32.13, 31.9, 5.0, 5.2]      # 4 px from the nearest point of every level: none
    crowd = np.concatenate([rng.uniform([40, 40], [48, 48], (G, 2)),
                            rng.uniform(9.0, 30.0, (G, 2))], -1).astype(F32)
    big = np.concatenate([np.array([[80.3, 63.8, 158.0, 126.0]], F32),
                          np.concatenate([rng.uniform([20, 20], [140, 108], (4, 2)),
                                          rng.uniform(10.0, 50.0, (4, 2))], -1)]).astype(F32)
    per_image = [(tiny, rng.integers(0, C, 6)), (crowd, rng.integers(0, C, G)),
                 (big, rng.integers(0, C, 5))]
    return (*predictions(rng, 3), *pack(per_image, rng, junk=True))


# ----------------------------------------------------------------------------- oracle
def xyxy(b):
    return np.concatenate([b[..., :2] - b[..., 2:] / F32(2), b[..., :2] + b[..., 2:] / F32(2)],
                          -1).astype(F32)


def expected(case, topk=9, prior_size=5.0, strides=STRIDES):
    """The oracle on MMYOLO's inputs (valid rows first, zero padding, as
    ``gt_instances_preprocess`` packs them), mapped back to ``Assignment`` fields and the caller's
    gt rows."""
    pred, cls, obj, gtb, gtc, gtm = case
    b = len(pred)
    rows = [np.flatnonzero(m) for m in gtm]
    gt = np.zeros((b, G, 4), F32)
    labels = np.zeros((b, G, 1), np.int64)
    flag = np.zeros((b, G, 1), F32)
    for i, r in enumerate(rows):
        gt[i, :len(r)] = xyxy(gtb[i, r])
        labels[i, :len(r), 0] = gtc[i, r]
        flag[i, :len(r)] = 1
    points = ((GRID + 0.5) * strides[:, None]).astype(F32)
    priors = np.concatenate([points, strides[:, None], strides[:, None]], -1).astype(F32)
    out = BatchATSSAssigner(C, topk=topk, half_size=prior_size / 2)(
        xyxy(pred), priors, NUM_LEVEL_PRIORS, labels, gt, flag)

    fg = out["fg_mask_pre_prior"]
    idx = out["assigned_gt_idxs"]
    label = out["assigned_labels"]
    soft = out["assigned_scores"]
    quality = np.take_along_axis(soft, np.minimum(label, C - 1)[..., None], -1)[..., 0]
    assert np.all(soft.sum(-1) == np.where(fg, quality, 0))  # one class per fg anchor, none else
    iou = np.take_along_axis(out["pred_overlaps"], idx[:, None], 1)[:, 0]
    exp = dict(fg_mask=fg, num_fg=fg.sum(1), matched_gt=np.zeros((b, A), np.int64),
               matched_class=np.where(fg, label, 0), quality=np.where(fg, quality, 0),
               matched_iou=np.where(fg, iou, 0), dynamic_k=np.zeros((b, G), np.int64),
               max_iou=np.zeros((b, A), F32), candidate_mask=np.zeros((b, A), bool),
               multi_claimed=out["multi_claimed"])
    np.testing.assert_allclose(exp["quality"], exp["matched_iou"], rtol=0, atol=1e-7)
    for i, r in enumerate(rows):
        n = len(r)
        exp["matched_gt"][i, fg[i]] = r[idx[i, fg[i]]]
        exp["dynamic_k"][i, r] = out["pos_mask"][i, :n].sum(-1)
        if n:
            exp["max_iou"][i] = out["pred_overlaps"][i, :n].max(0)
            exp["candidate_mask"][i] = out["is_in_candidate"][i, :n].any(0)
    return exp


def assert_matches(got, exp):
    fg = exp["fg_mask"]
    np.testing.assert_array_equal(got.fg_mask, fg)
    np.testing.assert_array_equal(got.num_fg, exp["num_fg"])
    np.testing.assert_array_equal(got.matched_gt, exp["matched_gt"])       # 0 where not fg
    np.testing.assert_array_equal(got.matched_class, exp["matched_class"])
    np.testing.assert_array_equal(got.dynamic_k, exp["dynamic_k"])
    np.testing.assert_array_equal(got.candidate_mask, exp["candidate_mask"])
    np.testing.assert_allclose(got.quality, exp["quality"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.matched_iou, exp["matched_iou"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.max_iou, exp["max_iou"], rtol=0, atol=1e-6)
    assert got.weight is None
    for name in ("fg_mask", "matched_gt", "matched_iou", "matched_class", "max_iou",
                 "candidate_mask", "quality"):
        assert getattr(got, name).shape == fg.shape, name


# ----------------------------------------------------------------------------- tests
def test_level_bounds():
    assert level_bounds(STRIDES) == ((0, 320), (320, 400), (400, 420))
    assert level_bounds(jax.numpy.asarray(STRIDES)) == ((0, 320), (320, 400), (400, 420))
    assert jax.jit(lambda s: (level_bounds(s) is None) + s[0] * 0)(STRIDES) == 1
    bounds, strides = default_layout(A)
    assert bounds == level_bounds(STRIDES) and np.array_equal(strides, STRIDES)
    assert default_layout(A + 1) is None


@pytest.mark.parametrize("traced", [False, True], ids=["static-levels", "traced-levels"])
def test_random_cases_match_oracle(traced):
    conflicts = fg = 0
    for seed in range(4):
        case = random_case(seed)
        exp = expected(case)
        assert_matches(run(case, traced), exp)
        conflicts += int(exp["multi_claimed"].sum())
        fg += int(exp["num_fg"].sum())
    assert conflicts > 0 and fg > 50         # the cases exercise conflicts, not just easy picks


def test_traced_other_strides_take_the_sort_and_match_oracle():
    # Doubled strides on the same grid: A fits the default layout, the device check fails, the
    # sort branch runs.
    strides = (STRIDES * 2).astype(F32)
    for seed in (21, 22):
        case = random_case(seed, strides=strides)
        assert_matches(run(case, True, strides), expected(case, strides=strides))


@pytest.mark.parametrize("traced", [False, True], ids=["static-levels", "traced-levels"])
def test_edge_cases_match_oracle(traced):
    a = expected(edge_case_a())
    assert_matches(run(edge_case_a(), traced), a)
    assert a["num_fg"][0] == 0 and a["num_fg"][1] > 0
    dup_rows = np.flatnonzero(edge_case_a()[5][2])[[0, 2, 3]]   # the duplicated box: rows 0, 2, 3
    assert a["dynamic_k"][2, dup_rows].tolist()[1:] == [0, 0]   # the first row wins every tie
    assert a["dynamic_k"][2, dup_rows[0]] > 0

    b = expected(edge_case_b())
    assert_matches(run(edge_case_b(), traced), b)
    rows_of = [np.flatnonzero(m) for m in edge_case_b()[5]]
    assert b["dynamic_k"][0, rows_of[0][1]] == 0            # tiny gt holding no anchor point
    crowd_k = b["dynamic_k"][1, rows_of[1]]
    assert (crowd_k == 0).any() and b["multi_claimed"][1].any()


def test_junk_padding_equals_clean_padding():
    for seed in (7, 8):
        clean = random_case(seed)
        dirty = random_case(seed, junk=True)
        assert not np.array_equal(clean[3], dirty[3], equal_nan=True)
        got_clean, got_dirty = run(clean), run(dirty)
        for name, x in got_clean._asdict().items():
            if x is not None:
                np.testing.assert_array_equal(getattr(got_dirty, name), x, err_msg=name)
        assert_matches(got_dirty, expected(clean))


def test_options_match_oracle():
    for seed in (11, 12):
        case = random_case(seed)
        assert_matches(run(case, topk=5, prior_size=3.0), expected(case, topk=5, prior_size=3.0))


def test_no_gt_rows_returns_background():
    pred, cls, obj, *_ = random_case(0, b=2)
    out = atss(pred, cls, obj, GRID, STRIDES, np.zeros((2, 0, 4), F32),
               np.zeros((2, 0), np.int32), np.zeros((2, 0), bool))
    assert out.fg_mask.shape == (2, A) and not np.asarray(out.fg_mask).any()
    assert out.dynamic_k.shape == (2, 0) and np.asarray(out.num_fg).tolist() == [0, 0]
    assert np.asarray(out.quality).sum() == 0 and np.asarray(out.max_iou).sum() == 0


def _all_shapes(jaxpr):
    """Shapes of every variable of a jaxpr and its sub-jaxprs (cond branches, pjit, ...)."""
    for v in list(jaxpr.invars) + list(jaxpr.constvars):
        yield tuple(v.aval.shape)
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            yield tuple(getattr(v.aval, "shape", ()))
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (tuple, list)) else (p,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _all_shapes(inner)


@pytest.mark.parametrize("traced", [False, True], ids=["static-levels", "traced-levels"])
def test_jit_and_memory_is_order_g_times_a(traced):
    pred, cls, obj, gtb, gtc, gtm = random_case(3, b=2)
    if traced:
        closed = jax.make_jaxpr(atss)(pred, cls, obj, GRID, STRIDES, gtb, gtc, gtm)
    else:
        closed = jax.make_jaxpr(lambda *a: atss(*a[:3], GRID, STRIDES, *a[3:]))(
            pred, cls, obj, gtb, gtc, gtm)
    shapes = list(_all_shapes(closed.jaxpr))
    limit = 2 * G * A * C                      # any array with a G, an A and a C axis is this big
    assert max(int(np.prod(s)) for s in shapes) < limit
    assert (2, G, A) in shapes                 # the [B, G, A] pair arrays are there
    full_sorts = [e for e in _primitives(closed.jaxpr, "sort")
                  if e.invars[0].aval.shape[-1] == A]          # (top_k sorts a few block ids)
    assert bool(full_sorts) == traced


def _primitives(jaxpr, name):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            yield eqn
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (tuple, list)) else (p,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _primitives(inner, name)

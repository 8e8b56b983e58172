"""Dynamic soft label assigner (RTMDet) vs a NumPy transcription of MMYOLO's; memory bound."""
import functools
import sys
from pathlib import Path

import jax
import jax.extend
import numpy as np
import pytest

from yolox_jax import anchor_grid
from yolox_jax.assign._dsl import dsl, dsl_cost, soft_label_cls_cost

sys.path.insert(0, str(Path(__file__).parent))
from dsl_oracle import dsl_reference  # noqa: E402

HW = (128, 160)          # 320 + 80 + 20 = 420 anchors
C = 5
G = 8
B = 3
F32 = np.float32
GRID, STRIDES = (np.asarray(x) for x in anchor_grid(HW))
A = len(STRIDES)

DEFAULT = {}
RAW = {"keep_outside_picks": True, "center_offset": 0.0}      # MMYOLO/RTMDet verbatim
DENSE = {"topk": 60}     # G * topk >= A: conflicts resolved over all anchors, not the picks
JOINT_ALL = {"score": "joint", "class_cost": "all_classes", "topk": 9, "iou_weight": 2.0,
             "soft_center_radius": 2.5}


@functools.lru_cache(maxsize=None)
def _jitted(options):
    return jax.jit(functools.partial(dsl, **dict(options)))


@pytest.fixture(scope="module")
def run():
    """``dsl`` under one cached jit per option set (all tests use [B, A, C] / [B, G] shapes)."""
    def call(batch, **options):
        return _jitted(tuple(sorted(options.items())))(
            batch["pred"], batch["cls"], batch["obj"], GRID, STRIDES, batch["gtb"], batch["gtc"],
            batch["gtm"])
    return call


# --------------------------------------------------------------------------------------------
# Problems.

def _preds(rng):
    """Predictions scattered around their anchors with random sizes: continuous values, so no
    exact cost ties."""
    centres = (GRID + 0.5) * STRIDES[:, None]
    pred = np.concatenate([centres + rng.normal(0, 0.8, (A, 2)) * STRIDES[:, None],
                           np.exp(rng.uniform(0.3, 2.3, (A, 2))) * STRIDES[:, None]], 1)
    return pred.astype(F32), rng.normal(-1, 2, (A, C)).astype(F32), rng.normal(0, 2, A).astype(F32)


def _random_gts(rng, n):
    h, w = HW
    cxy = rng.uniform(0, 1, (n, 2)) * np.array([w, h])
    wh = np.exp(rng.uniform(np.log(6), np.log(90), (n, 2)))
    return np.concatenate([cxy, wh], 1).astype(F32), rng.integers(0, C, n).astype(np.int32)


def _batch(rng, gt_lists, junk=False):
    """gt_lists: per image (boxes [n, 4] cxcywh, classes [n]) placed at random rows of G."""
    out = {k: [] for k in ("pred", "cls", "obj", "gtb", "gtc", "gtm")}
    for boxes, classes in gt_lists:
        pred, cls, obj = _preds(rng)
        gtb, gtc, gtm = _pad(rng, boxes, classes, junk)
        for k, v in zip(out, (pred, cls, obj, gtb, gtc, gtm)):
            out[k].append(v)
    return {k: np.stack(v) for k, v in out.items()}


def _pad(rng, boxes, classes, junk):
    n = len(boxes)
    rows = np.sort(rng.choice(G, n, replace=False))
    gtb = np.zeros((G, 4), F32)
    gtc = np.zeros(G, np.int32)
    if junk:   # its own generator: the rest of the batch stays the same as without junk
        rng = np.random.default_rng(99)
        gtb = (rng.normal(size=(G, 4)) * 1e30).astype(F32)
        gtb[::3] = np.nan
        gtb[1::4] = [60.0, 60.0, -50.0, -1.0]
        gtc = rng.integers(-1000, 1000, G).astype(np.int32)
    gtm = np.zeros(G, bool)
    gtb[rows], gtc[rows], gtm[rows] = boxes, classes, True
    return gtb, gtc, gtm


def _joint_logit(cls, obj):
    """The logit of sqrt(sigmoid(cls) * sigmoid(obj)) for the oracle, in float64."""
    cls, obj = cls.astype(np.float64), obj.astype(np.float64)[..., None]
    log_p = -0.5 * (np.logaddexp(0, -cls) + np.logaddexp(0, -obj))
    return (log_p - np.log(-np.expm1(log_p))).astype(F32)


def _reference(batch, b, **options):
    opts = dict(options)
    offset = opts.pop("center_offset", 0.5)
    joint = opts.pop("score", "cls") == "joint"
    scores = _joint_logit(batch["cls"][b], batch["obj"][b]) if joint else batch["cls"][b]
    return dsl_reference(batch["pred"][b], scores, (GRID + offset) * STRIDES[:, None], STRIDES,
                         batch["gtb"][b], batch["gtc"][b], batch["gtm"][b], num_classes=C, **opts)


def _check(out, batch, **options):
    """Every Assignment field of every image equals the oracle's."""
    refs = [_reference(batch, b, **options) for b in range(len(batch["gtm"]))]
    assert out.weight is None
    for b, ref in enumerate(refs):
        msg = f"image {b}"
        fg = np.asarray(out.fg_mask[b])
        np.testing.assert_array_equal(fg, ref["fg_mask"], err_msg=msg)
        assert int(out.num_fg[b]) == ref["num_fg"], msg
        matched = np.asarray(out.matched_gt[b])
        np.testing.assert_array_equal(matched[fg], ref["matched_gt"][fg], err_msg=msg)
        assert np.all(matched[~fg] == 0), msg
        np.testing.assert_array_equal(np.asarray(out.matched_class[b]), ref["matched_class"],
                                      err_msg=msg)
        np.testing.assert_array_equal(np.asarray(out.dynamic_k[b]), ref["dynamic_k"], err_msg=msg)
        np.testing.assert_array_equal(np.asarray(out.candidate_mask[b]), ref["candidate_mask"],
                                      err_msg=msg)
        for field in ("matched_iou", "quality", "max_iou"):
            np.testing.assert_allclose(np.asarray(getattr(out, field)[b]), ref[field], atol=1e-5,
                                       rtol=0, err_msg=f"{msg} {field}")
        assert np.all(np.asarray(out.matched_iou[b])[~fg] == 0), msg
    return refs


# --------------------------------------------------------------------------------------------
# Random cases.

@pytest.mark.parametrize("seed", range(4))
def test_random_batches_match_oracle(run, seed):
    rng = np.random.default_rng(seed)
    gts = [_random_gts(rng, int(n)) for n in rng.integers(1, G + 1, B)]
    batch = _batch(rng, gts)
    out = run(batch)
    refs = _check(out, batch)
    assert sum(r["num_fg"] for r in refs) > 0


@pytest.mark.parametrize("options", [RAW, JOINT_ALL, {"class_cost": "all_classes"},
                                     {"score": "joint"}], ids=["raw", "joint_all", "all", "joint"])
def test_options_match_oracle(run, options):
    rng = np.random.default_rng(10)
    for _ in range(2):
        gts = [_random_gts(rng, int(n)) for n in rng.integers(1, G + 1, B)]
        batch = _batch(rng, gts)
        _check(run(batch, **options), batch, **options)


def test_options_change_the_result(run):
    """The options reach the computation (guards against an option silently ignored)."""
    rng = np.random.default_rng(11)
    batch = _batch(rng, [_random_gts(rng, G) for _ in range(B)])
    base = np.asarray(run(batch).fg_mask)
    # Option sets compiled by the other tests (topk, iou_weight and the radius differ in
    # JOINT_ALL, which is checked against the oracle).
    for opts in ({"score": "joint"}, {"class_cost": "all_classes"}, RAW, JOINT_ALL):
        assert not np.array_equal(np.asarray(run(batch, **opts).fg_mask), base), opts


@pytest.mark.parametrize("score", ["cls", "joint"])
@pytest.mark.parametrize("class_cost", ["gt_class", "all_classes"])
def test_cost_matrix_matches_oracle(score, class_cost):
    """The decomposed class cost (gathered [G, A], no [G, A, C]) equals the brute-force cost."""
    rng = np.random.default_rng(12)
    batch = _batch(rng, [_random_gts(rng, 6)])
    gm = batch["gtm"][0]
    args = (batch["pred"][0], batch["cls"][0], batch["obj"][0], (GRID + 0.5) * STRIDES[:, None],
            STRIDES, np.where(gm[:, None], batch["gtb"][0], [0, 0, 1, 1]).astype(F32),
            batch["gtc"][0], gm)
    ref = _reference(batch, 0, score=score, class_cost=class_cost)
    # [G, A], and the anchor-major [A, G] layout that ``dsl`` computes in.
    for anchor_major in (False, True):
        cost, iou, cand = jax.jit(functools.partial(
            dsl_cost, score=score, class_cost=class_cost, anchor_major=anchor_major))(*args)
        cost, iou, cand = (np.asarray(x) for x in (cost, iou, cand))
        if anchor_major:
            cost, iou = cost.T, iou.T
        assert 0 < cand.sum() < A
        np.testing.assert_array_equal(cand, ref["candidate_mask"])
        np.testing.assert_allclose(iou[gm], ref["iou"][gm], atol=1e-6, rtol=0)
        np.testing.assert_allclose(cost[gm], ref["cost"][gm], rtol=2e-5, atol=1e-4)
        assert np.all(cost[:, ~cand] == 1e8)


@pytest.mark.parametrize("score", ["cls", "joint"])
def test_all_classes_decomposition_extreme_logits(score):
    """sum over classes of BCE(p, t) * (t - p)^2 with t = IoU at the gt class, 0 elsewhere, in
    float64 by brute force, for logits up to +-25 (saturated sigmoids)."""
    rng = np.random.default_rng(13)
    a, g, c = 64, 6, 7
    x = rng.uniform(-25, 25, (a, c)).astype(F32)
    o = rng.uniform(-25, 25, a).astype(F32)
    y = rng.integers(0, c, g).astype(np.int32)
    iou = rng.uniform(0, 1, (g, a)).astype(F32)
    iou[:, :5] = 0.0
    got = soft_label_cls_cost(x, o, y, iou, score=score, class_cost="all_classes")
    col = soft_label_cls_cost(x, o, y, iou, score=score, class_cost="gt_class")
    x64, o64 = x.astype(np.float64), o.astype(np.float64)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    p = sig(x64) if score == "cls" else np.sqrt(sig(x64) * sig(o64)[:, None])       # [A, C]
    t = np.zeros((g, a, c))
    t[np.arange(g)[:, None], np.arange(a)[None, :], y[:, None]] = iou
    bce = -(t * np.log(p) + (1 - t) * np.log1p(-p))
    want = np.sum(bce * (t - p) ** 2, axis=-1)                                         # [G, A]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    want_col = np.take_along_axis(bce * (t - p) ** 2, y[:, None, None].repeat(a, 1), -1)[..., 0]
    np.testing.assert_allclose(np.asarray(col), want_col, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Edge cases.

def _empty():
    return np.zeros((0, 4), F32), np.zeros(0, np.int32)


def test_no_gts(run):
    rng = np.random.default_rng(20)
    batch = _batch(rng, [_empty(), _random_gts(rng, 3), _empty()])
    out = run(batch)
    _check(out, batch)
    for b in (0, 2):
        assert int(out.num_fg[b]) == 0
        assert not np.any(out.candidate_mask[b]) and not np.any(out.dynamic_k[b])
        assert np.all(np.asarray(out.max_iou[b]) == 0)
    assert int(out.num_fg[1]) > 0


def test_one_gt(run):
    rng = np.random.default_rng(21)
    boxes = np.array([[80, 64, 40, 30]], F32)
    batch = _batch(rng, [(boxes, np.array([3], np.int32))] * B)
    out = run(batch)
    _check(out, batch)
    fg = np.asarray(out.fg_mask)
    assert np.all(np.asarray(out.matched_class)[fg] == 3)
    assert np.all(np.asarray(out.num_fg) == np.asarray(out.dynamic_k).sum(1))  # no conflicts
    _check(run(batch, **RAW), batch, **RAW)


def test_duplicate_gts(run):
    """Identical gts tie on every cost: every contested anchor goes to the first row."""
    rng = np.random.default_rng(22)
    boxes, classes = _random_gts(rng, 4)
    boxes[2], classes[2] = boxes[0], classes[0]
    boxes[3], classes[3] = boxes[0], classes[0]
    batch = _batch(rng, [(boxes, classes)] * B)
    out = run(batch)
    _check(out, batch)
    rows = np.nonzero(batch["gtm"][0])[0]
    matched = np.asarray(out.matched_gt[0])[np.asarray(out.fg_mask[0])]
    assert rows[0] in matched and not np.isin(rows[2:], matched).any()


def test_tiny_boxes(run):
    """Boxes smaller than a stride: no anchor point inside -> no candidate. MMYOLO then hands
    the gt INF-cost anchors in index order (anchor 0 first); the default drops them."""
    rng = np.random.default_rng(23)
    between = np.array([[30.0, 30.0, 3.0, 3.0]], F32)       # points: 4+8i, 8+16i, 16+32i
    with_point = np.array([[44.0, 52.0, 2.0, 2.0]], F32)    # contains the point (44, 52) only
    big = np.array([[110.0, 70.0, 50.0, 40.0]], F32)
    gts = [(between, np.array([1], np.int32)),
           (np.concatenate([between, with_point]), np.array([1, 2], np.int32)),
           (np.concatenate([between, big, with_point]), np.array([1, 2, 4], np.int32))]
    batch = _batch(rng, gts)
    out = run(batch)
    _check(out, batch)
    assert int(out.num_fg[0]) == 0 and not np.any(out.candidate_mask[0])
    assert int(np.sum(out.candidate_mask[1])) == 1
    raw = run(batch, keep_outside_picks=True)
    _check(raw, batch, keep_outside_picks=True)
    assert bool(raw.fg_mask[0, 0]) and int(raw.num_fg[0]) == int(raw.dynamic_k[0].sum())
    assert np.any(np.asarray(raw.fg_mask) & ~np.asarray(raw.candidate_mask))


def test_more_gts_than_candidates(run):
    """Eight small overlapping gts over a handful of anchor points: heavy conflicts."""
    rng = np.random.default_rng(24)
    gts = []
    for _ in range(B):
        cxy = np.array([60.0, 50.0]) + rng.uniform(-3, 3, (G, 2))
        wh = rng.uniform(6, 11, (G, 2))
        gts.append((np.concatenate([cxy, wh], 1).astype(F32),
                    rng.integers(0, C, G).astype(np.int32)))
    batch = _batch(rng, gts)
    out = run(batch)
    refs = _check(out, batch)
    cand = np.asarray(out.candidate_mask).sum(1)
    assert np.all(cand < G), cand
    assert np.all(np.asarray(out.num_fg) < np.asarray(out.dynamic_k).sum(1))   # conflicts
    _check(run(batch, **RAW), batch, **RAW)
    assert all(r["num_fg"] > 0 for r in refs)
    _check(run(batch, **DENSE), batch, **DENSE)


@pytest.mark.parametrize("options", [DEFAULT, DENSE], ids=["picked_columns", "dense"])
def test_padded_rows_never_win_conflicts(run, options):
    """A contested anchor goes to the cheapest *valid* gt. Set up so that MMYOLO's zero padding
    box would win: no prediction overlaps anything (IoU 0 for all), class 0 (the padded rows'
    class) is hopeless, the gts' class is confident, and duplicate gts near the origin contest
    their anchors."""
    rng = np.random.default_rng(26)
    boxes = np.array([[12.0, 12.0, 16.0, 16.0]] * 2, F32)
    batch = _batch(rng, [(boxes, np.array([2, 2], np.int32))] * B)
    batch["pred"][...] = [500.0, 500.0, 1.0, 1.0]
    batch["cls"][..., 0] = -20.0
    batch["cls"][..., 2] = 8.0
    out = run(batch, **options)
    _check(out, batch, **options)
    assert np.all(np.asarray(out.num_fg) > 0)
    for b in range(B):
        fg = np.asarray(out.fg_mask[b])
        assert np.all(batch["gtm"][b][np.asarray(out.matched_gt[b])[fg]])


def test_junk_padding_equals_clean_padding(run):
    rng = np.random.default_rng(25)
    gts = [_random_gts(rng, int(n)) for n in (3, 0, 7)]
    clean = _batch(np.random.default_rng(1), gts)
    junk = _batch(np.random.default_rng(1), gts, junk=True)
    assert np.array_equal(clean["gtm"], junk["gtm"]) and not np.all(junk["gtm"])
    assert np.isnan(junk["gtb"][~junk["gtm"]]).any()
    for opts in (DEFAULT, JOINT_ALL):
        a, b = run(clean, **opts), run(junk, **opts)
        for field in a._fields:
            x, y = getattr(a, field), getattr(b, field)
            if x is None:
                assert y is None
            else:
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=field)
        _check(b, clean, **opts)


def test_nan_cost_in_a_conflict_goes_to_a_valid_gt():
    """An anchor taken by two gts (duplicate boxes of two classes) where a third valid gt's cost
    is NaN (a NaN logit of its class): torch's ``min`` makes the NaN row the minimum, so the
    anchor goes to that gt; never to a row index past the gts (all rows, no buckets)."""
    rng = np.random.default_rng(21)
    box = np.array([[80.0, 64.0, 40.0, 40.0]], F32)
    far = np.array([[10.0, 10.0, 12.0, 12.0]], F32)
    gts = (np.concatenate([box, box, far]), np.array([0, 1, 2], np.int32))
    batch = _batch(rng, [gts])
    centres = (GRID + 0.5) * STRIDES[:, None]
    inside = np.all(np.abs(centres - box[0, :2]) < box[0, 2:] / 2, axis=1)
    batch["cls"][0, inside, 2] = np.nan
    out = jax.jit(functools.partial(dsl, gt_buckets=()))(
        batch["pred"], batch["cls"], batch["obj"], GRID, STRIDES, batch["gtb"], batch["gtc"],
        batch["gtm"])
    fg, matched = np.asarray(out.fg_mask[0]), np.asarray(out.matched_gt[0])
    rows = np.flatnonzero(batch["gtm"][0])                   # the three gts' rows, in order
    assert np.all((matched >= 0) & (matched < G))
    contested = fg & inside
    assert contested.any() and np.all(matched[contested] == rows[2])


def test_bad_options():
    args = (np.zeros((1, A, 4), F32), np.zeros((1, A, C), F32), np.zeros((1, A), F32), GRID,
            STRIDES, np.zeros((1, G, 4), F32), np.zeros((1, G), np.int32), np.zeros((1, G), bool))
    for bad in ({"score": "obj"}, {"class_cost": "sum"}, {"topk": 0}):
        with pytest.raises(ValueError):
            dsl(*args, **bad)


def test_registered():
    from yolox_jax.assign.registry import get_assigner
    assert get_assigner("dsl") is dsl


# --------------------------------------------------------------------------------------------
# Memory: O(G x A), never [B, G, A, C].

def _iter_avals(jaxpr):
    for eqn in jaxpr.eqns:
        for v in list(eqn.outvars) + [x for x in eqn.invars if hasattr(x, "aval")]:
            yield v.aval
        for p in eqn.params.values():
            for s in (p if isinstance(p, (list, tuple)) else [p]):
                inner = getattr(s, "jaxpr", s)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    yield from _iter_avals(inner)


@pytest.mark.parametrize("options", [DEFAULT, JOINT_ALL], ids=["default", "joint_all"])
def test_jaxpr_has_no_bgac_intermediate(options):
    b, g, c = 2, 8, 32      # B*G*A*C = 215040; B*A*C = 26880; B*G*A = 6720
    args = (np.zeros((b, A, 4), F32), np.zeros((b, A, c), F32), np.zeros((b, A), F32), GRID,
            STRIDES, np.ones((b, g, 4), F32), np.zeros((b, g), np.int32), np.ones((b, g), bool))
    closed = jax.make_jaxpr(jax.jit(functools.partial(dsl, **options)))(*args)
    sizes = [int(np.prod(av.shape)) for av in _iter_avals(closed.jaxpr) if hasattr(av, "shape")]
    assert max(sizes) >= b * A * c            # the inputs are seen, so the walk works
    assert max(sizes) < b * g * A * c, max(sizes)
    assert max(sizes) <= max(b * A * c, 2 * b * g * A), max(sizes)

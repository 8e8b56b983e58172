"""Task-aligned assigner: NumPy oracle of MMYOLO's BatchTaskAlignedAssigner, edge cases, junk
padding, options, jit and memory."""
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax.assign._tal import resolve_picks, select_highest_overlaps, tal, valid_max
from yolox_jax.ops.anchors import anchor_grid

sys.path.insert(0, str(Path(__file__).parent))
from tal_oracle import F32, BatchTaskAlignedAssigner  # noqa: E402

HW = (128, 160)                       # levels 16x20, 8x10, 4x5: A = 420
C = 5
G = 8
GRID, STRIDES = (np.asarray(x) for x in anchor_grid(HW))
A = len(STRIDES)
POINTS = ((GRID + 0.5) * STRIDES[:, None]).astype(F32)


@functools.lru_cache(maxsize=None)
def jitted(options=()):
    """One compiled batched ``tal`` per option set; the grid is an argument (traced), as in a
    jitted loss that calls ``anchor_grid`` inside the trace."""
    return jax.jit(functools.partial(tal, **dict(options)))


def run(case, **options):
    pred, cls, obj, gtb, gtc, gtm = case
    out = jitted(tuple(sorted(options.items())))(pred, cls, obj, GRID, STRIDES, gtb, gtc, gtm)
    return jax.tree_util.tree_map(np.asarray, out)


# ----------------------------------------------------------------------------- cases
def predictions(rng, b):
    """Boxes around their anchor point (each contains its point, so every anchor inside a gt
    overlaps it: no zero metrics, no ties in the top-k), random logits."""
    s = STRIDES[:, None]
    centre = POINTS + rng.uniform(-0.4, 0.4, (b, A, 2)) * s
    size = s * np.exp(rng.uniform(0.0, np.log(12.0), (b, A, 2)))
    pred = np.concatenate([centre, size], -1).astype(F32)
    cls = rng.normal(0.0, 2.0, (b, A, C)).astype(F32)
    obj = rng.normal(0.0, 2.0, (b, A)).astype(F32)
    return pred, cls, obj


def random_gts(rng, n):
    """n random cxcywh boxes in the image (sizes 4..110 px) and classes."""
    cxcy = rng.uniform([0, 0], [HW[1], HW[0]], (n, 2))
    wh = rng.uniform(4.0, 110.0, (n, 2))
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
        gtb, gtc = with_junk(gtb, gtc, gtm, rng)
    return gtb, gtc, gtm


def with_junk(gtb, gtc, gtm, rng):
    junk_b = (rng.normal(size=gtb.shape) * 1e30).astype(F32)
    junk_b[:, ::3] = np.nan
    junk_b[:, 1::4] = [50.0, 60.0, -40.0, -30.0]
    junk_b[:, 2::5] = [80.0, 64.0, 200.0, 200.0]       # a plausible box covering the image
    junk_c = rng.integers(-1000, 1000, gtc.shape).astype(np.int32)
    return (np.where(gtm[..., None], gtb, junk_b).astype(F32),
            np.where(gtm, gtc, junk_c).astype(np.int32))


def random_case(seed, b=3, junk=False):
    rng = np.random.default_rng(seed)
    per_image = [random_gts(rng, int(rng.integers(1, G + 1))) for _ in range(b)]
    return (*predictions(rng, b), *pack(per_image, rng, junk))


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


def sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(F32)


def expected(case, score="cls", **options):
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
    scores = sigmoid(cls)
    if score == "joint":
        scores = np.sqrt(scores * sigmoid(obj)[..., None]).astype(F32)
    priors = np.concatenate([POINTS, STRIDES[:, None], STRIDES[:, None]], -1).astype(F32)
    out = BatchTaskAlignedAssigner(C, **options)(xyxy(pred), scores, priors, labels, gt, flag)

    fg = out["fg_mask_pre_prior"]
    idx = out["assigned_gt_idxs"]
    label = out["assigned_labels"]
    soft = out["assigned_scores"]
    quality = np.take_along_axis(soft, label[..., None], -1)[..., 0]
    assert np.all(soft.sum(-1) == quality)                 # one class per anchor, 0 when not fg
    iou = np.take_along_axis(out["overlaps"], idx[:, None], 1)[:, 0]
    exp = dict(fg_mask=fg, num_fg=fg.sum(1), matched_gt=np.zeros((b, A), np.int64),
               matched_class=np.where(fg, label, 0), quality=np.where(fg, quality, 0),
               matched_iou=np.where(fg, iou, 0), dynamic_k=np.zeros((b, G), np.int64),
               max_iou=np.zeros((b, A), F32), candidate_mask=np.zeros((b, A), bool),
               multi_claimed=out["multi_claimed"])
    for i, r in enumerate(rows):
        n = len(r)
        exp["matched_gt"][i, fg[i]] = r[idx[i, fg[i]]]
        exp["dynamic_k"][i, r] = out["pos_mask"][i, :n].sum(-1)
        if n:
            exp["max_iou"][i] = out["overlaps"][i, :n].max(0)
            exp["candidate_mask"][i] = out["is_in_gts"][i, :n].any(0)
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
def test_random_cases_match_oracle():
    conflicts = fg = 0
    for seed in range(4):
        case = random_case(seed)
        exp = expected(case)
        assert_matches(run(case), exp)
        conflicts += int(exp["multi_claimed"].sum())
        fg += int(exp["num_fg"].sum())
    assert conflicts > 0 and fg > 100        # the cases exercise conflicts, not just easy picks


def test_edge_cases_match_oracle():
    a = expected(edge_case_a())
    assert_matches(run(edge_case_a()), a)
    assert a["num_fg"][0] == 0 and a["num_fg"][1] > 0
    gtm = edge_case_a()[5]
    dup_rows = np.flatnonzero(gtm[2])[[0, 2, 3]]           # the duplicated box: rows 0, 2, 3
    k = a["dynamic_k"][2, dup_rows]
    assert k[0] > 0 and k[1] == 0                           # same class: the first row wins all

    b = expected(edge_case_b())
    assert_matches(run(edge_case_b()), b)
    gtm = edge_case_b()[5]
    tiny_k = b["dynamic_k"][0, np.flatnonzero(gtm[0])]
    assert tiny_k[0] == 1 and tiny_k[1] == 0                # one point inside / none
    crowd_k = b["dynamic_k"][1, np.flatnonzero(gtm[1])]
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


def test_options_and_joint_score_match_oracle():
    options = dict(topk=5, alpha=0.5, beta=4.0, eps=1e-9)
    for seed in (11, 12):
        case = random_case(seed)
        assert_matches(run(case, score="joint", **options),
                       expected(case, score="joint", **options))


def test_conflicts_go_to_the_best_valid_gt():
    # 4 gts (row 2 padded, with the largest IoUs), 4 anchors.
    pos = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]], bool)[None]
    overlaps = np.array([[.2, .5, .1, .1], [.3, .2, .9, .1], [.9, .9, .9, .9], [.4, 0, 0, 0]],
                        F32)[None]
    fg, matched = select_highest_overlaps(pos, overlaps, np.array([[1, 1, 0, 1]], bool))
    # anchor 0: taken by rows 0 and 1 -> the valid row of largest IoU, 3, though it did not take
    # it (MMYOLO's rule); 1: only row 0; 2: nobody; 3: rows 0 and 1 tie -> the first.
    assert np.asarray(fg).tolist() == [[True, True, False, True]]
    assert np.asarray(matched).tolist() == [[3, 0, 0, 0]]


def test_resolve_picks_equals_dense_rule():
    # Picks drawn so that anchors are shared by several gts; NaN overlaps, padded rows with the
    # largest overlaps, rows that keep nothing.
    rng = np.random.default_rng(7)
    b, g, k, a = 3, 6, 4, 10
    picks = np.stack([[rng.choice(a, k, replace=False) for _ in range(g)] for _ in range(b)])
    keep = rng.uniform(size=(b, g, k)) > 0.3
    keep[0, 2] = False
    overlaps = rng.uniform(0, 1, (b, g, a)).astype(F32)
    overlaps[1, :, 3] = 0.5                                      # ties -> first valid row
    overlaps[2, 4, :] = np.nan
    gt_mask = rng.uniform(size=(b, g)) > 0.25
    overlaps[0, ~gt_mask[0]] = 2.0                               # padded rows never win
    keep &= gt_mask[:, :, None]
    pos = np.zeros((b, g, a), bool)
    for i, j, m in np.ndindex(b, g, k):
        pos[i, j, picks[i, j, m]] |= keep[i, j, m]
    want = select_highest_overlaps(pos, overlaps, gt_mask)
    at_picks = np.stack([overlaps[i][:, picks[i].reshape(-1)] for i in range(b)])
    got = resolve_picks(picks.astype(np.int32), keep, at_picks, gt_mask, a)
    assert np.asarray(want[0]).sum() > b and (pos.sum(1) > 1).any()
    for x, y in zip(got, want):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_valid_max_equals_masked_max():
    # The int-key reduction against jnp.max of the masked array: NaN of either sign, +-inf,
    # +-0, all-masked columns and images.
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, (3, 6, 9)).astype(F32)
    x[0, 1, 2], x[1, 2, 3], x[0, 3, 5] = np.nan, -np.nan, 0.0
    x[2, 0, 0], x[2, 1, 1], x[0, :, 4], x[2, :, 7] = np.inf, -np.inf, -np.inf, -0.0
    mask = rng.uniform(size=(3, 6)) > 0.3
    mask[1] = False
    want = np.asarray(jnp.max(jnp.where(mask[:, :, None], x, -jnp.inf), axis=1))
    got = np.asarray(jax.jit(valid_max)(x, mask))
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[0, 2]) and np.all(got[1] == -np.inf)


def test_no_gt_rows_returns_background():
    pred, cls, obj, *_ = random_case(0, b=2)
    out = tal(pred, cls, obj, GRID, STRIDES, np.zeros((2, 0, 4), F32), np.zeros((2, 0), np.int32),
              np.zeros((2, 0), bool))
    assert out.fg_mask.shape == (2, A) and not np.asarray(out.fg_mask).any()
    assert out.dynamic_k.shape == (2, 0) and np.asarray(out.num_fg).tolist() == [0, 0]
    assert np.asarray(out.quality).sum() == 0 and np.asarray(out.max_iou).sum() == 0
    with pytest.raises(ValueError, match="score"):
        tal(pred, cls, obj, GRID, STRIDES, *random_case(0, b=2)[3:], score="obj")


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


def test_jit_and_memory_is_order_g_times_a():
    case = random_case(3, b=2)
    closed = jax.make_jaxpr(functools.partial(tal, score="joint"))(
        case[0], case[1], case[2], GRID, STRIDES, *case[3:])
    shapes = list(_all_shapes(closed.jaxpr))
    limit = 2 * G * A * C                      # any array with a G, an A and a C axis is this big
    assert max(int(np.prod(s)) for s in shapes) < limit
    assert (2, A, G) in shapes                 # the [B, A, G] pair arrays (the metric) are there
    jitted_out = run(case)
    assert isinstance(jitted_out.fg_mask, np.ndarray) and jitted_out.fg_mask.shape == (2, A)


@pytest.mark.parametrize("nan_logit", [False, True])
def test_nan_prediction_in_a_box_is_a_positive_and_poisons_its_gts_quality(nan_logit):
    """A NaN predicted box at an anchor inside a gt gives a NaN metric, which ranks above every
    number whatever its sign bit (with a NaN logit too, whose sigmoid is a NaN of the other
    sign): the anchor is a positive of that gt, and the gt's largest metric (MMYOLO's amax) is
    NaN, so the quality of each of its positives is NaN; the other gts keep finite qualities.
    At 128 x 128 with 32 gts the per-gt maxima cover [2, 32, 416] picks, a size at which
    XLA:CPU's float max-reduction skips NaNs."""
    hw = (128, 128)
    grid, strides = (np.asarray(x) for x in anchor_grid(hw))
    a, b, g, c = len(strides), 2, 32, 3
    pts = (grid + 0.5) * strides[:, None]
    rng = np.random.default_rng(0)
    pred = np.concatenate([pts + rng.uniform(-3, 3, (b, a, 2)),
                           rng.uniform(20, 60, (b, a, 2))], -1).astype(F32)
    cls = rng.normal(size=(b, a, c)).astype(F32)
    gtb = np.concatenate([rng.uniform(20, 108, (b, g, 2)),
                          rng.uniform(20, 60, (b, g, 2))], -1).astype(F32)
    gtc = rng.integers(0, c, (b, g)).astype(np.int32)
    gtb[0, 0] = [64, 64, 40, 40]
    hit = int(np.argmin(np.abs(pts - 64).sum(1)))            # an anchor point at gt 0's centre
    pred[0, hit] = np.nan
    if nan_logit:
        cls[0, hit] = np.nan                                 # sigmoid(NaN) * IoU: any NaN sign
    out = jax.tree_util.tree_map(np.asarray, jax.jit(tal)(
        pred, cls, np.zeros((b, a), F32), grid, strides, gtb, gtc, np.ones((b, g), bool)))
    assert out.fg_mask[0, hit] and out.matched_gt[0, hit] == 0
    own = out.fg_mask[0] & (out.matched_gt[0] == 0)
    assert own.sum() > 1 and np.isnan(out.quality[0][own]).all()
    others = out.fg_mask & ((np.arange(b)[:, None] == 1) | (out.matched_gt != 0))
    assert others.sum() > 100 and np.isfinite(out.quality[others]).all()

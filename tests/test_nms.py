"""yolox_jax.nms against plain NumPy greedy NMS / Soft-NMS oracles, plus degenerate inputs."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax.nms import nms
from yolox_jax.nms import _integer_cumsum, first_max_rows, nms_batched


# ----------------------------------------------------------------------------- oracles
def np_iou(box, boxes):
    """IoU of one xyxy box with [N, 4] (float32, torchvision arithmetic, 0/0 -> 0)."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    w = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0)
    h = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0)
    inter = w * h
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (area + areas - inter)
    return np.where(np.isnan(iou), 0, iou).astype(np.float32)


def np_greedy_nms(boxes, scores, thr, k, classes=None, score_thr=0.0):
    """Plain greedy NMS: descending score, lower index first on ties, suppress IoU > thr."""
    n = len(scores)
    classes = np.zeros(n, int) if classes is None else classes
    cand = np.nonzero(np.isfinite(scores) & (scores >= score_thr))[0]
    order = cand[np.lexsort((cand, -scores[cand]))]
    suppressed = np.zeros(n, bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == k:
            break
        suppressed |= (np_iou(boxes[i], boxes) > thr) & (classes == classes[i])
    return np.array(keep, int)


def np_soft_nms(boxes, scores, thr, k, classes=None, score_thr=0.0, method="gaussian",
                sigma=0.5):
    """Plain Soft-NMS loop (Bodla et al.; sigma="mean" = the seed variant), per class."""
    n = len(scores)
    classes = np.zeros(n, int) if classes is None else classes
    s = scores.astype(np.float32).copy()
    alive = np.isfinite(s) & (s >= score_thr)
    keep, kept_scores = [], []
    while alive.any() and len(keep) < k:
        i = int(np.argmax(np.where(alive, s, -np.inf)))
        keep.append(i)
        kept_scores.append(s[i])
        alive[i] = False
        iou = np_iou(boxes[i], boxes)
        aff = alive & (classes == classes[i])
        if method == "linear":
            decay = np.where(iou > thr, 1 - iou, 1).astype(np.float32)
        elif sigma == "mean":
            mean = s[aff].mean() if aff.any() else np.float32(1)
            decay = np.where(iou > thr, np.exp(-(iou * iou) / mean), 1).astype(np.float32)
        else:
            decay = np.exp(-(iou * iou) / np.float32(sigma)).astype(np.float32)
        s = np.where(aff, s * decay, s).astype(np.float32)
        alive &= ~(s < score_thr)
    return np.array(keep, int), np.array(kept_scores, np.float32)


# ----------------------------------------------------------------------------- data
def random_problem(rng, n, num_classes=1, clusters=8, frac_valid=0.7):
    """Boxes around a few cluster centres (so suppression happens) plus scattered ones."""
    centres = rng.uniform(0, 400, (clusters, 2))
    which = rng.integers(0, clusters, n)
    scattered = rng.random(n) < 0.3
    cxy = np.where(scattered[:, None], rng.uniform(0, 400, (n, 2)),
                   centres[which] + rng.normal(0, 6, (n, 2)))
    wh = np.where(scattered[:, None], rng.uniform(2, 80, (n, 2)),
                  rng.uniform(30, 50, (clusters, 2))[which] * rng.uniform(0.8, 1.25, (n, 2)))
    boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], 1).astype(np.float32)
    scores = rng.random(n).astype(np.float32)
    scores[rng.random(n) > frac_valid] = 0.0  # below the score threshold used below
    classes = rng.integers(0, num_classes, n).astype(np.int32)
    return boxes, scores, classes


N, K = 300, 40  # 300 > the smallest bucket (256): both the compacted and the full path run


@functools.lru_cache(maxsize=None)
def jitted(method, sigma=0.5, class_aware=False, k=K):
    def f(boxes, scores, classes, iou_thr, score_thr):
        return nms(boxes, scores, iou_thr, max_output=k, classes=classes if class_aware else None,
                   score_threshold=score_thr, method=method, sigma=sigma)
    return jax.jit(f)


def run(fn, boxes, scores, classes, thr, score_thr):
    idx, s, v = jax.device_get(fn(boxes, scores, classes, np.float32(thr),
                                  np.float32(score_thr)))
    assert v.dtype == bool and idx.dtype == np.int32
    n = int(v.sum())
    assert v[:n].all() and not v[n:].any(), "valid rows must come first"
    assert (idx[n:] == -1).all() and (s[n:] == 0).all()
    assert np.all(np.diff(s[:n]) <= 0), "rows sorted by descending score"
    return idx[:n], s[:n]


# ----------------------------------------------------------------------------- hard NMS
@pytest.mark.parametrize("class_aware", [False, True])
def test_hard_nms_matches_numpy_greedy(class_aware):
    rng = np.random.default_rng(0 + class_aware)
    fn = jitted("hard", class_aware=class_aware)
    total_suppressed = 0
    for trial in range(24):
        frac = [0.3, 0.7, 1.0][trial % 3]  # candidates below / above the 256 bucket
        boxes, scores, classes = random_problem(rng, N, num_classes=3 if class_aware else 1,
                                                frac_valid=frac)
        thr = rng.choice([0.3, 0.45, 0.65])
        idx, s = run(fn, boxes, scores, classes, thr, 0.01)
        want = np_greedy_nms(boxes, scores, thr, K, classes if class_aware else None, 0.01)
        np.testing.assert_array_equal(idx, want)
        np.testing.assert_array_equal(s, scores[want])
        total_suppressed += int((scores >= 0.01).sum()) - len(want)
    assert total_suppressed > 1000  # the problems really exercise suppression


def test_hard_nms_many_outputs_large_bucket():
    """N = 1100 with ~all candidates: the 1024 bucket is too small, K spans many tiles."""
    rng = np.random.default_rng(7)
    boxes, scores, classes = random_problem(rng, 1100, num_classes=4, clusters=30, frac_valid=1)
    idx, _, v = nms(boxes, scores, 0.5, max_output=400, classes=classes, score_threshold=0.0)
    want = np_greedy_nms(boxes, scores, 0.5, 400, classes)
    np.testing.assert_array_equal(np.asarray(idx)[np.asarray(v)], want)


def test_hard_nms_ties_lower_index_first():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.5, 0.5, 0.5], np.float32)
    idx, s, v = nms(boxes, scores, 0.3, max_output=3)
    np.testing.assert_array_equal(np.asarray(idx), [0, 2, -1])
    np.testing.assert_array_equal(np.asarray(v), [True, True, False])


# ----------------------------------------------------------------------------- Soft-NMS
@pytest.mark.parametrize("method,sigma,class_aware", [
    ("linear", 0.5, False), ("gaussian", 0.5, False), ("gaussian", "mean", False),
    ("linear", 0.5, True), ("gaussian", 0.5, True), ("gaussian", "mean", True)])
def test_soft_nms_matches_numpy_loop(method, sigma, class_aware):
    rng = np.random.default_rng(hash((method, str(sigma), class_aware)) % 2**32)
    fn = jitted(method, sigma=sigma, class_aware=class_aware)
    for trial in range(6):
        boxes, scores, classes = random_problem(rng, N, num_classes=3 if class_aware else 1,
                                                frac_valid=[0.5, 1.0][trial % 2])
        thr, score_thr = [(0.3, 0.05), (0.5, 0.001)][trial % 2]
        idx, s = run(fn, boxes, scores, classes, thr, score_thr)
        want, want_s = np_soft_nms(boxes, scores, thr, K, classes if class_aware else None,
                                   score_thr, method, sigma)
        np.testing.assert_array_equal(idx, want)
        np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-7)


def test_soft_nms_drops_boxes_below_score_threshold():
    # Two near-identical boxes: linear decay (1 - 0.9) * 0.8 = 0.08 < 0.1 -> dropped.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [40, 40, 50, 50]], np.float32)
    scores = np.array([0.9, 0.8, 0.2], np.float32)
    idx, s, v = nms(boxes, scores, 0.5, max_output=3, method="linear", score_threshold=0.1)
    np.testing.assert_array_equal(np.asarray(idx), [0, 2, -1])
    idx, s, v = nms(boxes, scores, 0.5, max_output=3, method="linear", score_threshold=0.01)
    np.testing.assert_array_equal(np.asarray(idx), [0, 2, 1])
    np.testing.assert_allclose(np.asarray(s), [0.9, 0.2, 0.8 * 0.1], rtol=1e-5)


def test_gaussian_soft_nms_keeps_zero_scores_at_threshold_zero():
    """Zero scores have no logarithm (the Gaussian path decays log-scores): at score_threshold 0
    they are still candidates, visited after every positive score, in index order, score 0."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [40, 40, 50, 50], [60, 60, 70, 70]],
                     np.float32)
    scores = np.array([0.0, 0.8, 0.0, 0.3], np.float32)
    idx, s, v = nms(boxes, scores, 0.5, max_output=5, method="gaussian", score_threshold=0.0)
    want, want_s = np_soft_nms(boxes, scores, 0.5, 5, None, 0.0, "gaussian", 0.5)
    np.testing.assert_array_equal(want, [1, 3, 0, 2])
    np.testing.assert_array_equal(np.asarray(idx), [1, 3, 0, 2, -1])
    np.testing.assert_array_equal(np.asarray(v), [True] * 4 + [False])
    np.testing.assert_allclose(np.asarray(s)[:4], want_s, rtol=1e-6)


@pytest.mark.parametrize("m", [1, 5, 63, 64, 65, 200, 2048])
def test_first_max_rows_is_first_argmax(m):
    rng = np.random.default_rng(m)
    s = rng.integers(0, 4, size=(6, m)).astype(np.float32)   # many ties
    s[1] = -np.inf                                            # a dead row
    s[2, -1] = 10.0                                           # maximum in the last column
    s[3] = np.where(rng.random(m) < 0.7, -np.inf, s[3])
    idx, top = jax.jit(first_max_rows)(jnp.asarray(s))
    np.testing.assert_array_equal(np.asarray(top), s.max(axis=1))
    np.testing.assert_array_equal(np.asarray(idx), np.argmax(s, axis=1))


@pytest.mark.parametrize("n", [1, 15, 16, 17, 257, 8400, 70001])
def test_integer_cumsum_is_exact(n):
    flags = np.random.default_rng(n).random(n) < 0.6
    got = np.asarray(jax.jit(_integer_cumsum)(jnp.asarray(flags, jnp.float32)))
    np.testing.assert_array_equal(got, np.cumsum(flags))


# ----------------------------------------------------------------------------- degenerate input
@pytest.mark.parametrize("method", ["hard", "linear", "gaussian"])
def test_nothing_above_threshold(method):
    boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (20, 1))
    scores = np.full(20, 0.01, np.float32)
    idx, s, v = nms(boxes, scores, 0.5, max_output=5, score_threshold=0.5, method=method)
    assert not np.asarray(v).any()
    assert (np.asarray(idx) == -1).all() and (np.asarray(s) == 0).all()


@pytest.mark.parametrize("method", ["hard", "gaussian"])
def test_nan_and_inf_scores_never_selected(method):
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70],
                      [80, 80, 90, 90]], np.float32)
    scores = np.array([np.nan, np.inf, 0.3, -np.inf, 0.6], np.float32)
    idx, s, v = nms(boxes, scores, 0.5, max_output=5, method=method, score_threshold=0.001)
    np.testing.assert_array_equal(np.asarray(idx)[np.asarray(v)], [4, 2])
    assert np.isfinite(np.asarray(s)).all()


@pytest.mark.parametrize("method,sigma", [("hard", 0.5), ("linear", 0.5), ("gaussian", 0.5),
                                          ("gaussian", "mean")])
def test_nan_coordinate_boxes_act_like_isolated_boxes(method, sigma):
    """A box with a NaN coordinate (finite score) neither suppresses / decays any box nor is
    suppressed / decayed: the result equals that of the same problem with each such box moved
    far away from all the others (the IoU kernels use compare-and-select min/max, which do not
    propagate NaN by themselves)."""
    rng = np.random.default_rng(11)
    n = 60
    boxes, scores, classes = random_problem(rng, n, num_classes=3)
    bad = np.array([5, 17, 33, 41])
    scores[bad] = [0.999, 0.6, 0.5, 0.05]                        # the best box is one of them
    nan_boxes, far_boxes = boxes.copy(), boxes.copy()
    for j, i in enumerate(bad):
        nan_boxes[i, j % 4] = np.nan                             # one NaN coordinate each
        far_boxes[i] = [1e4 + 100 * j, 1e4, 1e4 + 100 * j + 10, 1e4 + 10]
    run = functools.partial(nms, iou_threshold=0.3, max_output=n, classes=classes,
                            score_threshold=0.001, method=method, sigma=sigma)
    got, want = run(nan_boxes, scores), run(far_boxes, scores)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    np.testing.assert_array_equal(np.asarray(got[2]), np.asarray(want[2]))
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-6)
    assert set(bad) <= set(np.asarray(got[0]).tolist())
    # and the problem is not trivial: boxes do get suppressed / decayed
    idx, out, valid = (np.asarray(a) for a in want)
    if method == "hard":
        assert valid.sum() < (scores >= 0.001).sum()
    else:
        assert (out[valid] < scores[idx[valid]]).any()


def test_zero_area_boxes_neither_suppress_nor_are_suppressed():
    boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [5, 0, 5, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    idx, s, v = nms(boxes, scores, 0.1, max_output=4)
    np.testing.assert_array_equal(np.asarray(idx), [0, 1, 2, 3])
    assert np.asarray(v).all()
    idx, s, v = nms(boxes, scores, 0.1, max_output=4, method="gaussian")
    np.testing.assert_allclose(np.asarray(s), scores)  # IoU 0 -> no decay


def test_identical_boxes_keep_one():
    boxes = np.tile(np.array([[10, 10, 30, 40]], np.float32), (6, 1))
    scores = np.array([0.2, 0.7, 0.7, 0.1, 0.5, 0.3], np.float32)
    idx, s, v = nms(boxes, scores, 0.65, max_output=6)
    np.testing.assert_array_equal(np.asarray(idx)[np.asarray(v)], [1])
    # class-aware: one per class
    classes = np.array([0, 1, 1, 2, 0, 2], np.int32)
    idx, s, v = nms(boxes, scores, 0.65, max_output=6, classes=classes)
    np.testing.assert_array_equal(np.asarray(idx)[np.asarray(v)], [1, 4, 5])


def test_max_output_smaller_than_survivors_keeps_best():
    rng = np.random.default_rng(3)
    xy = np.stack(np.meshgrid(np.arange(10), np.arange(10)), -1).reshape(-1, 2) * 20.0
    boxes = np.concatenate([xy, xy + 10], 1).astype(np.float32)  # 100 disjoint boxes
    scores = rng.permutation(100).astype(np.float32) / 100
    for method in ("hard", "linear"):
        idx, s, v = nms(boxes, scores, 0.5, max_output=7, method=method)
        np.testing.assert_array_equal(np.asarray(idx), np.argsort(-scores)[:7])
        assert np.asarray(v).all()


def test_batched_equals_per_image_and_jits_under_vmap():
    rng = np.random.default_rng(11)
    probs = [random_problem(rng, 200, num_classes=2, frac_valid=f) for f in (0.2, 1.0, 0.0)]
    boxes, scores, classes = (np.stack(x) for x in zip(*probs))
    got = nms_batched(boxes, scores, 0.5, max_output=30, classes=classes, score_threshold=0.05)
    vm = jax.jit(jax.vmap(functools.partial(nms, iou_threshold=0.5, max_output=30,
                                            score_threshold=0.05)))(boxes, scores,
                                                                    classes=classes)
    for b in range(3):
        want = np_greedy_nms(boxes[b], scores[b], 0.5, 30, classes[b], 0.05)
        for out in (got, vm):
            np.testing.assert_array_equal(np.asarray(out[0][b])[np.asarray(out[2][b])], want)


def test_bad_arguments():
    boxes, scores = jnp.zeros((4, 4)), jnp.zeros(4)
    with pytest.raises(ValueError):
        nms(boxes, scores, 0.5, max_output=2, method="soft")
    with pytest.raises(ValueError):
        nms(boxes, scores, 0.5, max_output=2, method="linear", sigma="mean")

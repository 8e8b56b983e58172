"""yolox_jax.postprocess against the official YOLOX postprocess outputs and a NumPy oracle."""
import jax
import numpy as np
import pytest

import yolox_jax
from yolox_jax.ops.postprocess import Detections

from test_nms import np_greedy_nms, np_soft_nms  # tests/ops is on sys.path (rootdir mode)


@pytest.mark.parametrize("which", ["nano", "tiny"])
def test_matches_official_postprocess(which, nano_ref, tiny_ref):
    ref = {"nano": nano_ref, "tiny": tiny_ref}[which]
    dets = yolox_jax.postprocess(ref["decoded"], conf_threshold=0.05, nms_threshold=0.45,
                                 max_detections=300)
    assert isinstance(dets, Detections)
    dets = jax.device_get(dets)
    assert dets.boxes_xyxy.shape == (2, 300, 4) and dets.classes.dtype == np.int32
    for b in range(2):
        want = ref[f"postprocess/{b}"]
        n = len(want)
        assert dets.valid[b].sum() == n and dets.valid[b][:n].all()
        np.testing.assert_allclose(dets.boxes_xyxy[b, :n], want[:, :4], atol=1e-3, rtol=0)
        np.testing.assert_array_equal(dets.classes[b, :n], want[:, 6].astype(np.int32))
        np.testing.assert_allclose(dets.scores[b, :n], want[:, 4] * want[:, 5], rtol=1e-6)
        np.testing.assert_allclose(dets.obj[b, :n], want[:, 4], rtol=1e-6)
        np.testing.assert_allclose(dets.class_conf[b, :n], want[:, 5], rtol=1e-6)
        assert (dets.classes[b, n:] == -1).all() and (dets.scores[b, n:] == 0).all()
    if which == "tiny":
        assert [int(dets.valid[b].sum()) for b in range(2)] == [205, 76]


def _oracle_inputs(decoded):
    cxcy, wh = decoded[..., :2], decoded[..., 2:4]
    boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], -1).astype(np.float32)
    cls = decoded[..., 5:]
    scores = (decoded[..., 4] * cls.max(-1)).astype(np.float32)
    return boxes, scores, cls.argmax(-1)


def test_agnostic_and_soft_match_numpy(tiny_ref):
    decoded = tiny_ref["decoded"]
    boxes, scores, classes = _oracle_inputs(decoded)
    agn = jax.device_get(yolox_jax.postprocess(decoded, conf_threshold=0.05, nms_threshold=0.45,
                                               class_agnostic=True, max_detections=50))
    soft = jax.device_get(yolox_jax.postprocess(decoded, conf_threshold=0.05, nms_threshold=0.45,
                                                max_detections=50, method="gaussian",
                                                sigma="mean"))
    for b in range(2):
        want = np_greedy_nms(boxes[b], scores[b], 0.45, 50, None, 0.05)
        n = len(want)
        assert agn.valid[b].sum() == n
        np.testing.assert_array_equal(agn.boxes_xyxy[b, :n], boxes[b, want])
        np.testing.assert_array_equal(agn.classes[b, :n], classes[b, want])
        want, want_s = np_soft_nms(boxes[b], scores[b], 0.45, 50, classes[b], 0.05, "gaussian",
                                   "mean")
        n = len(want)
        assert soft.valid[b].sum() == n
        np.testing.assert_array_equal(soft.boxes_xyxy[b, :n], boxes[b, want])
        np.testing.assert_allclose(soft.scores[b, :n], want_s, rtol=1e-5)


def test_nothing_above_threshold_and_under_outer_jit(nano_ref):
    decoded = nano_ref["decoded"]
    f = jax.jit(lambda d: yolox_jax.postprocess(d, conf_threshold=0.99, nms_threshold=0.45,
                                                max_detections=10))
    dets = jax.device_get(f(decoded))
    assert not dets.valid.any() and (dets.classes == -1).all() and (dets.boxes_xyxy == 0).all()

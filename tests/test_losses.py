"""YOLOX loss: official reference losses (train-mode forward), options, jit and gradients."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax.losses import bce_with_logits, iou_loss, yolox_loss
from yolox_jax.ops.anchors import anchor_grid

KEYS = ("total_loss", "iou_loss", "l1_loss", "conf_loss", "cls_loss", "num_fg")


@functools.lru_cache(maxsize=None)
def _jloss(image_hw, options=()):
    return jax.jit(functools.partial(yolox_loss, image_hw=image_hw, **dict(options)))


def _train_mode_raw(ref, name, conv):
    """Train-mode (batch statistics) forward of the converted official weights."""
    import yolox_jax
    from yolox_jax.convert import from_torch_state_dict

    model = yolox_jax.build_model(name, num_classes=ref["raw/0"].shape[1] - 5, conv=conv)
    sd = {k[len("state_dict/"):]: v for k, v in ref.items() if k.startswith("state_dict/")}
    variables = from_torch_state_dict(sd, name, num_classes=ref["raw/0"].shape[1] - 5)
    images = np.ascontiguousarray(ref["input_bgr_nchw"].transpose(0, 2, 3, 1)[..., ::-1])
    raw, _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, images)
    return raw


@pytest.mark.parametrize("conv", ["xla", "cpu"])
@pytest.mark.parametrize("name,fixture", [("yolox-nano", "nano_ref"), ("yolox-tiny", "tiny_ref")])
def test_matches_official_train_mode_losses(name, fixture, conv, request):
    ref = request.getfixturevalue(fixture)
    raw = _train_mode_raw(ref, name, conv)
    labels = ref["labels"]
    mask = labels.sum(-1) > 0
    hw = tuple(ref["input_bgr_nchw"].shape[2:])
    for use_l1, prefix in ((False, "loss_nol1"), (True, "loss_l1")):
        out = _jloss(hw, (("use_l1", use_l1),))(raw, labels, mask)
        for k in KEYS:
            want = float(ref[f"{prefix}/{k}"])
            got = float(out[k])
            assert abs(got - want) <= 1e-4 * max(abs(want), 1e-6), (prefix, k, got, want)


# --------------------------------------------------------------------------------------------
# Synthetic batches (no model needed).

HW = (64, 96)
C = 4


def _batch(seed=0, b=3, m=6):
    rng = np.random.default_rng(seed)
    grid_xy, strides = anchor_grid(HW)
    a = grid_xy.shape[0]
    raw = rng.normal(0, 1, (b, a, 5 + C)).astype(np.float32)
    raw[..., 2:4] *= 0.3
    labels = np.zeros((b, m, 5), np.float32)
    mask = np.zeros((b, m), bool)
    counts = [3, 0, m][:b]
    for i, n in enumerate(counts):
        labels[i, :n, 0] = rng.integers(0, C, n)
        labels[i, :n, 1:3] = rng.uniform(8, 56, (n, 2))
        labels[i, :n, 3:5] = rng.uniform(6, 40, (n, 2))
        mask[i, :n] = True
    labels[1, 2:] = np.nan                                   # junk behind the mask
    return raw, labels, mask


def test_loss_is_jittable_and_gradient_finite():
    raw, labels, mask = _batch()
    for options in ((("use_l1", True),), (("obj_target", "max_iou"), ("iou_loss_type", "giou"))):
        fn = _jloss(HW, options)
        out = fn(raw, labels, mask)
        assert all(np.isfinite(float(out[k])) for k in KEYS)
        grad = jax.jit(jax.grad(lambda r: fn(r, labels, mask)["total_loss"]))(raw)
        assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).max()) > 0
        total = out["iou_loss"] + out["conf_loss"] + out["cls_loss"] + out["l1_loss"]
        np.testing.assert_allclose(float(out["total_loss"]), float(total), rtol=1e-6)


def test_empty_batch_only_objectness():
    raw, labels, mask = _batch()
    mask[:] = False
    out = _jloss(HW)(raw, labels, mask)
    # No gts: normaliser 1, every objectness target 0.
    want = float(jnp.sum(bce_with_logits(jnp.asarray(raw[..., 4]), 0.0)))
    np.testing.assert_allclose(float(out["conf_loss"]), want, rtol=1e-5)
    assert float(out["iou_loss"]) == 0 and float(out["cls_loss"]) == 0 and float(out["num_fg"]) == 1


def test_obj_target_max_iou_only_changes_negatives():
    raw, labels, mask = _batch(seed=1)
    base = _jloss(HW)(raw, labels, mask)
    soft = _jloss(HW, (("obj_target", "max_iou"),))(raw, labels, mask)
    for k in ("iou_loss", "cls_loss", "num_fg"):
        assert float(base[k]) == float(soft[k])
    assert float(base["conf_loss"]) != float(soft["conf_loss"])


def test_assign_kwargs_and_ota_pass_through():
    from yolox_jax.assign import ota
    raw, labels, mask = _batch(seed=2)
    base = _jloss(HW)(raw, labels, mask)
    out = jax.jit(lambda r: yolox_loss(r, labels, mask, HW, assign_kwargs={"topk_iou": 20}))(raw)
    assert float(out["num_fg"]) >= float(base["num_fg"])
    out_ota = jax.jit(lambda r: yolox_loss(r, labels, mask, HW, assign_fn=ota,
                                           assign_kwargs={"num_iters": 10}))(raw)
    assert np.isfinite(float(out_ota["total_loss"]))


def test_default_batched_assignment_equals_vmapped_simota_loss():
    """The loss's default (``simota_batch``: gt buckets, anchor compaction) changes no value."""
    from yolox_jax.assign import simota
    raw, labels, mask = _batch(seed=3)
    base = _jloss(HW)(raw, labels, mask)
    opts = {"candidates_per_gt": 2, "gt_buckets": (1, 2)}     # force compaction and its fallback
    small = jax.jit(lambda r: yolox_loss(r, labels, mask, HW, assign_kwargs=opts))(raw)
    ref = jax.jit(lambda r: yolox_loss(r, labels, mask, HW, assign_fn=simota))(raw)
    for k in KEYS:
        np.testing.assert_allclose(float(base[k]), float(ref[k]), rtol=1e-6, err_msg=k)
        np.testing.assert_allclose(float(small[k]), float(ref[k]), rtol=1e-6, err_msg=k)


def test_iou_loss_official_arithmetic():
    pred = jnp.array([[10.0, 10.0, 4.0, 4.0], [10.0, 10.0, 4.0, 4.0], [0.0, 0.0, 2.0, 2.0]])
    tgt = jnp.array([[10.0, 10.0, 4.0, 4.0], [12.0, 10.0, 4.0, 4.0], [5.0, 5.0, 2.0, 2.0]])
    np.testing.assert_allclose(iou_loss(pred, tgt), [0.0, 1 - (8 / 24) ** 2, 1.0], rtol=1e-6)
    # GIoU of disjoint boxes: iou 0, enclosing 7x7 = 49, union 8 -> giou = -41/49.
    np.testing.assert_allclose(iou_loss(pred, tgt, "giou")[2], 1 + 41 / 49, rtol=1e-6)

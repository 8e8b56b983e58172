"""Assigners by name: built-ins, module:function, register(); options reach the assigner; the
loss with ``assigner="simota"`` is the official default path."""
import jax
import numpy as np
import pytest

from yolox_jax.assign import registry
from yolox_jax.assign._simota import simota_batch
from yolox_jax.errors import UserError


def test_names_and_lookup():
    assert {"simota", "ota", "ota_soft", "tal", "atss", "dsl"} <= set(registry.assigner_names())
    assert registry.get_assigner("simota") is simota_batch
    assert registry.get_assigner("yolox_jax.assign._simota:simota_batch") is simota_batch
    with pytest.raises(UserError, match="unknown assigner 'simotta'.*simota") as err:
        registry.get_assigner("simotta")
    assert err.value.where == "train.assigner"
    with pytest.raises(UserError, match="cannot load assigner"):
        registry.get_assigner("no_such_module:fn")


def test_register_and_options_reach_the_assigner():
    """A registered assigner is called by the loss with the configured options unchanged."""
    from yolox_jax.losses import yolox_loss

    seen = {}

    def mine(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes,
             gt_mask, **options):
        seen.update(options, shapes=(pred_boxes.shape, gt_boxes.shape))
        return simota_batch(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes,
                            gt_classes, gt_mask, topk_iou=options["topk_iou"])

    registry.register("mine", mine)
    try:
        rng = np.random.default_rng(0)
        raw = rng.normal(size=(2, 126, 8)).astype(np.float32)
        labels = np.array([[[1, 40, 30, 20, 16], [0, 0, 0, 0, 0]]] * 2, np.float32)
        mask = np.array([[True, False]] * 2)
        out = yolox_loss(raw, labels, mask, (64, 96), assigner="mine",
                         assign_kwargs={"topk_iou": 7, "anything": "x"})
        ref = yolox_loss(raw, labels, mask, (64, 96), assign_kwargs={"topk_iou": 7})
    finally:
        registry._REGISTERED.pop("mine")
    assert seen["topk_iou"] == 7 and seen["anything"] == "x"
    assert seen["shapes"] == ((2, 126, 4), (2, 2, 4))
    for k in ref:
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(ref[k]))


def test_which_assigners_are_differentiable(tmp_path, monkeypatch):
    """Built-ins, registered names and module:function paths (by the function's attribute)."""
    assert registry.is_differentiable("ota_soft") and not registry.is_differentiable("simota")
    (tmp_path / "my_soft_mod.py").write_text(
        "def soft(*a, **k):\n    pass\nsoft.differentiable = True\n"
        "def hard(*a, **k):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.is_differentiable("my_soft_mod:soft")
    assert not registry.is_differentiable("my_soft_mod:hard")
    registry.register("mine_soft", lambda *a, **k: None, differentiable=True)
    registry.register("mine_hard", lambda *a, **k: None)
    try:
        assert registry.is_differentiable("mine_soft")
        assert not registry.is_differentiable("mine_hard")
    finally:
        registry._REGISTERED.pop("mine_soft")
        registry._REGISTERED.pop("mine_hard")
        registry._DIFFERENTIABLE.discard("mine_soft")


def test_config_keys_reach_the_loss():
    from yolox_jax import config as config_lib
    from yolox_jax.train.loop import check_assigner, loss_options

    cfg = config_lib.apply_overrides(config_lib.Config(), [
        "train.assigner=tal", 'train.assigner_options={"topk": 9, "alpha": 0.5}'])
    opts = loss_options(cfg)
    assert opts["assigner"] == "tal" and opts["assign_kwargs"] == {"topk": 9, "alpha": 0.5}
    cfg = config_lib.apply_overrides(config_lib.Config(), ['train.assigner_options={"topk_iou": 20}'])
    assert loss_options(cfg)["assign_kwargs"] == {"topk_iou": 20, "center_radius": 1.5}
    check_assigner(cfg)
    with pytest.raises(UserError, match="expects a dict"):
        config_lib.apply_overrides(config_lib.Config(), ["train.assigner_options=3"])
    bad = config_lib.apply_overrides(config_lib.Config(), ['train.assigner_options={"topk": 9}'])
    with pytest.raises(UserError, match="topk") as err:
        check_assigner(bad)
    assert err.value.where == "train.assigner_options"


@pytest.mark.parametrize("name", ["simota", "ota", "ota_soft", "tal", "atss", "dsl"])
def test_every_builtin_trains_through_the_loss(name):
    """Each built-in, by name, inside the jitted loss and its gradient: finite loss, finite
    non-zero gradient, some foreground."""
    from yolox_jax.losses import yolox_loss

    rng = np.random.default_rng(0)
    raw = rng.normal(0, 0.5, size=(2, 126, 8)).astype(np.float32)
    labels = np.array([[[1, 40, 30, 24, 20], [2, 70, 40, 30, 26], [0, 0, 0, 0, 0]],
                       [[0, 20, 20, 16, 16], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]], np.float32)
    mask = labels[..., 3] > 0

    def loss(r):
        out = yolox_loss(r, labels, mask, (64, 96), assigner=name, use_l1=True)
        return out["total_loss"], out

    (value, out), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(raw)
    assert np.isfinite(float(value)) and float(out["num_fg"]) > 0
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_the_loss_asks_for_max_iou_only_where_its_target_uses_it():
    """An assigner that takes ``with_max_iou`` gets False under the default binary objectness
    target and True under the targets that read ``max_iou``; one that does not take it (only
    ``**options``) never receives it. Traced only (``jax.eval_shape``)."""
    from yolox_jax.losses import yolox_loss

    seen = []

    def explicit(*args, with_max_iou=True, **options):
        seen.append(("explicit", with_max_iou))
        return simota_batch(*args, with_max_iou=with_max_iou)

    def catch_all(*args, **options):
        seen.append(("catch_all", "with_max_iou" in options))
        return simota_batch(*args)

    raw = np.zeros((2, 126, 8), np.float32)
    labels = np.array([[[1, 40, 30, 20, 16]]] * 2, np.float32)
    mask = np.ones((2, 1), bool)
    for name, fn in (("explicit", explicit), ("catch_all", catch_all)):
        registry.register(name, fn)
        try:
            for target in ("binary", "max_iou", "iou"):
                jax.eval_shape(lambda r: yolox_loss(r, labels, mask, (64, 96), assigner=name,
                                                    obj_target=target), raw)
        finally:
            registry._REGISTERED.pop(name)
    assert seen == [("explicit", False), ("explicit", True), ("explicit", True),
                    ("catch_all", False), ("catch_all", False), ("catch_all", False)]


@pytest.mark.parametrize("name", ["simota", "tal", "atss", "dsl"])
def test_without_max_iou_every_other_field_is_unchanged(name):
    """``with_max_iou=False`` leaves ``max_iou`` None and every other field bitwise equal."""
    from yolox_jax.bench.assign import KEYS, make_inputs

    fn = registry.get_assigner(name)
    inputs = make_inputs(2, (64, 96), 3, 3, 5, seed=1)
    grid_xy, strides = inputs["grid_xy"], inputs["strides"]
    xs = [inputs[k] for k in KEYS if k not in ("grid_xy", "strides")]

    def run(flag):
        return jax.jit(lambda p, c, o, gb, gc, gm: fn(p, c, o, grid_xy, strides, gb, gc, gm,
                                                      with_max_iou=flag))(*xs)

    full, lean = run(True), run(False)
    assert lean.max_iou is None and full.max_iou is not None
    assert int(np.asarray(full.num_fg).sum()) > 0
    for field in full._fields:
        if field != "max_iou" and getattr(full, field) is not None:
            np.testing.assert_array_equal(np.asarray(getattr(lean, field)),
                                          np.asarray(getattr(full, field)), err_msg=field)

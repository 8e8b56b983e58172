"""build_model: official parameter counts, overrides, shapes, init, train mode, jit."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import yolox_jax
from yolox_jax.models.yolox import MODEL_NAMES, build_model
from yolox_jax.ops.anchors import num_anchors

# docs/official-behaviour.md §1.7: sum(p.numel() for p in model.parameters()) of the official build
# (conv weights, pred biases, BN weight/bias; BN running stats are buffers, not counted).
OFFICIAL_PARAMS = {
    "yolox-nano": 912_159, "yolox-tiny": 5_055_855, "yolox-s": 8_968_255,
    "yolox-m": 25_326_495, "yolox-l": 54_208_895, "yolox-x": 99_071_455,
    "yolox-darknet53": 63_724_767,
}
KEY = jax.random.key(0, impl="rbg")  # XLA:CPU compiles an rbg init about 2x faster


def shapes(model, hw=(64, 64), batch=1):
    return jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct((batch, *hw, 3), jnp.float32))


def count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def leaf_paths(tree):
    return [tuple(k.key for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


@pytest.fixture(scope="module")
def small():
    """A custom small model as the trainer builds it, initialised at a non-square size."""
    model = build_model("yolox-nano", num_classes=3, width=0.125)
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 96, 3), maxval=255.0)
    # jit: eager op-by-op init/apply of ~100 layers is several times slower than compiling.
    variables = jax.jit(lambda k, x: model.init(k, x, train=False))(KEY, x)
    return model, variables, x


@pytest.fixture(scope="module")
def small_fwd(small):
    model = small[0]
    return jax.jit(lambda v, x: model.apply(v, x, train=False))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_param_count_equals_official(name):
    v = shapes(build_model(name))
    assert set(v) == {"params", "batch_stats"}
    assert count(v["params"]) == OFFICIAL_PARAMS[name]


def test_model_names_and_lazy_export():
    assert set(MODEL_NAMES) == set(OFFICIAL_PARAMS)
    assert yolox_jax.build_model is build_model


def test_unknown_name_or_override_raises_listing_valid_options():
    with pytest.raises(ValueError, match="yolox-nano.*yolox-darknet53"):
        build_model("yolox-q")
    with pytest.raises(ValueError, match="depthwise"):
        build_model("yolox-s", widht=0.5)
    with pytest.raises(ValueError, match="silu"):
        build_model("yolox-s", act="gelu")
    with pytest.raises(ValueError, match="21, 53"):
        build_model("yolox-darknet53", depth=0.33)


def test_overrides_change_the_architecture():
    s = shapes(build_model("yolox-s"))["params"]
    # width scales channels, depth the CSP repeats, depthwise swaps 3x3 convs for DWConv.
    narrow = shapes(build_model("yolox-s", width=0.25))["params"]
    assert narrow["backbone"]["backbone"]["stem"]["conv"]["conv"]["kernel"].shape == (3, 3, 12, 16)
    deep = shapes(build_model("yolox-s", depth=0.67))["params"]
    assert "m_1" in deep["backbone"]["backbone"]["dark2_1"]
    assert "m_1" not in s["backbone"]["backbone"]["dark2_1"]
    dw = shapes(build_model("yolox-s", depthwise=True))["params"]
    assert "dconv" in dw["head"]["cls_convs_0_0"]
    assert build_model("yolox-s", act="relu").act == "relu"
    assert count(shapes(build_model("yolox-darknet53", depth=21))["params"]) < count(
        shapes(build_model("yolox-darknet53"))["params"])


def test_mixed_precision_keeps_float32_params_and_output():
    model = build_model("yolox-nano", num_classes=3, width=0.125, dtype=jnp.bfloat16)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    v = jax.eval_shape(model.init, KEY, x)
    assert {a.dtype for a in jax.tree.leaves(v)} == {jnp.dtype(jnp.float32)}
    out = jax.eval_shape(model.apply, v, x)
    assert out.dtype == jnp.float32


def test_tree_layout_and_leaf_names():
    v = shapes(build_model("yolox-s"))
    p, bs = v["params"], v["batch_stats"]
    assert sorted(p) == ["backbone", "head"]
    assert "dark2_1" in p["backbone"]["backbone"] and "C3_p4" in p["backbone"]
    assert sorted(k for k in p["head"] if k.endswith("_0") and "convs" not in k) == [
        "cls_preds_0", "obj_preds_0", "reg_preds_0", "stems_0"]
    assert {path[-1] for path in leaf_paths(p)} == {"kernel", "scale", "bias"}
    assert {path[-1] for path in leaf_paths(bs)} == {"mean", "var"}
    # Only the 9 prediction convs carry a conv bias; every other "bias" belongs to a BN.
    conv_bias = [pth for pth in leaf_paths(p) if pth[-1] == "bias" and pth[-2] != "bn"]
    assert len(conv_bias) == 9 and all("_preds_" in pth[-2] for pth in conv_bias)
    d53 = shapes(build_model("yolox-darknet53"))["params"]
    assert d53["backbone"]["backbone"]["stem_0"]["conv"]["kernel"].shape == (3, 3, 3, 32)
    assert "out1_cbl" in d53["backbone"] and "dark5_7" in d53["backbone"]["backbone"]


def test_init_follows_pytorch_defaults(small):
    _, v, _ = small
    for path, leaf in jax.tree_util.tree_leaves_with_path(v["params"]):
        names = [k.key for k in path]
        leaf = np.asarray(leaf)
        if names[-1] == "kernel":
            fan_in = leaf.shape[0] * leaf.shape[1] * leaf.shape[2]
            assert np.abs(leaf).max() <= 1 / math.sqrt(fan_in) + 1e-7, names
            assert leaf.std() > 0.25 / math.sqrt(fan_in), names  # not all-zero/degenerate
        elif names[-2] == "bn":
            np.testing.assert_array_equal(leaf, 1.0 if names[-1] == "scale" else 0.0)
        elif names[-2].startswith(("cls_preds", "obj_preds")):
            np.testing.assert_allclose(leaf, -math.log(0.99 / 0.01), rtol=1e-6)
        else:  # reg_preds bias: PyTorch default U(+-1/sqrt(fan_in))
            assert np.abs(leaf).max() <= 1 / math.sqrt(32) and leaf.std() > 0  # hid = 32


@pytest.mark.parametrize("name", ["yolox-s", "yolox-x", "yolox-darknet53"])
def test_output_shape_non_square(name):
    model = build_model(name, num_classes=7)
    x = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)
    out = jax.eval_shape(model.apply, shapes(model, (64, 96), 2), x)
    assert out.shape == (2, 8 * 12 + 4 * 6 + 2 * 3, 12) == (2, num_anchors((64, 96)), 12)


def test_sides_not_multiple_of_32_raise(small):
    model, v, _ = small
    with pytest.raises(ValueError, match="multiple"):
        model.apply(v, jnp.zeros((1, 64, 80, 3)))
    with pytest.raises(ValueError, match="NHWC"):
        model.apply(v, jnp.zeros((1, 3, 64, 64)))


def test_eval_forward_under_jit(small, small_fwd):
    _, v, x = small
    raw = small_fwd(v, x)
    assert raw.shape == (2, num_anchors((64, 96)), 8) and raw.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(raw)))
    # Eval mode has no cross-image coupling: each image alone gives its row of the batch.
    np.testing.assert_allclose(small_fwd(v, x[::-1])[::-1], raw, rtol=1e-5, atol=1e-5)


def test_anchor_order_is_level_then_row_major(small, small_fwd):
    """A row-major flatten puts the anchor at (y, x) of level 0 at index y*W + x."""
    _, v, x = small
    raw = small_fwd(v, x)
    # Only the top-left 8x8 input pixels differ; the stride-8 anchor (0,0) must change and the
    # anchor (0, 11) of the 8x12 grid (far right, beyond any receptive field) must not.
    x2 = x.at[:, :8, :8].set(0.0)
    raw2 = small_fwd(v, x2)
    diff = jnp.abs(raw2 - raw).max(axis=(0, 2))
    assert diff[0] > 0
    assert diff[11] == 0 and diff[7 * 12 + 11] == 0


def test_train_mode_updates_batch_stats_like_pytorch(small):
    model, v, x = small
    step = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    raw, updates = step(v, x)
    assert raw.shape == (2, num_anchors((64, 96)), 8)
    assert set(updates) == {"batch_stats"}
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(v["batch_stats"])
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                                           updates["batch_stats"], v["batch_stats"]))
    assert all(changed)

    # Hand computation for the stem conv: Focus slicing, 3x3 conv (pad 1), batch stats.
    stem = v["params"]["backbone"]["backbone"]["stem"]["conv"]
    focus = np.concatenate([x[:, ::2, ::2], x[:, 1::2, ::2], x[:, ::2, 1::2], x[:, 1::2, 1::2]],
                           axis=-1).astype(np.float64)
    w = np.asarray(stem["conv"]["kernel"], np.float64)
    xp = np.pad(focus, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, wd = focus.shape[1:3]
    conv = sum(np.einsum("bhwc,co->bhwo", xp[:, i:i + h, j:j + wd], w[i, j])
               for i in range(3) for j in range(3))
    n = conv.shape[0] * h * wd
    old = v["batch_stats"]["backbone"]["backbone"]["stem"]["conv"]["bn"]
    new = updates["batch_stats"]["backbone"]["backbone"]["stem"]["conv"]["bn"]
    np.testing.assert_allclose(new["mean"], 0.97 * np.asarray(old["mean"])
                               + 0.03 * conv.mean((0, 1, 2)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(new["var"], 0.97 * np.asarray(old["var"])
                               + 0.03 * conv.var((0, 1, 2)) * n / (n - 1), rtol=1e-5)

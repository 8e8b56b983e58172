"""Checkpoint conversion: official key layout, round trips, BGR folding, error reporting."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax import convert
from yolox_jax.models.yolox import MODEL_NAMES, build_model

# docs/official-behaviour.md §1.8: keys of the official state_dict, BN buffers included.
OFFICIAL_KEYS = {"yolox-nano": 642, "yolox-tiny": 462, "yolox-s": 462, "yolox-m": 606,
                 "yolox-l": 750, "yolox-x": 894, "yolox-darknet53": 528}


def random_state_dict(name, num_classes=80, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape in convert.torch_key_shapes(name, num_classes, **overrides).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = np.zeros((), np.int64)
        else:
            sd[key] = rng.standard_normal(shape, dtype=np.float32)
    return sd


def ref_state_dict(ref):
    return {k[len("state_dict/"):]: v for k, v in ref.items() if k.startswith("state_dict/")}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_key_count_equals_official(name):
    keys = convert.torch_key_shapes(name)
    assert len(keys) == OFFICIAL_KEYS[name]
    assert sum(k.endswith(".num_batches_tracked") for k in keys) * 6 + 18 == len(keys)


@pytest.mark.parametrize("name,fixture,num_classes", [("yolox-nano", "nano_ref", 80),
                                                      ("yolox-tiny", "tiny_ref", 3)])
def test_keys_and_shapes_equal_official_state_dict(request, name, fixture, num_classes):
    sd = ref_state_dict(request.getfixturevalue(fixture))
    want = {k: tuple(v.shape) for k, v in sd.items()}
    assert convert.torch_key_shapes(name, num_classes) == want


def test_yolox_s_key_grammar():
    keys = convert.torch_key_shapes("yolox-s")
    assert sum(k.endswith(".bn.running_var") for k in keys) == 74  # 74 BaseConvs
    for key in ["backbone.backbone.stem.conv.conv.weight",
                "backbone.backbone.dark3.1.m.2.conv2.bn.running_mean",
                "backbone.backbone.dark5.1.conv2.conv.weight",
                "backbone.C3_n4.conv3.bn.bias", "backbone.lateral_conv0.conv.weight",
                "head.cls_convs.2.1.conv.weight", "head.obj_preds.1.bias"]:
        assert key in keys, key
    assert keys["backbone.backbone.stem.conv.conv.weight"] == (32, 12, 3, 3)
    assert keys["head.cls_preds.0.weight"] == (80, 128, 1, 1)


def assert_round_trip(name, **overrides):
    sd = random_state_dict(name, seed=1, **overrides)
    variables = convert.from_torch_state_dict(sd, name, **overrides)
    expected = jax.eval_shape(build_model(name, **overrides).init, jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    assert jax.tree.structure(variables) == jax.tree.structure(expected)
    same = jax.tree.map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype,
                        variables, expected)
    assert all(jax.tree.leaves(same))
    back = convert.to_torch_state_dict(variables, name, **overrides)
    assert back.keys() == sd.keys()
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    return sd, variables


@pytest.mark.parametrize("name", ["yolox-s", "yolox-m", "yolox-l", "yolox-x"])
def test_round_trip_large_variants(name):
    # Width only changes channel counts, so a narrow copy has exactly the official key set
    # (checked here) and exercises the same mapping at a fraction of the memory; yolox-s and
    # darknet53 are also converted at full size.
    width = None if name == "yolox-s" else 0.25
    overrides = {} if width is None else {"width": width}
    assert convert.torch_key_shapes(name, **overrides).keys() == convert.torch_key_shapes(
        name).keys()
    assert_round_trip(name, **overrides)


def test_round_trip_darknet53_full_size_folds_first_conv():
    sd, v = assert_round_trip("yolox-darknet53")
    key = "backbone.backbone.stem.0.conv.weight"
    assert sd[key].shape == (32, 3, 3, 3)
    got = np.asarray(v["params"]["backbone"]["backbone"]["stem_0"]["conv"]["kernel"])
    np.testing.assert_array_equal(got, sd[key][:, ::-1].transpose(2, 3, 1, 0))


def test_leaf_mapping_transposes_and_folds_bgr():
    sd = random_state_dict("yolox-nano", num_classes=3, seed=2)
    v = convert.from_torch_state_dict(sd, "yolox-nano", num_classes=3)
    bb = v["params"]["backbone"]["backbone"]
    dconv = sd["backbone.backbone.dark2.0.dconv.conv.weight"]  # [C, 1, 3, 3] depthwise
    np.testing.assert_array_equal(bb["dark2_0"]["dconv"]["conv"]["kernel"],
                                  dconv.transpose(2, 3, 1, 0))
    assert bb["dark2_0"]["dconv"]["conv"]["kernel"].shape == (3, 3, 1, dconv.shape[0])
    bn = "backbone.C3_p3.m.0.conv2.pconv.bn."
    node = v["params"]["backbone"]["C3_p3"]["m_0"]["conv2"]["pconv"]["bn"]
    np.testing.assert_array_equal(node["scale"], sd[bn + "weight"])
    np.testing.assert_array_equal(node["bias"], sd[bn + "bias"])
    stats = v["batch_stats"]["backbone"]["C3_p3"]["m_0"]["conv2"]["pconv"]["bn"]
    np.testing.assert_array_equal(stats["mean"], sd[bn + "running_mean"])
    np.testing.assert_array_equal(stats["var"], sd[bn + "running_var"])
    np.testing.assert_array_equal(v["params"]["head"]["reg_preds_2"]["bias"],
                                  sd["head.reg_preds.2.bias"])
    # Stem: input channel 3b+c (B, G, R of Focus block b) becomes 3b+2-c (R, G, B).
    stem = sd["backbone.backbone.stem.conv.conv.weight"]
    got = np.asarray(bb["stem"]["conv"]["conv"]["kernel"])
    for b in range(4):
        for c in range(3):
            np.testing.assert_array_equal(got[:, :, 3 * b + 2 - c], stem[:, 3 * b + c].transpose(1, 2, 0))


@pytest.mark.parametrize("cin", [3, 12])
def test_bgr_fold_gives_same_conv_output(cin):
    """conv(RGB image, folded weight) == conv(BGR image, official weight)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, cin, 3, 3), dtype=np.float32)
    rgb = rng.uniform(0, 255, (1, 8, 8, cin)).astype(np.float32)
    bgr = rgb.reshape(1, 8, 8, cin // 3, 3)[..., ::-1].reshape(1, 8, 8, cin)
    conv = lambda x, w_oihw: jax.lax.conv_general_dilated(  # noqa: E731
        x, jnp.asarray(w_oihw.transpose(2, 3, 1, 0)), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(conv(rgb, convert._bgr_to_rgb_inputs(w)), conv(bgr, w),
                               rtol=1e-5, atol=1e-3)


def test_custom_model_round_trip_and_prefix_and_optional_counters():
    kw = dict(num_classes=3, width=0.125)
    sd = random_state_dict("yolox-nano", seed=5, **kw)
    v = convert.from_torch_state_dict(sd, "yolox-nano", **kw)
    # DDP-style "module." keys, no BN counters: same result.
    ddp = {"module." + k: x for k, x in sd.items() if not k.endswith("num_batches_tracked")}
    v2 = convert.from_torch_state_dict(ddp, "yolox-nano", **kw)
    jax.tree.map(np.testing.assert_array_equal, v, v2)
    back = convert.to_torch_state_dict(v, "yolox-nano", **kw)
    jax.tree.map(np.testing.assert_array_equal, back, sd)


class FakeTensor:
    """Duck-typed stand-in for a torch tensor (torch is an optional dependency)."""

    def __init__(self, array):
        self.array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def is_floating_point(self):
        return self.array.dtype.kind == "f"

    def float(self):
        return FakeTensor(self.array.astype(np.float32))

    @property
    def shape(self):
        return self.array.shape

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


def test_accepts_tensor_like_values_and_half_precision():
    sd = random_state_dict("yolox-nano", num_classes=2, seed=6, width=0.125)
    fake = {k: FakeTensor(x.astype(np.float16) if x.dtype == np.float32 else x)
            for k, x in sd.items()}
    v = convert.from_torch_state_dict(fake, "yolox-nano", num_classes=2, width=0.125)
    assert {x.dtype for x in jax.tree.leaves(v)} == {jnp.dtype(jnp.float32)}
    kernel = v["params"]["head"]["cls_preds_1"]["kernel"]
    np.testing.assert_array_equal(
        kernel, sd["head.cls_preds.1.weight"].astype(np.float16).astype(np.float32)
        .transpose(2, 3, 1, 0))


def test_mismatches_reported_together(nano_ref):
    sd = ref_state_dict(nano_ref)
    del sd["backbone.C3_p3.conv2.bn.running_var"]
    sd["backbone.extra_layer.weight"] = np.zeros(3, np.float32)
    sd["head.stems.1.conv.weight"] = np.zeros((64, 128, 3, 3), np.float32)
    with pytest.raises(ValueError) as info:
        convert.from_torch_state_dict(sd, "yolox-nano")
    msg = str(info.value)
    assert "missing" in msg and "backbone.C3_p3.conv2.bn.running_var" in msg
    assert "unexpected" in msg and "backbone.extra_layer.weight" in msg
    assert "mis-shaped" in msg and "head.stems.1.conv.weight" in msg
    assert "(64, 128, 1, 1)" in msg and "(64, 128, 3, 3)" in msg


def test_wrong_num_classes_hint(tiny_ref):
    with pytest.raises(ValueError, match="num_classes"):
        convert.from_torch_state_dict(ref_state_dict(tiny_ref), "yolox-tiny")  # it has 3


def test_load_torch_checkpoint_without_torch_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match="pip install torch"):
        convert.load_torch_checkpoint(tmp_path / "x.pth", "yolox-nano")


def test_load_torch_checkpoint_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    sd = random_state_dict("yolox-nano", num_classes=2, seed=7, width=0.125)
    tsd = {k: torch.from_numpy(x) for k, x in sd.items()}
    want = convert.from_torch_state_dict(sd, "yolox-nano", 2, width=0.125)
    for i, obj in enumerate([{"model": tsd, "start_epoch": 3}, tsd]):
        torch.save(obj, tmp_path / f"{i}.pth")
        got = convert.load_torch_checkpoint(tmp_path / f"{i}.pth", "yolox-nano", 2, width=0.125)
        jax.tree.map(np.testing.assert_array_equal, got, want)

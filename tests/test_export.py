"""Inference export: a jax.export artifact (symbolic batch, post-processing optional, any
platform list) and an ONNX model compute what the Flax model computes, and ``yolox-jax export``
writes one from a checkpoint folder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax import build_model
from yolox_jax import export as ex
from yolox_jax.cli import main
from yolox_jax.errors import UserError
from yolox_jax.eval.evaluate import predict_batch
from yolox_jax.exported import load_exported, run_exported, save_exported
from yolox_jax.ops.anchors import decode

HW = (64, 64)


@pytest.fixture(scope="module")
def model():
    # The default (synthetic) config's model, so that the command line test can share it.
    return build_model("yolox-tiny", num_classes=3, width=0.125, conv="xla")


@pytest.fixture(scope="module")
def variables(model):
    """Random variables of the model's shapes (no init to compile): kernels scaled by fan-in
    (the stem's by 1/64 more, for 0..255 inputs), positive BatchNorm variances and scales. The
    outputs vary across anchors (raw values up to ~10, scores 1e-4..0.9), so NMS has work."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *HW, 3)),
                                               train=False))
    rng = np.random.default_rng(0)

    def fill(path, s):
        name = jax.tree_util.keystr(path)
        if len(s.shape) == 4:
            value = rng.normal(0, 1.45 / np.sqrt(np.prod(s.shape[:3])), s.shape)
            value = value / 64 if "stem" in name else value
        elif "var" in name or "scale" in name:
            value = rng.uniform(0.5, 1.5, s.shape)
        else:
            value = rng.normal(0, 0.1, s.shape)
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def images():
    """Three letterboxed test images [3, 64, 64, 3] float32: rectangles on noise, resized into
    the top-left corner, padded with 114."""
    from yolox_jax.data.transforms import letterbox

    rng = np.random.default_rng(1)
    out = []
    for h, w in [(48, 40), (30, 64), (64, 64)]:
        img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y:y + h // 3, x:x + w // 3] = rng.integers(0, 256, 3)
        out.append(letterbox(img, HW)[0])
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def reference(model, variables, images):
    """The Flax model's decoded output [3, A, 8] on ``images``."""
    raw = jax.jit(lambda x: model.apply(variables, x, train=False))(images)
    return np.asarray(decode(raw, HW))


def _close(actual, expected, atol=1e-4):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-4, atol=atol)


def test_artifact_equals_the_model_for_any_batch(model, variables, images, reference, tmp_path):
    exported = ex.export_model(model, variables, input_size=HW, batch="dynamic")
    path = save_exported(exported, tmp_path / "m.jaxexport")
    loaded = load_exported(path)
    assert str(loaded.in_avals[0].shape[0]) == "b"
    assert loaded.in_avals[0].shape[1:] == (*HW, 3)
    for b in (1, 3):
        _close(run_exported(loaded, images[:b]), reference[:b])
    with pytest.raises(ValueError, match="do not fit"):
        run_exported(loaded, images[:, :32])


def test_postprocessed_artifact_equals_predict_batch(model, variables, images):
    exported = ex.export_model(model, variables, input_size=HW, batch="dynamic",
                               postprocess=True, conf_threshold=0.01, nms_threshold=0.65,
                               max_detections=100)
    got = run_exported(jax.export.deserialize(exported.serialize()), images)
    want = jax.device_get(predict_batch(model, variables, jnp.asarray(images),
                                        conf_threshold=0.01, nms_threshold=0.65,
                                        max_detections=100))
    assert set(got) == set(ex.DETECTION_KEYS)
    assert np.asarray(want.valid).sum() > 10   # the comparison is not about empty rows
    np.testing.assert_array_equal(got["valid"], want.valid)
    np.testing.assert_array_equal(got["classes"], want.classes)
    _close(got["scores"], want.scores)
    # Corners in pixels, each the difference of a centre and a half side of ~10 px computed by
    # two differently fused programs: a corner near 0 keeps their absolute error (~1e-4 px).
    _close(got["boxes_xyxy"], want.boxes_xyxy, atol=1e-3)


def test_artifact_lists_requested_platforms(model, variables):
    exported = ex.export_model(model, variables, input_size=HW, platforms=("cpu", "cuda", "tpu"),
                               batch=2, postprocess=True)
    restored = jax.export.deserialize(exported.serialize())
    assert restored.platforms == ("cpu", "cuda", "tpu")
    assert restored.in_avals[0].shape == (2, *HW, 3)
    assert "boxes_xyxy: float32[2,100,4]" in ex.describe(restored)


@pytest.mark.parametrize("kwargs, key", [
    (dict(batch=0), "batch"), (dict(batch="any"), "batch"),
    (dict(input_size=(60, 64)), "input_size"), (dict(platforms=("gpu",)), "platforms")])
def test_bad_export_options_are_user_errors(model, variables, kwargs, key):
    with pytest.raises(UserError) as err:
        ex.export_model(model, variables, **{"input_size": HW, **kwargs})
    assert err.value.where == key


@pytest.mark.slow   # ~25 s: jax2onnx loads all its plugins (compiling their examples) per process
def test_onnx_equals_the_model(model, variables, images, reference, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("jax2onnx")
    path = ex.export_onnx(model, variables, tmp_path / "m.onnx", input_size=HW, batch="dynamic")
    assert "input  images: float32[B,64,64,3]" in ex.describe_onnx(path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for b in (1, 3):
        (out,) = session.run(None, {"images": images[:b]})
        _close(out, reference[:b])


def _checkpoint_folder(root, variables):
    """A run folder as training leaves it (``checkpoints/latest/<step>``), EMA = raw weights."""
    from yolox_jax.train.checkpoint import Checkpointer

    ck = Checkpointer(root / "checkpoints", keep=1, async_save=False)
    state = {"step": jnp.asarray(1, jnp.int32), "params": variables["params"],
             "batch_stats": variables["batch_stats"], "ema_params": variables["params"],
             "ema_batch_stats": variables["batch_stats"]}
    ck.save(1, state, None, {"model": {}}, {"step": 1})
    ck.wait()
    ck.close()
    return root


def test_command_exports_a_checkpoint(variables, images, reference, tmp_path, capsys):
    run_dir = _checkpoint_folder(tmp_path / "run", variables)
    out = tmp_path / "out" / "tiny.jaxexport"
    assert main(["export", "--ckpt", str(run_dir), "--out", str(out),
                 "data.test_size=(64,64)"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "images: float32[b,64,64,3]" in printed
    exported = load_exported(out)
    assert exported.platforms == ("cpu",)
    # The program of the first test, weights included: XLA's persistent cache compiles it once.
    _close(run_exported(exported, images), reference)


def test_command_without_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert main(["export", "--ckpt", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("yolox-jax: no such checkpoint") and "\n" not in err

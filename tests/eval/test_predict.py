"""Prediction on image files writes annotated copies; boxes come back in original pixels."""
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax import build_model
from yolox_jax.eval.draw import draw_boxes
from yolox_jax.eval.predict import list_images, predict_files, predict_image


@pytest.fixture(scope="module")
def tiny_model():
    model = build_model("yolox-tiny", num_classes=3, width=0.125)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3)), train=False))(
        jax.random.key(0, impl="rbg"))
    # Bias the objectness up so the random model emits detections to draw.
    head = jax.tree_util.tree_map(lambda x: x, variables["params"]["head"])
    for i in range(3):
        head[f"obj_preds_{i}"]["bias"] = jnp.full_like(head[f"obj_preds_{i}"]["bias"], 5.0)
        head[f"cls_preds_{i}"]["bias"] = jnp.full_like(head[f"cls_preds_{i}"]["bias"], 5.0)
    variables = {"params": {**variables["params"], "head": head}, "batch_stats": variables["batch_stats"]}
    return model, variables


def test_predict_files_writes_drawn_images(tmp_path, tiny_model):
    model, variables = tiny_model
    img = np.random.default_rng(0).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    out = predict_files(model, variables, [tmp_path], out_dir=tmp_path / "out", input_size=(64, 96),
                        conf_threshold=0.1, nms_threshold=0.45, class_names=["r", "g", "b"])
    assert len(out) == 1 and out[0][1] > 0
    drawn = cv2.imread(out[0][0])
    assert drawn.shape == img.shape
    assert np.any(drawn != img[..., ::-1])  # something was drawn


def test_predict_image_maps_boxes_to_original_pixels(tiny_model):
    model, variables = tiny_model
    img = np.random.default_rng(1).integers(0, 255, (128, 192, 3), dtype=np.uint8)
    boxes, scores, classes = predict_image(model, variables, img, input_size=(64, 96),
                                           conf_threshold=0.1, nms_threshold=0.45)
    small = cv2.resize(img, (96, 64), interpolation=cv2.INTER_LINEAR)
    b2, s2, c2 = predict_image(model, variables, small, input_size=(64, 96), conf_threshold=0.1,
                               nms_threshold=0.45)
    # The same letterboxed input, so the boxes differ exactly by the scale 2.
    np.testing.assert_allclose(boxes, b2 * 2.0, rtol=1e-5, atol=1e-3)
    assert len(scores) > 0 and np.all(np.diff(scores) <= 0)


def test_missing_image_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        list_images([tmp_path / "nope.png"])


def test_draw_boxes_leaves_input_untouched():
    img = np.zeros((40, 40, 3), np.uint8)
    out = draw_boxes(img, np.array([[5, 5, 30, 30.0]]), np.array([1]), np.array([0.9]), ["a", "b"])
    assert img.sum() == 0 and out.sum() > 0

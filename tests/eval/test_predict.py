"""Prediction on images, folders and videos: drawn copies, a drawn video with every frame,
detections.json in original pixels, batched = alone, clear errors; the predict command end to
end. Every prediction here runs one compiled program (one model, input size, batch size and
thresholds), the command line's too."""
import json
import shlex

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax import build_model
from yolox_jax.cli import build_parser, main
from yolox_jax.errors import UserError
from yolox_jax.eval.predict import (DETECTIONS_FILE, list_inputs, predict_files, predict_image,
                                    predict_images, read_frames)

NAME, CLASSES, WIDTH = "yolox-nano", 3, 0.125
INPUT = (64, 96)
BATCH = 4
KW = dict(input_size=INPUT, conf_threshold=0.3, nms_threshold=0.45, batch_size=BATCH)
VIDEO_HW, VIDEO_FRAMES = (64, 96), 10
IMAGE_SHAPES = {"a.png": (100, 140, 3), "b.jpg": (48, 80, 3)}


@pytest.fixture(scope="module")
def tiny_model():
    model = build_model(NAME, num_classes=CLASSES, width=WIDTH)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 64, 64, 3)), train=False))(
        jax.random.key(0, impl="rbg"))
    # Bias the objectness and classes up so that the random model emits detections to draw.
    head = dict(variables["params"]["head"])
    for i in range(3):
        for pred in ("obj_preds", "cls_preds"):
            layer = dict(head[f"{pred}_{i}"])
            layer["bias"] = jnp.full_like(layer["bias"], 5.0)
            head[f"{pred}_{i}"] = layer
    variables = {"params": {**variables["params"], "head": head},
                 "batch_stats": variables["batch_stats"]}
    return model, variables


def write_video(path, n=VIDEO_FRAMES, hw=VIDEO_HW):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (hw[1], hw[0]))
    rng = np.random.default_rng(3)
    for _ in range(n):
        writer.write(rng.integers(0, 255, (*hw, 3), dtype=np.uint8))
    writer.release()


def read_video(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    folder = root / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in IMAGE_SHAPES.items():
        cv2.imwrite(str(folder / name), rng.integers(0, 255, shape, dtype=np.uint8))
    (folder / "notes.txt").write_text("not a picture")  # skipped in a folder
    write_video(root / "clip.mp4")
    return folder, root / "clip.mp4"


@pytest.fixture(scope="module")
def predicted(tiny_model, inputs, tmp_path_factory):
    model, variables = tiny_model
    folder, video = inputs
    out = tmp_path_factory.mktemp("out")
    written = predict_files(model, variables, [folder, video], out_dir=out,
                            class_names=["r", "g", "b"], **KW)
    return out, written, json.loads((out / DETECTIONS_FILE).read_text())


def test_writes_drawn_images_and_video(predicted, inputs):
    out, written, _ = predicted
    folder, _ = inputs
    assert [p for p, _ in written] == [str(out / n) for n in ("a.png", "b.jpg", "clip.mp4")]
    assert all(n > 0 for _, n in written)
    for name, shape in IMAGE_SHAPES.items():
        drawn = cv2.imread(str(out / name))
        assert drawn.shape == shape
        assert np.any(drawn != cv2.imread(str(folder / name)))  # something was drawn
    frames = read_video(out / "clip.mp4")
    assert len(frames) == VIDEO_FRAMES
    assert all(f.shape == (*VIDEO_HW, 3) for f in frames)


def test_detections_json(predicted, inputs):
    _, written, dets = predicted
    folder, video = inputs
    assert len(dets) == sum(n for _, n in written)
    sizes = {str(folder / name): shape[:2] for name, shape in IMAGE_SHAPES.items()}
    sizes[str(video)] = VIDEO_HW
    frames = set()
    for d in dets:
        keys = {"image_id", "file_name", "category_id", "bbox", "score"}
        if d["file_name"] == str(video):
            keys.add("frame")
            frames.add((d["image_id"], d["frame"]))
        assert set(d) == keys
        assert d["category_id"] in range(CLASSES) and 0.3 <= d["score"] <= 1
        h, w = sizes[d["file_name"]]
        x, y, bw, bh = d["bbox"]
        assert 0 <= x and 0 <= y and bw >= 0 and bh >= 0
        assert x + bw <= w + 0.01 and y + bh <= h + 0.01
    # Images first (ids 0, 1), then frames 0..9 (ids 2..11), one id per picture.
    assert sorted(frames) == [(2 + i, i) for i in range(VIDEO_FRAMES)]
    assert {d["image_id"] for d in dets if d["file_name"] != str(video)} == {0, 1}


def test_a_frame_in_a_batch_equals_the_frame_alone(predicted, tiny_model, inputs):
    model, variables = tiny_model
    _, _, dets = predicted
    _, video = inputs
    frames = [f.image for f in read_frames(video)]
    k = 5  # batches [a.png, b.jpg, f0, f1], [f2, f3, f4, f5], ...: the last row of one
    boxes, scores, classes = predict_image(model, variables, frames[k], **KW)
    mine = [d for d in dets if d.get("frame") == k]
    assert len(mine) == len(scores) > 0
    np.testing.assert_allclose([d["score"] for d in mine], scores, atol=1e-5)
    np.testing.assert_array_equal([d["category_id"] for d in mine], classes)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    np.testing.assert_allclose([d["bbox"] for d in mine], xywh, atol=0.02)


def test_images_of_different_sizes_batch_like_alone(tiny_model):
    model, variables = tiny_model
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 255, shape, dtype=np.uint8)
              for shape in [(64, 96, 3), (100, 60, 3), (30, 200, 3)]]
    together = predict_images(model, variables, images, **KW)
    for image, (boxes, scores, classes) in zip(images, together):
        b1, s1, c1 = predict_image(model, variables, image, **KW)
        np.testing.assert_allclose(boxes, b1, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(scores, s1, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(classes, c1)


def test_predict_image_maps_boxes_to_original_pixels(tiny_model):
    model, variables = tiny_model
    img = np.random.default_rng(1).integers(0, 255, (128, 192, 3), dtype=np.uint8)
    boxes, scores, classes = predict_image(model, variables, img, **KW)
    small = cv2.resize(img, (96, 64), interpolation=cv2.INTER_LINEAR)
    b2, s2, c2 = predict_image(model, variables, small, **KW)
    # The same letterboxed input, so the boxes differ exactly by the scale 2.
    np.testing.assert_allclose(boxes, b2 * 2.0, rtol=1e-5, atol=1e-3)
    assert len(scores) > 0 and np.all(np.diff(scores) <= 0)


def test_wrong_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="nope.png"):
        list_inputs([tmp_path / "nope.png"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not an image or video"):
        list_inputs([tmp_path / "notes.txt"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images or videos"):
        list_inputs([empty])
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="cannot read this image.*bad.png"):
        list(read_frames(tmp_path / "bad.png"))
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="video.*bad.mp4"):
        list(read_frames(tmp_path / "bad.mp4"))


@pytest.fixture(scope="module")
def checkpoint(tiny_model, tmp_path_factory):
    """Our checkpoint folder holding the tiny model, with the config it records."""
    from yolox_jax import config as config_lib
    from yolox_jax.convert import save_checkpoint

    cfg = config_lib.load_config(NAME)
    cfg.model.num_classes, cfg.model.width = CLASSES, WIDTH
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(folder, tiny_model[1], config_lib.to_dict(cfg))
    return folder


def test_command_end_to_end(checkpoint, predicted, inputs, tmp_path, capsys):
    folder, video = inputs
    out = tmp_path / "cli"
    # The overrides stand after --path: they are taken out wherever they are.
    rc = main(["predict", "-n", NAME, "--ckpt", str(checkpoint), "--path", str(folder), str(video),
               f"model.num_classes={CLASSES}", f"model.width={WIDTH}", "model.conv=xla",
               "data.test_size=64,96", "--batch", str(BATCH), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "clip.mp4" in printed and DETECTIONS_FILE in printed
    dets = json.loads((out / DETECTIONS_FILE).read_text())
    lib = predicted[2]
    assert len(dets) == len(lib)
    for a, b in zip(dets, lib):  # the same weights and program as the library call
        assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.02)
    assert len(read_video(out / "clip.mp4")) == VIDEO_FRAMES


def test_command_missing_path_is_one_line(checkpoint, tmp_path, capsys):
    rc = main(["predict", "--ckpt", str(checkpoint), "--path", str(tmp_path / "nope.png")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "nope.png" in err and err.startswith("yolox-jax: ")


def test_help_examples_parse():
    from yolox_jax.cli import predict, split_overrides

    lines = [line.strip() for line in predict.__doc__.splitlines()
             if line.strip().startswith("yolox-jax predict")]
    assert len(lines) >= 3
    for line in lines:
        rest, overrides = split_overrides(shlex.split(line)[1:])
        args = build_parser().parse_args(rest)
        assert args.command == "predict" and args.path and args.ckpt

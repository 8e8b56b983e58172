"""Mistakes in what the user gives end in one line, ``yolox-jax: <what> (<file or key>)``, and
exit status 2, before anything compiles; ``--debug`` shows the traceback instead."""

import jax
import jax.numpy as jnp
import pytest

from yolox_jax.cli import main, split_overrides
from yolox_jax.errors import UserError


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("yolox-jax: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv, names", [
    (["train", "train.max_epochz=3"], "(train.max_epochz)"),
    (["train", "data.input_size=abc"], "(data.input_size)"),
    (["train", "data.input_size=(416,)"], "(data.input_size)"),
    (["train", "data.input_size=(100,100)"], "(data.input_size)"),
    (["train", "-n", "yolox-q"], "(yolox-q)"),
    (["train", "-f", "no/such/file.py"], "(no/such/file.py)"),
    (["train", "--data", "/no/such/folder"], "(/no/such/folder)"),
    (["train", "model.num_classes=5"], "(model.num_classes)"),
    (["train", "model.name=yolox-q"], "model.name"),
    (["train", "--ckpt", "/no/such/run"], "(/no/such/run)"),
    (["eval", "--ckpt", "/no/such/run"], "(/no/such/run)"),
    (["eval", "--ckpt", "/no/such/run", "data.source=coco", "data.val_ann=/x.json"],
     "/x.json"),
    (["eval", "--ckpt", "/no/such/run", "data.source=coco"], "(data.val_ann / data.val_split)"),
])
def test_user_errors_are_one_line_and_exit_2(capsys, argv, names):
    assert names in one_line_error(capsys, argv)


@pytest.mark.parametrize("key, low", [("train.max_epoch", 1), ("train.print_interval", 1),
                                      ("run.checkpoint_every_epochs", 1), ("run.max_steps", 0),
                                      ("data.max_labels", 1), ("eval.interval", 1)])
def test_counts_below_their_minimum_are_named(capsys, key, low):
    """A count that would train no step, divide by zero or never log is refused, naming the
    key, before anything compiles."""
    line = one_line_error(capsys, ["train", f"{key}={low - 1}"])
    assert line.endswith(f"({key})") and f"must be at least {low}" in line, line


def test_validation_categories_other_than_the_training_ones_are_named(capsys, tmp_path):
    """Evaluation writes class i as the validation data's i-th category id: a validation set
    with another category list would be scored against the wrong categories."""
    import json

    from test_own_data import write_coco_folder

    root = write_coco_folder(tmp_path / "data", n_train=4, n_val=2, names=("cat", "dog"))
    val = root / "annotations" / "instances_val.json"
    ann = json.loads(val.read_text())
    ann["categories"].append({"id": 5, "name": "bird"})
    val.write_text(json.dumps(ann))
    line = one_line_error(capsys, ["train", "--data", str(root)])
    assert line.endswith(f"({val})") and "only in validation: 'bird' (id 5)" in line, line
    # And evaluating a checkpoint on it (the categories are checked before the checkpoint).
    data = [f"data.{k}={v}" for k, v in (("source", "coco"), ("train_images", root / "train"),
                                         ("val_images", root / "val"),
                                         ("train_ann", root / "annotations/instances_train.json"),
                                         ("val_ann", val))]
    line = one_line_error(capsys, ["eval", "-n", "yolox-nano", "--ckpt", str(tmp_path), *data,
                                   "model.num_classes=2"])
    assert line.endswith(f"({val})") and "only in validation: 'bird' (id 5)" in line, line
    # Evaluating needs no training annotations (COCO's val2017 alone, say): without them the
    # command goes on to the checkpoint (here: none).
    (root / "annotations" / "instances_train.json").unlink()
    line = one_line_error(capsys, ["eval", "-n", "yolox-nano", "--ckpt", str(tmp_path), *data,
                                   "model.num_classes=2"])
    assert "no complete checkpoint" in line and "instances_train" not in line, line


def test_corrupt_annotation_json_is_named(capsys, tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text('{"images": [')
    line = one_line_error(capsys, ["train", "data.source=coco", f"data.train_ann={ann}",
                                   f"data.train_images={tmp_path}"])
    assert str(ann) in line and "not valid JSON" in line


def test_a_fresh_run_refuses_another_runs_checkpoints(capsys, tmp_path):
    """Training again into a folder whose run has checkpoints stops before anything compiles
    (its saves would collide with theirs at the end), naming the folder and the ways on; an
    interrupted save (a temporary folder) or ``--resume`` does not count as such a run."""
    run_dir = tmp_path / "exp"
    (run_dir / "checkpoints" / "latest" / "12.orbax-checkpoint-tmp-1").mkdir(parents=True)
    from yolox_jax.train.loop import check_no_earlier_run

    check_no_earlier_run(run_dir, resume=False)
    (run_dir / "checkpoints" / "latest" / "768").mkdir()
    check_no_earlier_run(run_dir, resume=True)
    line = one_line_error(capsys, ["train", f"run.output_dir={tmp_path}", "run.experiment=exp"])
    assert f"({run_dir})" in line and "up to step 768" in line and "--resume" in line, line


def test_debug_shows_the_traceback():
    with pytest.raises(UserError):
        main(["--debug", "train", "data.input_size=abc"])
    with pytest.raises(UserError):
        main(["train", "--debug", "data.input_size=abc"])


def test_overrides_are_taken_wherever_they_stand():
    rest, overrides = split_overrides(["predict", "--path", "a.png", "data.test_size=(64,64)",
                                       "b.png", "-c", "ckpt", "eval.batch_size=2"])
    assert rest == ["predict", "--path", "a.png", "b.png", "-c", "ckpt"]
    assert overrides == ["data.test_size=(64,64)", "eval.batch_size=2"]


def test_checkpoint_of_another_class_count_is_named():
    """What eval/predict check before running: the class count of the checkpoint."""
    from yolox_jax import build_model
    from yolox_jax.cli.common import check_variables

    model = build_model("yolox-nano", num_classes=3, width=0.125)
    other = build_model("yolox-nano", num_classes=5, width=0.125)
    shapes = jax.eval_shape(lambda: other.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)),
                                               train=False))
    check_variables(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                      jnp.zeros((1, 64, 64, 3)), train=False)),
                    model, "ok")
    with pytest.raises(UserError, match=r"checkpoint has 5 classes, the config 3.*\(run/x\)"):
        check_variables(shapes, model, "run/x")
    params = dict(shapes["params"])
    params.pop(next(iter(params)))
    with pytest.raises(UserError, match="missing"):
        check_variables({"params": params, "batch_stats": shapes["batch_stats"]}, model, "run/x")


def test_a_run_folder_supplies_its_own_config(tmp_path):
    """eval/predict/export --ckpt <run> without -n/-f build the model the run trained."""
    import argparse

    from yolox_jax.cli.common import load, recorded_config
    from yolox_jax.config import dumps, load_config

    cfg = load_config("yolox-nano", ["model.num_classes=7", "data.test_size=(96,96)"])
    (tmp_path / "checkpoints" / "best").mkdir(parents=True)
    (tmp_path / "config.json").write_text(dumps(cfg))
    for where in (tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints" / "best"):
        assert recorded_config(str(where)).model.num_classes == 7
    args = argparse.Namespace(config=None, name=None, data=None, ckpt=str(tmp_path),
                              overrides=["eval.batch_size=3"])
    got = load(args)
    assert (got.model.name, got.model.num_classes, got.data.test_size, got.eval.batch_size) == \
        ("yolox-nano", 7, (96, 96), 3)
    assert recorded_config(str(tmp_path / "model.pth")) is None


def test_no_notice_about_platforms_the_machine_lacks():
    """JAX logs "Unable to initialize backend 'tpu'" (INFO) when it probes platforms; the
    command line shows its own INFO lines but not that notice. The command below starts the
    backend (choosing the convolution for it) before the class count stops it."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    proc = subprocess.run([sys.executable, "-m", "yolox_jax.cli", "train", "model.num_classes=5"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "yolox-jax: " in proc.stderr and "(model.num_classes)" in proc.stderr
    assert "Unable to initialize backend" not in proc.stderr

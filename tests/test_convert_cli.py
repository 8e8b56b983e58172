"""``yolox-jax convert``: .pth -> checkpoint folder -> .pth is exact, the folder loads as eval
and predict load it and computes what the original weights compute, wrong inputs are one line."""
import shlex

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from yolox_jax.cli import build_parser, main, split_overrides  # noqa: E402
from yolox_jax.cli.common import load_variables  # noqa: E402
from yolox_jax.convert import to_torch_state_dict  # noqa: E402
from yolox_jax.models.yolox import build_model  # noqa: E402
from yolox_jax.train.checkpoint import read_variables  # noqa: E402

NAME, CLASSES, WIDTH = "yolox-nano", 3, 0.125


@pytest.fixture(scope="module")
def model():
    return build_model(NAME, num_classes=CLASSES, width=WIDTH)


@pytest.fixture(scope="module")
def original(model):
    """Random weights and batch statistics of the model's shapes (no init to compile)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)),
                                               train=False))
    rng = np.random.default_rng(0)
    return {"params": jax.tree_util.tree_map(
                lambda x: jnp.asarray(rng.normal(0, 0.1, x.shape), jnp.float32), shapes["params"]),
            "batch_stats": jax.tree_util.tree_map(
                lambda x: jnp.asarray(rng.uniform(0.5, 1.5, x.shape), jnp.float32),
                shapes["batch_stats"])}


@pytest.fixture(scope="module")
def converted(original, tmp_path_factory):
    """The official-layout .pth of ``original``, its folder, and the .pth made back from it."""
    root = tmp_path_factory.mktemp("convert")
    sd = to_torch_state_dict(original, NAME, CLASSES, width=WIDTH)
    pth = root / "nano.pth"
    torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in sd.items()},
                "start_epoch": 300}, pth)
    folder, back = root / "nano_ckpt", root / "back.pth"
    assert main(["convert", str(pth), "--to", str(folder), "-n", NAME,
                 f"model.width={WIDTH}"]) == 0
    assert main(["convert", str(folder), "--to", str(back)]) == 0
    return pth, folder, back


def test_round_trip_is_exact(converted):
    pth, _, back = converted
    a = torch.load(pth, weights_only=True)["model"]
    b = torch.load(back, weights_only=True)["model"]
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_folder_computes_what_the_original_computes(converted, original, model):
    _, folder, _ = converted
    variables, config = read_variables(folder)
    assert config["model"]["name"] == NAME and config["model"]["num_classes"] == CLASSES
    assert config["model"]["width"] == WIDTH
    images = jnp.asarray(np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)), jnp.float32)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    want = np.asarray(apply(original, images))
    assert np.isfinite(want).all() and want.std() > 0
    np.testing.assert_array_equal(np.asarray(apply(variables, images)), want)


def test_folder_loads_as_eval_loads_it(converted, original, model):
    _, folder, _ = converted
    variables = load_variables(str(folder), model, NAME, CLASSES)
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(original)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _one_line_error(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("yolox-jax: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err


def test_wrong_inputs_are_one_line(converted, tmp_path, capsys):
    pth, folder, _ = converted
    _one_line_error(capsys, ["convert", str(tmp_path / "nope.pth"), "--to", str(tmp_path / "x"),
                             "-n", NAME], "nope.pth")
    (tmp_path / "notes.txt").write_text("x")
    _one_line_error(capsys, ["convert", str(tmp_path / "notes.txt"), "--to", str(tmp_path / "x")],
                    "notes.txt")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    _one_line_error(capsys, ["convert", str(tmp_path / "bad.pth"), "--to", str(tmp_path / "x"),
                             "-n", NAME], "bad.pth")
    _one_line_error(capsys, ["convert", str(pth), "--to", str(tmp_path / "x")], "-n")
    _one_line_error(capsys, ["convert", str(pth), "--to", str(tmp_path / "x"), "-n", "yolox-s"],
                    "nano.pth")  # the wrong model: mis-shaped keys
    _one_line_error(capsys, ["convert", str(pth), "--to", str(folder), "-n", NAME],
                    "already exists")
    _one_line_error(capsys, ["convert", str(folder), "--to", str(tmp_path / "x.npz")], ".pth")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["convert", str(tmp_path / "empty"), "--to", str(tmp_path / "y.pth")],
                    "empty")


def test_help_examples_parse():
    from yolox_jax.cli import convert

    lines = [line.strip() for line in convert.__doc__.splitlines()
             if line.strip().startswith("yolox-jax convert")]
    assert len(lines) >= 3
    for line in lines:
        rest, _ = split_overrides(shlex.split(line)[1:])
        args = build_parser().parse_args(rest)
        assert args.command == "convert" and args.to

"""What the commands share: choosing a config, loading weights, the compilation cache."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_config_arguments(p: argparse.ArgumentParser, data: bool = True):
    g = p.add_mutually_exclusive_group()
    g.add_argument("-f", "--config", help="a config file (.py with get_config()) or a packaged "
                   "config's name (yolox_s, synthetic, custom_coco, ...)")
    g.add_argument("-n", "--name", help="official variant, e.g. yolox-s (the packaged config)")
    if data:
        p.add_argument("--data", metavar="DIR",
                       help="a COCO-format (annotations/*.json + image folders) or VOC dataset "
                            "folder; classes and defaults come from the data")


def load(args):
    """The config named by ``-f``/``-n``, else the one a ``--ckpt`` run folder recorded (eval,
    predict, export), else the synthetic demo; fitted to ``--data`` when given; then the
    ``section.key=value`` overrides."""
    from yolox_jax.config import apply_overrides, load_config

    source = args.config or args.name
    recorded = None if source or getattr(args, "data", None) else recorded_config(
        getattr(args, "ckpt", None))
    if recorded is not None:
        cfg = recorded
    elif getattr(args, "data", None):
        from yolox_jax.data.discover import config_for_data

        cfg = config_for_data(args.data, base=load_config(source) if source else None)
    else:
        cfg = load_config(source)
    return apply_overrides(cfg, args.overrides)


def recorded_config(ckpt: str | None):
    """The config saved with one of our run/checkpoint folders, or None (no folder, a ``.pth``,
    nothing recorded)."""
    if not ckpt or not Path(ckpt).is_dir():
        return None
    import json

    from yolox_jax.config import from_dict

    path = Path(ckpt).absolute()
    for candidate in (path / "config.json", path.parent / "config.json",
                      path.parent.parent / "config.json"):
        if candidate.is_file():
            try:
                return from_dict(json.loads(candidate.read_text()))
            except (ValueError, json.JSONDecodeError):
                return None
    return None


def load_variables(ckpt: str, model, model_name: str, num_classes: int, use_ema: bool = True):
    """Variables from an official ``.pth`` or one of our checkpoint folders, checked against
    ``model`` (a Flax module): a missing, extra or mis-shaped array is a UserError naming the
    checkpoint and the first keys, before anything compiles."""
    from yolox_jax.errors import UserError

    path = Path(ckpt)
    if not path.exists():
        raise UserError("no such checkpoint", ckpt)
    if path.suffix in (".pth", ".pt"):
        from yolox_jax.convert import load_torch_checkpoint

        overrides = {k: getattr(model, k) for k in ("depth", "width")
                     if getattr(model, k, None) is not None}
        try:
            variables = load_torch_checkpoint(str(path), model_name, num_classes, **overrides)
        except (KeyError, ValueError) as err:
            raise UserError("checkpoint does not fit the model: "
                            + " ".join(str(err).split())[:400], ckpt) from None
    else:
        from yolox_jax.train.checkpoint import read_variables

        variables = read_variables(str(path), use_ema=use_ema)[0]
    check_variables(variables, model, ckpt)
    return variables


def check_variables(variables, model, where) -> None:
    """Raise a UserError when ``variables`` do not fit ``model`` (names and shapes)."""
    import jax
    import jax.numpy as jnp

    from yolox_jax.errors import UserError

    expected = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                 jnp.zeros((1, 64, 64, 3)), train=False))
    want = {jax.tree_util.keystr(k): tuple(v.shape)
            for k, v in jax.tree_util.tree_flatten_with_path(expected)[0]}
    have = {jax.tree_util.keystr(k): tuple(getattr(v, "shape", ()))
            for k, v in jax.tree_util.tree_flatten_with_path(dict(variables))[0]}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    shapes = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if not (missing or extra or shapes):
        return
    parts = []
    if shapes:
        k = shapes[0]
        hint = ""
        if "cls_preds" in k:
            hint = (f"; the checkpoint has {have[k][-1]} classes, the config "
                    f"{want[k][-1]} (set model.num_classes)")
        parts.append(f"{len(shapes)} mis-shaped arrays, e.g. {k} {have[k]} vs {want[k]}{hint}")
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} unexpected, e.g. {extra[0]}")
    raise UserError("checkpoint does not fit the model: " + "; ".join(parts), where)


def enable_compilation_cache():
    """Persist compiled XLA programs (``$JAX_COMPILATION_CACHE_DIR`` or ~/.cache/yolox_jax/xla):
    a second run of the same config skips minutes of compilation on CPU."""
    import jax

    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "yolox_jax", "xla")
    jax.config.update("jax_compilation_cache_dir", path)


def tune():
    """Before any JAX backend starts: on a CPU host, tune malloc and XLA:CPU for training (a
    no-op where JAX runs on a GPU or TPU); then the persistent compilation cache."""
    from yolox_jax.cpu import tune_process

    tune_process()
    enable_compilation_cache()

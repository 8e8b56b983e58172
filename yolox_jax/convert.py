"""Official PyTorch YOLOX checkpoints <-> yolox_jax variables (docs/official-behaviour.md §1.8).

Flax module paths mirror the official attribute paths with list indices joined by ``_``
(``backbone.backbone.dark2.1.m.0.conv1`` <-> ``backbone/backbone/dark2_1/m_0/conv1``), so the
key mapping is a rename plus these leaf rules:

=====================================  =======================================================
official                               yolox_jax
=====================================  =======================================================
``P.conv.weight`` / pred ``weight``    params ``kernel``, OIHW -> HWIO (depthwise [C,1,k,k] -> [k,k,1,C])
``P.bn.weight`` / ``P.bn.bias``        params ``scale`` / ``bias``
``P.bn.running_mean`` / ``_var``       batch_stats ``mean`` / ``var``
``P.bn.num_batches_tracked``           dropped (optional on input)
pred ``bias``                          params ``bias``
=====================================  =======================================================

The official model reads BGR; ours reads RGB. The converter reverses the colour channels of the
first conv's input (each of the 12 Focus blocks, or the 3 channels of Darknet's first conv), so
the same picture gives the same numbers.

The expected tree comes from ``jax.eval_shape(model.init, ...)``: nothing is hard-coded, so any
``build_model`` override (e.g. a custom width) converts too.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax.models.yolox import build_model, model_config

FIRST_CONV = {
    "cspdarknet": "backbone.backbone.stem.conv.conv.weight",
    "darknet": "backbone.backbone.stem.0.conv.weight",
}
_INDEX_SUFFIX = re.compile(r"((?:_\d+)+)$")
_BN_LEAVES = {("params", "scale"): "weight", ("params", "bias"): "bias",
              ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
_CONV_LEAVES = {"kernel": "weight", "bias": "bias"}


def _segment_to_torch(segment: str) -> str:
    """``cls_convs_0_1`` -> ``cls_convs.0.1``; names without an index suffix are unchanged."""
    m = _INDEX_SUFFIX.search(segment)
    if not m:
        return segment
    return segment[: m.start()] + m.group(1).replace("_", ".")


def _torch_key(collection: str, path: tuple[str, ...]) -> str:
    *modules, leaf = path
    if modules and modules[-1] == "bn":
        leaf = _BN_LEAVES[(collection, leaf)]
    else:
        leaf = _CONV_LEAVES[leaf]
    return ".".join([_segment_to_torch(s) for s in modules] + [leaf])


def _flat(tree: Mapping, prefix: tuple[str, ...] = ()):
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _flat(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _layout(name: str, num_classes: int, **overrides) -> dict[str, tuple[str, tuple, tuple]]:
    """official key -> (collection, flax path, flax shape), for every key except num_batches_tracked."""
    return _cached_layout(name, num_classes, tuple(sorted(overrides.items())))


@functools.lru_cache(maxsize=32)
def _cached_layout(name: str, num_classes: int, overrides: tuple) -> dict:
    # Tracing a model takes ~1 s; a round trip (from/to) would otherwise trace it twice.
    # Callers must treat the returned dict as read-only.
    model = build_model(name, num_classes, **dict(overrides))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    layout = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in _flat(shapes[collection]):
            layout[_torch_key(collection, path)] = (collection, path, tuple(leaf.shape))
    return layout


def _torch_shape(path: tuple[str, ...], shape: tuple) -> tuple:
    return (shape[3], shape[2], shape[0], shape[1]) if path[-1] == "kernel" else shape


def _bn_counters(layout) -> list[str]:
    return sorted({k.rsplit(".", 1)[0] + ".num_batches_tracked" for k in layout
                   if k.endswith(".bn.running_mean")})


def torch_key_shapes(name: str, num_classes: int = 80, **overrides) -> dict[str, tuple]:
    """Every key (with its shape) of the official state_dict for this model, BN counters included."""
    layout = _layout(name, num_classes, **overrides)
    out = {k: _torch_shape(path, shape) for k, (_, path, shape) in layout.items()}
    out.update({k: () for k in _bn_counters(layout)})
    return out


def _to_numpy(value) -> np.ndarray:
    # Duck-typed torch support: torch is only touched when the caller hands us tensors.
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # NumPy has no bfloat16; float16 also goes through float32
    return np.asarray(value)


def _bgr_to_rgb_inputs(weight: np.ndarray) -> np.ndarray:
    """Reverse the colour order inside every 3-channel block of an OIHW weight's input axis.

    Its own inverse, so the same function maps RGB back to BGR.
    """
    cin = weight.shape[1]
    perm = [3 * (i // 3) + 2 - i % 3 for i in range(cin)]
    return weight[:, perm]


def _first_conv(name: str, num_classes: int, **overrides) -> str:
    return FIRST_CONV[model_config(name, num_classes, **overrides)["arch"]]


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def from_torch_state_dict(state_dict: Mapping[str, Any], name: str, num_classes: int = 80,
                          **overrides) -> dict:
    """Official state_dict (numpy arrays or torch tensors) -> ``{"params", "batch_stats"}`` for RGB input.

    Accepts keys with a ``module.`` (DDP) prefix; ``num_batches_tracked`` entries are optional and
    dropped. Raises one ValueError listing every missing, unexpected and mis-shaped key.
    ``overrides`` are those of ``build_model`` (for checkpoints of custom-sized models).
    """
    layout = _layout(name, num_classes, **overrides)
    counters = set(_bn_counters(layout))
    sd = {(k[len("module."):] if k.startswith("module.") else k): v
          for k, v in state_dict.items()}

    missing = sorted(set(layout) - set(sd))
    unexpected = sorted(set(sd) - set(layout) - counters)
    misshaped = []
    for key in sorted(set(layout) & set(sd)):
        _, path, shape = layout[key]
        want, got = _torch_shape(path, shape), tuple(np.shape(sd[key]))
        if want != got:
            misshaped.append(f"{key}: expected {want}, got {got}")
    if missing or unexpected or misshaped:
        lines = [f"state_dict does not match {name} (num_classes={num_classes}"
                 + "".join(f", {k}={v!r}" for k, v in overrides.items()) + "):"]
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("mis-shaped", misshaped)):
            if items:
                lines.append(f"  {len(items)} {title} key(s):")
                lines.extend(f"    {item}" for item in items)
        if misshaped and all(".cls_preds." in m for m in misshaped):
            lines.append("  (only cls_preds differ: pass the checkpoint's num_classes)")
        raise ValueError("\n".join(lines))

    first = _first_conv(name, num_classes, **overrides)
    dtype = model_config(name, num_classes, **overrides)["param_dtype"]
    variables: dict = {"params": {}, "batch_stats": {}}
    for key, (collection, path, _) in layout.items():
        value = _to_numpy(sd[key])
        if key == first:
            value = _bgr_to_rgb_inputs(value)
        if path[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        value_dtype = jnp.float32 if collection == "batch_stats" else dtype
        _set(variables[collection], path, jnp.asarray(value, dtype=value_dtype))
    return variables


def to_torch_state_dict(variables: Mapping, name: str, num_classes: int = 80,
                        **overrides) -> dict[str, np.ndarray]:
    """Inverse of ``from_torch_state_dict``: variables -> official state_dict of NumPy arrays (BGR input).

    BN ``num_batches_tracked`` counters are emitted as int64 zeros so that PyTorch's strict
    ``load_state_dict`` accepts the result.
    """
    layout = _layout(name, num_classes, **overrides)
    first = _first_conv(name, num_classes, **overrides)
    sd = {}
    for key, (collection, path, _) in layout.items():
        value = variables[collection]
        for k in path:
            value = value[k]
        value = np.asarray(value, dtype=np.float32)
        if path[-1] == "kernel":
            value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if key == first:
            value = _bgr_to_rgb_inputs(value)
        sd[key] = value
    for key in _bn_counters(layout):
        sd[key] = np.zeros((), np.int64)
    return sd


def load_torch_checkpoint(path, name: str, num_classes: int = 80, **overrides) -> dict:
    """Read an official ``.pth`` (``{"model": sd, ...}`` or a bare sd) -> ``{"params", "batch_stats"}``.

    Needs PyTorch (``pip install yolox-jax[torch]``); loads with ``weights_only=True``.
    """
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "load_torch_checkpoint needs PyTorch to read .pth files: pip install torch "
            "(or yolox-jax[torch]); alternatively pass a dict of NumPy arrays to "
            "yolox_jax.convert.from_torch_state_dict") from e
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, Mapping) and "model" in ckpt and isinstance(ckpt["model"], Mapping):
        ckpt = ckpt["model"]
    return from_torch_state_dict(ckpt, name, num_classes, **overrides)


# ----------------------------------------------------------------------------- files

CLASS_KEY = "head.cls_preds.0.weight"


def _torch(purpose: str, where):
    try:
        import torch
    except ImportError:
        from yolox_jax.errors import UserError

        raise UserError(f"{purpose} needs PyTorch: pip install torch", where) from None
    return torch


def read_torch_state_dict(path) -> dict:
    """An official ``.pth`` (``{"model": sd, ...}`` or a bare sd) -> its state_dict (tensors).

    Loads with ``weights_only=True``. A UserError names the file when PyTorch is missing, the
    file does not load, or it holds no YOLOX state_dict (no ``head.cls_preds.0.weight``).
    """
    from yolox_jax.errors import UserError

    torch = _torch("reading a .pth file", path)
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        first = str(err).strip().split(". ")[0].splitlines()[0][:160] if str(err).strip() else ""
        raise UserError(f"cannot load this .pth ({type(err).__name__}: {first})", path) from err
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, Mapping) or state_dict_num_classes(ckpt) is None:
        raise UserError(f"not a YOLOX checkpoint (no {CLASS_KEY})", path)
    return dict(ckpt)


def state_dict_num_classes(state_dict: Mapping) -> int | None:
    """The class count of an official state_dict: rows of ``head.cls_preds.0.weight`` [C, Cin, 1, 1]
    (``module.`` prefix allowed), or None without that key."""
    for key in (CLASS_KEY, "module." + CLASS_KEY):
        if key in state_dict:
            return int(np.shape(state_dict[key])[0])
    return None


def write_torch_checkpoint(state_dict: Mapping[str, np.ndarray], path) -> None:
    """Save ``{"model": state_dict}`` (arrays as torch tensors) with ``torch.save``: the layout of
    the official checkpoints, which the official tools read with ``ckpt["model"]``."""
    torch = _torch("writing a .pth file", path)
    torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}},
               str(path))


def save_checkpoint(directory, variables: Mapping, config: dict, meta: dict | None = None) -> None:
    """Write ``variables`` ``{"params", "batch_stats"}`` as one of our checkpoint folders
    (``<directory>/checkpoints/latest/0``), the raw and the EMA weights both ``variables``, with
    ``config`` (a ``yolox_jax.config.to_dict`` dict) and ``meta`` recorded beside them.

    ``yolox_jax.train.checkpoint.read_variables(directory)`` reads it, and so do
    ``yolox-jax eval/predict --ckpt`` and ``run.init_from``; it holds no optimizer state, so
    ``--resume`` does not continue from it.
    """
    from pathlib import Path

    from yolox_jax.train.checkpoint import Checkpointer

    state = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
             "ema_params": variables["params"],
             "ema_batch_stats": variables.get("batch_stats", {})}
    checkpointer = Checkpointer(Path(directory) / "checkpoints", keep=1, async_save=False)
    try:
        checkpointer.save(0, state, None, config, dict(meta or {}, step=0), force=True)
        checkpointer.wait()
    finally:
        checkpointer.close()
    # As in a training run's folder: eval/predict/export --ckpt build the model from it.
    import json

    (Path(directory) / "config.json").write_text(json.dumps(config, indent=2, default=list))

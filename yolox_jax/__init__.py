"""yolox_jax: YOLOX object detection in JAX/Flax.

Public API (docs/api.md): ``build_model``, ``MODEL_NAMES``, ``anchor_grid``, ``decode``,
``postprocess``, ``Detections``, and the modules ``convert``, ``export``, ``assign``, ``losses``,
``nms``, ``cpu`` (opt-in CPU speed-ups), ``models``, ``ops``, ``data``, ``train``, ``eval``. Names load
lazily, so ``import yolox_jax`` is cheap; importing changes nothing in the process.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_ATTRS = {
    "build_model": "yolox_jax.models.yolox",
    "MODEL_NAMES": "yolox_jax.models.yolox",
    "anchor_grid": "yolox_jax.ops.anchors",
    "decode": "yolox_jax.ops.anchors",
    "postprocess": "yolox_jax.ops.postprocess",
    "Detections": "yolox_jax.ops.postprocess",
}
_MODULES = ("convert", "export", "assign", "losses", "nms", "cpu", "models", "ops", "data", "train",
            "eval")

__all__ = sorted(_ATTRS) + sorted(_MODULES)


def __getattr__(name):
    if name in _ATTRS:
        return getattr(importlib.import_module(_ATTRS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"yolox_jax.{name}")
    raise AttributeError(f"module 'yolox_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

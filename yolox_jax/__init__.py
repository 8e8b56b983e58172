"""yolox_jax: YOLOX object detection in JAX/Flax.

Public API (see README and ../shared/API.md): ``build_model``, ``anchor_grid``, ``decode``,
``postprocess``, and the modules ``convert``, ``assign``, ``losses``, ``nms``. Names are
resolved lazily so that ``import yolox_jax`` stays cheap.
"""
from __future__ import annotations

import importlib

from yolox_jax.train import host_malloc as _host_malloc

# Before any JAX backend exists: let XLA:CPU reuse its step buffers (see train/host_malloc.py).
# A tuning, never a reason for the import to fail.
try:
    _host_malloc.apply_default()
except Exception as _err:  # noqa: BLE001
    import logging as _logging

    _logging.getLogger(__name__).warning("glibc malloc tuning skipped: %s", _err)

from yolox_jax.train import host_xla_flags as _host_xla_flags

# Also before any backend: XLA:CPU's Eigen convolutions instead of YNNPACK's (faster here; see
# train/host_xla_flags.py).
try:
    _host_xla_flags.apply_default()
except Exception as _err:  # noqa: BLE001
    import logging as _logging

    _logging.getLogger(__name__).warning("XLA:CPU flag setup skipped: %s", _err)

__version__ = "0.1.0"

_ATTRS = {
    "build_model": "yolox_jax.models.yolox",
    "MODEL_NAMES": "yolox_jax.models.yolox",
    "anchor_grid": "yolox_jax.ops.anchors",
    "decode": "yolox_jax.ops.anchors",
    "postprocess": "yolox_jax.ops.postprocess",
    "Detections": "yolox_jax.ops.postprocess",
}
_MODULES = {"convert", "assign", "losses", "nms", "models", "ops", "data", "train", "eval", "configs"}

__all__ = sorted(_ATTRS) + sorted(_MODULES)


def __getattr__(name):
    if name in _ATTRS:
        return getattr(importlib.import_module(_ATTRS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"yolox_jax.{name}")
    raise AttributeError(f"module 'yolox_jax' has no attribute {name!r}")

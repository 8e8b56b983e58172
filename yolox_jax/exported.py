"""Load and run an exported YOLOX (``yolox_jax.export``): needs only JAX and NumPy.

No model code is imported, so this file can be copied on its own next to an artifact::

    from exported import load_exported, run_exported

    exported = load_exported("yolox_s.jaxexport")     # once
    outputs = run_exported(exported, images)         # images [B, H, W, 3], RGB, 0..255

What ``outputs`` holds depends on how the artifact was made (see ``docs/export.md``): the decoded
predictions ``[B, A, 5 + C]`` (cx, cy, w, h in input pixels, objectness, class probabilities),
or, with post-processing baked in, a dict ``boxes_xyxy [B, K, 4]``, ``scores [B, K]``,
``classes [B, K]`` int32 and ``valid [B, K]`` bool.
"""
from __future__ import annotations

import os

import jax
import numpy as np


def load_exported(path: str | os.PathLike) -> jax.export.Exported:
    """The ``jax.export.Exported`` serialized in the file at ``path``."""
    with open(path, "rb") as f:
        return jax.export.deserialize(bytearray(f.read()))


def save_exported(exported: jax.export.Exported, path: str | os.PathLike) -> str:
    """Write ``exported`` (its ``serialize()`` bytes) to ``path``; returns the path."""
    with open(path, "wb") as f:
        f.write(exported.serialize())
    return str(path)


def run_exported(path_or_exported, images):
    """Run an artifact on ``images`` [B, H, W, 3] (any real dtype, cast to the artifact's input
    dtype, float32): NumPy outputs, with the structure the artifact was exported with.

    ``path_or_exported``: a file written by ``save_exported`` or an ``Exported``. Load once and
    pass the ``Exported`` when calling repeatedly: each shape compiles on first use.
    B must equal the artifact's batch unless it was exported with a symbolic batch; H and W
    must equal its input size (letterbox the images first).
    """
    exported = (path_or_exported if isinstance(path_or_exported, jax.export.Exported)
                else load_exported(path_or_exported))
    (aval,) = exported.in_avals
    images = np.asarray(images)
    if images.ndim != len(aval.shape) or any(
            isinstance(want, int) and want != have for want, have in zip(aval.shape, images.shape)):
        raise ValueError(f"images of shape {images.shape} do not fit the artifact's input "
                         f"{tuple(str(d) for d in aval.shape)}")
    outputs = exported.call(images.astype(aval.dtype))
    return jax.tree.map(np.asarray, jax.device_get(outputs))

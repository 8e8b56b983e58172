"""Label assignment: which anchors are foreground and which ground truth each one learns.

- ``simota``: the official YOLOX SimOTA for one image (vmap it over a batch).
- ``simota_batch``: the same assignment for a whole batch, as the loss uses it (on-device gt
  buckets and candidate-anchor compaction; equal to ``jax.vmap(simota)``).
- ``ota``: optimal-transport assignment (Sinkhorn, background supply, dynamic k).
- ``Assignment``: what every assigner returns.

All take ground truths padded to a fixed count with a boolean mask and are pure, jittable
functions of arrays.
"""
from yolox_jax.assign._simota import Assignment, simota, simota_batch

__all__ = ["Assignment", "ota", "simota", "simota_batch"]


def __getattr__(name):
    # ``ota`` loads on first use: ott-jax takes seconds to import, and the loss, the trainer
    # and the command line need only SimOTA.
    if name == "ota":
        from yolox_jax.assign._ota import ota

        return ota
    raise AttributeError(f"module 'yolox_jax.assign' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

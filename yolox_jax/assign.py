"""Label assignment: ``simota`` (official YOLOX) and ``ota`` (Sinkhorn optimal transport).

The implementations live in ``yolox_jax.ops.simota`` and ``yolox_jax.ops.ota``.
"""
from yolox_jax.ops.simota import Assignment, simota, simota_batch  # noqa: F401
from yolox_jax.ops.ota import ota  # noqa: F401

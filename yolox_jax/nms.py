"""Hard NMS and Soft-NMS; implementation in ``yolox_jax.ops.nms``."""
from yolox_jax.ops.nms import nms  # noqa: F401

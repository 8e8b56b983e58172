"""The YOLOX loss; implementation in ``yolox_jax.ops.losses``."""
from yolox_jax.ops.losses import yolox_loss  # noqa: F401

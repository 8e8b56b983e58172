"""Embedded default: a small YOLOX-tiny-shaped model on the built-in synthetic shapes (no
download, CPU)."""
from yolox_jax.config import synthetic_config


def get_config():
    return synthetic_config()

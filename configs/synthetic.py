"""Embedded default: a small YOLOX-nano on the built-in synthetic shapes (no download, CPU)."""
from yolox_jax.default_config import synthetic_config


def get_config():
    return synthetic_config()

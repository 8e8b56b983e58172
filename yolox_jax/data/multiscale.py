"""Multiscale training (docs/official-behaviour.md §4): the loader always yields ``input_size`` batches and
the trainer resizes a whole batch on device every 10 iterations.

``resize_batch`` is a pure jnp function (jit it once per size: one compile per entry of
``multiscale_sizes``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def multiscale_sizes(input_size, multiscale_range: int = 5) -> list[tuple[int, int]]:
    """All (H, W) the official random_resize can draw, smallest first.

    size ~ randint(H/32 - range, H/32 + range) inclusive; H = 32 * size, W = 32 * int(size * W/H).
    ``multiscale_range=0`` gives just ``[input_size]`` (single scale).  E.g. 640x640, range 5 ->
    480, 512, ..., 800.
    """
    H, W = int(input_size[0]), int(input_size[1])
    if multiscale_range <= 0:
        return [(H, W)]
    base = int(H / 32)
    lo, hi = base - int(multiscale_range), base + int(multiscale_range)
    if lo < 1:
        raise ValueError(f"multiscale_range {multiscale_range} too large for input height {H}")
    return [(32 * s, 32 * int(s * W / H)) for s in range(lo, hi + 1)]


def random_multiscale_size(rng: np.random.Generator, input_size, multiscale_range: int = 5) -> tuple[int, int]:
    """One uniform draw from ``multiscale_sizes`` (what rank 0 broadcasts every 10 iterations)."""
    sizes = multiscale_sizes(input_size, multiscale_range)
    return sizes[int(rng.integers(0, len(sizes)))]


def resize_batch(images, labels, new_hw):
    """Bilinear resize of a batch and its labels to ``new_hw`` (static).

    images [B, H, W, 3] (float; uint8 is cast to float32) -> [B, H', W', 3] float32, half-pixel
    centres, no antialias — matching torch ``interpolate(bilinear, align_corners=False)``.
    labels [B, M, 5] rows (cls, cx, cy, w, h) -> cx, w scaled by W'/W and cy, h by H'/H; class
    column and zero padding rows unchanged.
    """
    B, H, W, C = images.shape
    new_h, new_w = int(new_hw[0]), int(new_hw[1])
    if images.dtype == jnp.uint8 or images.dtype == np.uint8:
        images = images.astype(jnp.float32)
    if (new_h, new_w) == (H, W):
        return images, labels
    out = jax.image.resize(images, (B, new_h, new_w, C), method="bilinear", antialias=False)
    sx, sy = new_w / W, new_h / H
    scale = jnp.asarray([1.0, sx, sy, sx, sy], labels.dtype)
    return out, labels * scale


def rescale_batch(images, labels, size):
    """Alias of ``resize_batch`` (accepts numpy or jax arrays; returns jax arrays)."""
    return resize_batch(images, labels, size)

"""Anchor grid and output decoding (docs/official-behaviour.md §2)."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_STRIDES = (8, 16, 32)


def level_shapes(image_hw: tuple[int, int], strides: Sequence[int] = DEFAULT_STRIDES):
    """Feature-map (H, W) of each level for an input of ``image_hw``; sides must divide by the strides."""
    h, w = int(image_hw[0]), int(image_hw[1])
    for s in strides:
        if h % s or w % s:
            raise ValueError(
                f"input size {h}x{w} is not a multiple of stride {s}; YOLOX needs sides that are "
                f"multiples of {max(strides)} (e.g. {-(-h // max(strides)) * max(strides)}x"
                f"{-(-w // max(strides)) * max(strides)})"
            )
    return [(h // s, w // s) for s in strides]


def num_anchors(image_hw: tuple[int, int], strides: Sequence[int] = DEFAULT_STRIDES) -> int:
    return sum(h * w for h, w in level_shapes(image_hw, strides))


def anchor_grid(image_hw: tuple[int, int], strides: Sequence[int] = DEFAULT_STRIDES):
    """Grid points of all levels, flattened level by level, row-major inside a level.

    Returns ``(grid_xy [A, 2] float32 = (x index, y index), strides [A] float32)``. Built with
    NumPy from static sizes, so it is a compile-time constant under ``jax.jit``.
    """
    grids, strs = [], []
    for (h, w), s in zip(level_shapes(image_hw, strides), strides):
        yv, xv = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        grids.append(np.stack([xv, yv], axis=-1).reshape(-1, 2))
        strs.append(np.full((h * w,), s))
    grid_xy = np.concatenate(grids).astype(np.float32)
    stride_arr = np.concatenate(strs).astype(np.float32)
    return jnp.asarray(grid_xy), jnp.asarray(stride_arr)


def decode_boxes(raw_reg, grid_xy, strides):
    """[..., A, 4] raw (tx, ty, tw, th) -> [..., A, 4] cxcywh in input pixels."""
    s = strides[:, None]
    cxcy = (raw_reg[..., :2] + grid_xy) * s
    wh = jnp.exp(raw_reg[..., 2:4]) * s
    return jnp.concatenate([cxcy, wh], axis=-1)


def decode(raw, image_hw: tuple[int, int], strides: Sequence[int] = DEFAULT_STRIDES):
    """[B, A, 5 + C] raw model output -> [B, A, 5 + C] decoded (cxcywh, sigmoid obj, sigmoid cls).

    Equal to the official model's eval-mode output.
    """
    grid_xy, stride_arr = anchor_grid(image_hw, strides)
    if raw.shape[-2] != grid_xy.shape[0]:
        raise ValueError(
            f"raw has {raw.shape[-2]} anchors but an input of {tuple(image_hw)} gives {grid_xy.shape[0]}"
        )
    boxes = decode_boxes(raw[..., :4], grid_xy, stride_arr)
    return jnp.concatenate([boxes, jax.nn.sigmoid(raw[..., 4:])], axis=-1)

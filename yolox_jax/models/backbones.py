"""Backbones (docs/official-behaviour.md §1.2, §1.5): CSPDarknet and Darknet-21/53, NHWC.

Both return the (C3, C4, C5) feature maps at strides (8, 16, 32).
"""
from __future__ import annotations

import jax.numpy as jnp
import flax.linen as nn

from yolox_jax.models.blocks import (BaseConv, Conv, ConvChoice, CSPLayer, Dtype, Focus, ResLayer,
                                     SPPBottleneck)

# Residual blocks per stage (stem, dark2, dark3, dark4, dark5) for Darknet-21 and Darknet-53.
DARKNET_BLOCKS = {21: (1, 1, 2, 2, 1), 53: (1, 2, 8, 8, 4)}


class CSPDarknet(nn.Module):
    """CSPDarknet: [B, H, W, 3] -> C3 [B, H/8, W/8, 4b], C4 [.., /16, 8b], C5 [.., /32, 16b], b = int(64*width).

    Submodules: ``stem`` (Focus), ``dark{2,3,4}_{0,1}`` (down conv, CSP), ``dark5_{0,1,2}``
    (down conv, SPP, CSP without shortcut).
    """

    depth: float = 1.0
    width: float = 1.0
    depthwise: bool = False
    act: str = "silu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, dtype=self.dtype, param_dtype=self.param_dtype, conv=self.conv)
        base = int(self.width * 64)
        n = max(round(self.depth * 3), 1)
        x = Focus(base, 3, **kw, name="stem")(x, train)
        outs = []
        for stage, (mult, reps) in enumerate(((2, n), (4, 3 * n), (8, 3 * n)), start=2):
            x = Conv(self.depthwise, base * mult, 3, 2, **kw, name=f"dark{stage}_0")(x, train)
            x = CSPLayer(base * mult, reps, True, self.depthwise, **kw,
                         name=f"dark{stage}_1")(x, train)
            outs.append(x)
        x = Conv(self.depthwise, base * 16, 3, 2, **kw, name="dark5_0")(x, train)
        x = SPPBottleneck(base * 16, **kw, name="dark5_1")(x, train)
        x = CSPLayer(base * 16, n, False, self.depthwise, **kw, name="dark5_2")(x, train)
        return outs[1], outs[2], x


class Darknet(nn.Module):
    """Darknet-21/53 with the YOLOv3 SPP block: [B, H, W, 3] -> C3 [.., /8, 256], C4 [.., /16, 512], C5 [.., /32, 512].

    Submodules: ``stem_0`` (3x3, 3->32), ``stem_1`` (3x3 s2 -> 64), ``stem_2..`` ResLayers;
    ``dark{2..5}_0`` down convs, ``dark{2..5}_{1..r}`` ResLayers; after the dark5 ResLayers the
    SPP block continues the same index sequence: 1x1, 3x3, SPPBottleneck, 3x3, 1x1.
    """

    depth: int = 53
    act: str = "lrelu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, dtype=self.dtype, param_dtype=self.param_dtype, conv=self.conv)
        blocks = DARKNET_BLOCKS[self.depth]
        x = BaseConv(32, 3, 1, **kw, name="stem_0")(x, train)
        x = BaseConv(64, 3, 2, **kw, name="stem_1")(x, train)
        for j in range(blocks[0]):
            x = ResLayer(**kw, name=f"stem_{2 + j}")(x, train)
        outs = []
        for stage, (ch, reps) in enumerate(zip((128, 256, 512, 1024), blocks[1:]), start=2):
            x = BaseConv(ch, 3, 2, **kw, name=f"dark{stage}_0")(x, train)
            for j in range(reps):
                x = ResLayer(**kw, name=f"dark{stage}_{1 + j}")(x, train)
            outs.append(x)
        i = blocks[4] + 1
        x = BaseConv(512, 1, **kw, name=f"dark5_{i}")(x, train)
        x = BaseConv(1024, 3, **kw, name=f"dark5_{i + 1}")(x, train)
        x = SPPBottleneck(512, hidden=512, **kw, name=f"dark5_{i + 2}")(x, train)
        x = BaseConv(1024, 3, **kw, name=f"dark5_{i + 3}")(x, train)
        x = BaseConv(512, 1, **kw, name=f"dark5_{i + 4}")(x, train)
        return outs[1], outs[2], x

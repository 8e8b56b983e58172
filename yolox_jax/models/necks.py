"""Necks (docs/official-behaviour.md §1.3, §1.5): PAFPN (official ``YOLOPAFPN``) and YOLOFPN.

Each owns its backbone as the submodule ``backbone`` (official keys ``backbone.backbone.*``) and
returns (P3, P4, P5) at strides (8, 16, 32).
"""
from __future__ import annotations

import jax.numpy as jnp
import flax.linen as nn

from yolox_jax.models.backbones import CSPDarknet, Darknet
from yolox_jax.models.blocks import BaseConv, Conv, ConvChoice, CSPLayer, Dtype, upsample2x


class PAFPN(nn.Module):
    """CSPDarknet + path aggregation: [B, H, W, 3] -> P3 [.., /8, c0], P4 [.., /16, c1], P5 [.., /32, c2].

    (c0, c1, c2) = int(256w), int(512w), int(1024w). Concat orders: upsampled map first on the
    top-down path, downsampled map first on the bottom-up path (the converted weights depend on it).
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
        c0, c1, c2 = (int(c * self.width) for c in (256, 512, 1024))
        n = round(3 * self.depth)
        cat = lambda *xs: jnp.concatenate(xs, axis=-1)  # noqa: E731

        c3, c4, c5 = CSPDarknet(self.depth, self.width, self.depthwise, **kw,
                                name="backbone")(x, train)
        fpn_out0 = BaseConv(c1, 1, **kw, name="lateral_conv0")(c5, train)
        f_out0 = CSPLayer(c1, n, False, self.depthwise, **kw,
                          name="C3_p4")(cat(upsample2x(fpn_out0), c4), train)
        fpn_out1 = BaseConv(c0, 1, **kw, name="reduce_conv1")(f_out0, train)
        p3 = CSPLayer(c0, n, False, self.depthwise, **kw,
                      name="C3_p3")(cat(upsample2x(fpn_out1), c3), train)
        down = Conv(self.depthwise, c0, 3, 2, **kw, name="bu_conv2")(p3, train)
        p4 = CSPLayer(c1, n, False, self.depthwise, **kw, name="C3_n3")(cat(down, fpn_out1), train)
        down = Conv(self.depthwise, c1, 3, 2, **kw, name="bu_conv1")(p4, train)
        p5 = CSPLayer(c2, n, False, self.depthwise, **kw, name="C3_n4")(cat(down, fpn_out0), train)
        return p3, p4, p5


class YOLOFPN(nn.Module):
    """Darknet + YOLOv3 FPN: [B, H, W, 3] -> P3 [.., /8, 128], P4 [.., /16, 256], P5 [.., /32, 512].

    Submodules ``out1_cbl``, ``out1_{0..4}``, ``out2_cbl``, ``out2_{0..4}`` (1x1/3x3 alternating).
    """

    depth: int = 53
    act: str = "lrelu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, dtype=self.dtype, param_dtype=self.param_dtype, conv=self.conv)
        c3, c4, c5 = Darknet(self.depth, **kw, name="backbone")(x, train)

        def embedding(y, ch, prefix):
            # Five convs alternating 1x1 -> ch and 3x3 -> 2ch, ending on 1x1 -> ch.
            for j, (k, out) in enumerate(((1, ch), (3, 2 * ch), (1, ch), (3, 2 * ch), (1, ch))):
                y = BaseConv(out, k, **kw, name=f"{prefix}_{j}")(y, train)
            return y

        y = BaseConv(256, 1, **kw, name="out1_cbl")(c5, train)
        p4 = embedding(jnp.concatenate([upsample2x(y), c4], axis=-1), 256, "out1")
        y = BaseConv(128, 1, **kw, name="out2_cbl")(p4, train)
        p3 = embedding(jnp.concatenate([upsample2x(y), c3], axis=-1), 128, "out2")
        return p3, p4, c5

"""Decoupled YOLOX head (docs/official-behaviour.md §1.4), one unshared copy per level."""
from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import flax.linen as nn

from yolox_jax.models.blocks import (BaseConv, Conv, ConvChoice, Dtype, conv_function,
                                     torch_bias_init, torch_kernel_init)

PRIOR_PROB = 0.01


class YOLOXHead(nn.Module):
    """Per-level decoupled head: features [(B, H_i, W_i, C_i)] -> raw [B, A, 5 + num_classes].

    Level i has ``stems_i`` (1x1 -> hid), ``cls_convs_i_{0,1}`` -> ``cls_preds_i`` and
    ``reg_convs_i_{0,1}`` -> ``reg_preds_i`` (4) and ``obj_preds_i`` (1), hid = int(256*width).
    Per anchor the channels are [tx, ty, tw, th, obj, cls...]; anchors run level by level,
    row-major inside a level (index y*W + x). The output is float32 whatever the compute dtype,
    so losses and decoding stay in full precision.
    """

    num_classes: int = 80
    width: float = 1.0
    depthwise: bool = False
    act: str = "silu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    def _pred(self, features: int, fan_in: int, name: str, prior: bool) -> nn.Conv:
        # cls/obj biases start at logit(PRIOR_PROB) (official initialize_biases) so early
        # training is not swamped by the loss of ~A negatives; reg keeps the PyTorch default.
        bias_init = (nn.initializers.constant(-math.log((1 - PRIOR_PROB) / PRIOR_PROB)) if prior
                     else torch_bias_init(fan_in))
        return nn.Conv(features, (1, 1), padding=((0, 0), (0, 0)), kernel_init=torch_kernel_init,
                       bias_init=bias_init, dtype=self.dtype, param_dtype=self.param_dtype,
                       conv_general_dilated=conv_function(self.conv), name=name)

    @nn.compact
    def __call__(self, features: Sequence, train: bool = False):
        kw = dict(act=self.act, dtype=self.dtype, param_dtype=self.param_dtype, conv=self.conv)
        hid = int(256 * self.width)
        outs = []
        for i, x in enumerate(features):
            x = BaseConv(hid, 1, **kw, name=f"stems_{i}")(x, train)
            cls_feat, reg_feat = x, x
            for j in range(2):
                cls_feat = Conv(self.depthwise, hid, 3, 1, **kw,
                                name=f"cls_convs_{i}_{j}")(cls_feat, train)
            for j in range(2):
                reg_feat = Conv(self.depthwise, hid, 3, 1, **kw,
                                name=f"reg_convs_{i}_{j}")(reg_feat, train)
            reg = self._pred(4, hid, f"reg_preds_{i}", prior=False)(reg_feat)
            obj = self._pred(1, hid, f"obj_preds_{i}", prior=True)(reg_feat)
            cls = self._pred(self.num_classes, hid, f"cls_preds_{i}", prior=True)(cls_feat)
            out = jnp.concatenate([reg, obj, cls], axis=-1).astype(jnp.float32)
            b, h, w, c = out.shape
            outs.append(out.reshape(b, h * w, c))
        return jnp.concatenate(outs, axis=1)

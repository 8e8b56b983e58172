"""The YOLOX detector, its variant table and ``build_model`` (docs/official-behaviour.md §1.6)."""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import flax.linen as nn

from yolox_jax.models.backbones import DARKNET_BLOCKS
from yolox_jax.models.blocks import ACTIVATIONS, ConvChoice, Dtype, conv_function
from yolox_jax.models.head import YOLOXHead
from yolox_jax.models.necks import PAFPN, YOLOFPN
from yolox_jax.ops.anchors import level_shapes

# Official exp settings. "arch" picks the neck/backbone pair; for "darknet" depth is the Darknet
# depth (21 or 53) and width only scales the head (the official YOLOv3 exp uses head width 1.0).
VARIANTS: dict[str, dict[str, Any]] = {
    "yolox-nano": dict(arch="cspdarknet", depth=0.33, width=0.25, depthwise=True, act="silu"),
    "yolox-tiny": dict(arch="cspdarknet", depth=0.33, width=0.375, depthwise=False, act="silu"),
    "yolox-s": dict(arch="cspdarknet", depth=0.33, width=0.50, depthwise=False, act="silu"),
    "yolox-m": dict(arch="cspdarknet", depth=0.67, width=0.75, depthwise=False, act="silu"),
    "yolox-l": dict(arch="cspdarknet", depth=1.0, width=1.0, depthwise=False, act="silu"),
    "yolox-x": dict(arch="cspdarknet", depth=1.33, width=1.25, depthwise=False, act="silu"),
    "yolox-darknet53": dict(arch="darknet", depth=53, width=1.0, depthwise=False, act="lrelu"),
}
MODEL_NAMES: tuple[str, ...] = tuple(VARIANTS)
OVERRIDES: tuple[str, ...] = ("depth", "width", "depthwise", "act", "dtype", "param_dtype", "conv")


class YOLOX(nn.Module):
    """YOLOX: images [B, H, W, 3] RGB 0..255 (H, W multiples of 32) -> raw [B, A, 5 + num_classes].

    raw[..., :4] = (tx, ty, tw, th), raw[..., 4] = objectness logit, raw[..., 5:] = class logits;
    A = sum over strides 8, 16, 32 of (H/s)(W/s), flattened level by level, row-major. Decode with
    ``yolox_jax.decode``. Submodules ``backbone`` (neck, which owns ``backbone/backbone``) and
    ``head``. ``dtype`` is the compute dtype (e.g. bfloat16); params are ``param_dtype``; the
    output is float32.
    """

    num_classes: int = 80
    arch: str = "cspdarknet"
    depth: float = 1.0
    width: float = 1.0
    depthwise: bool = False
    act: str = "silu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    @nn.compact
    def __call__(self, images, train: bool = False):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [B, H, W, 3] (NHWC RGB), got shape {images.shape}")
        level_shapes(images.shape[1:3])  # raises a ValueError unless sides divide by 32
        kw = dict(act=self.act, dtype=self.dtype, param_dtype=self.param_dtype, conv=self.conv)
        if self.arch == "darknet":
            feats = YOLOFPN(int(self.depth), **kw, name="backbone")(images, train)
            # The official YOLOv3 head is a plain 3x3 head; depthwise is rejected in build_model.
            head_depthwise = False
        else:
            feats = PAFPN(self.depth, self.width, self.depthwise, **kw, name="backbone")(
                images, train)
            head_depthwise = self.depthwise
        return YOLOXHead(self.num_classes, self.width, head_depthwise, **kw, name="head")(
            feats, train)


def model_config(name: str, num_classes: int = 80, **overrides) -> dict[str, Any]:
    """Validated YOLOX constructor arguments for variant ``name`` plus ``overrides``."""
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for build_model; valid: {list(OVERRIDES)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    cfg = dict(VARIANTS[name], num_classes=num_classes, dtype=None, param_dtype=jnp.float32,
               conv="xla")
    cfg.update(overrides)
    conv_function(cfg["conv"])  # raises a ValueError naming the valid choices
    if cfg["act"] not in ACTIVATIONS:
        raise ValueError(f"unknown act {cfg['act']!r}; valid: {sorted(ACTIVATIONS)}")
    if cfg["width"] <= 0:
        raise ValueError(f"width must be > 0, got {cfg['width']}")
    if cfg["arch"] == "darknet":
        if cfg["depth"] not in DARKNET_BLOCKS:
            raise ValueError(f"{name}: depth selects the Darknet depth, one of "
                             f"{sorted(DARKNET_BLOCKS)}; got {cfg['depth']}")
        if cfg["depthwise"]:
            raise ValueError(f"{name} has no depthwise variant")
    elif cfg["depth"] <= 0:
        raise ValueError(f"depth must be > 0, got {cfg['depth']}")
    return cfg


def build_model(name: str, num_classes: int = 80, **overrides) -> YOLOX:
    """Build a YOLOX variant (one of ``MODEL_NAMES``) as a Flax module.

    Overrides: ``depth``, ``width``, ``depthwise``, ``act`` ("silu" | "relu" | "lrelu"),
    ``dtype`` (compute dtype, e.g. ``jnp.bfloat16``), ``param_dtype`` (default float32), ``conv``
    (how layers convolve: ``"xla"``, XLA's convolution, the default on every backend; ``"cpu"``,
    the forms XLA:CPU runs fastest, ``yolox_jax.cpu.conv``; or a callable with
    ``lax.conv_general_dilated``'s signature). Every choice computes the same function and loads
    the same weights. Example: ``build_model("yolox-nano", num_classes=3, width=0.125)``.
    """
    return YOLOX(**model_config(name, num_classes, **overrides))

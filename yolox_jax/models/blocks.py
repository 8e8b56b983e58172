"""Building blocks of YOLOX (docs/official-behaviour.md §1.1), NHWC.

Every module takes ``(x, train: bool)``; ``train`` only changes BatchNorm (batch statistics and a
running-stat update). Submodule names mirror the official PyTorch attribute names, with list
indices joined by ``_`` (``m.0`` -> ``m_0``), so that ``yolox_jax.convert`` is a mechanical
rename. Leaf names: conv weights ``kernel``, BN ``scale``/``bias`` (params) and ``mean``/``var``
(batch_stats), prediction-conv biases ``bias``.

Initialisation follows the PyTorch defaults (what the official model trains from): conv kernels
and biases U(+-1/sqrt(fan_in)), BN scale 1 and bias 0.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from yolox_jax.cpu import conv as cpu_conv

Dtype = Any
# How model layers convolve: "xla" (``lax.conv_general_dilated``, the default on every backend),
# "cpu" (the XLA:CPU-friendly forms of ``yolox_jax.cpu.conv``), or a callable with
# ``lax.conv_general_dilated``'s signature.
ConvChoice = Any
CONV_CHOICES = ("xla", "cpu")


def conv_function(conv: ConvChoice) -> Callable:
    """The convolution function for a ``conv`` choice (see ``ConvChoice``)."""
    if callable(conv):
        return conv
    if conv == "xla":
        return jax.lax.conv_general_dilated
    if conv == "cpu":
        return cpu_conv.conv_general_dilated
    raise ValueError(f"unknown conv {conv!r}; valid: {list(CONV_CHOICES)} or a callable with "
                     "lax.conv_general_dilated's signature")

ACTIVATIONS: dict[str, Callable] = {
    "silu": nn.silu,
    "relu": nn.relu,
    # The official "lrelu" is LeakyReLU(0.1), not PyTorch's default slope of 0.01.
    "lrelu": functools.partial(nn.leaky_relu, negative_slope=0.1),
}

# kaiming_uniform(a=sqrt(5)) (PyTorch's Conv2d default) is U(+-1/sqrt(fan_in)) = variance scaling
# 1/3 with a uniform distribution; flax's fan_in for an HWIO kernel already divides by groups.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    """PyTorch's Conv2d bias default: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def get_activation(name: str) -> Callable:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}") from None


def upsample2x(x):
    """Nearest-neighbour x2 upsampling: [B, H, W, C] -> [B, 2H, 2W, C]."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def max_pool_same(x, k: int):
    """Stride-1 k x k max-pool padded with -inf (k//2 each side): [B, H, W, C] -> same shape.

    -inf padding (PyTorch MaxPool2d semantics) means the border never wins, even for negative maps.
    Computed separably, a 1 x k max along W and then a k x 1 max along H: the same values as the
    k x k window, with 2k instead of k**2 comparisons per element (and per element of its
    gradient: XLA:CPU spent ~10 % of a yolox-tiny train step in the SPP's 13 x 13 / 9 x 9
    windows). The gradient still goes to the first maximum in row-major window order, as
    PyTorch's: the W pass picks the leftmost maximum of each row, the H pass the topmost row.
    """
    p = k // 2
    # A Python-scalar init keeps reduce_window recognisable as a max-pool for reverse-mode autodiff.
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, k, 1), (1, 1, 1, 1),
                              ((0, 0), (0, 0), (p, p), (0, 0)))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, 1, 1), (1, 1, 1, 1),
                                 ((0, 0), (p, p), (0, 0), (0, 0)))


class BatchNorm(nn.Module):
    """BatchNorm over N, H, W with PyTorch's running-statistics semantics.

    Same math as ``nn.BatchNorm(momentum=0.97, epsilon=1e-3)`` except for one detail: in train
    mode the *biased* batch variance normalises the activations (as in both frameworks) but the
    running variance is updated with the *unbiased* one, var * n / (n - 1), n = B*H*W, as PyTorch
    does; flax's own BatchNorm stores the biased one. Statistics are computed in float32 whatever
    the compute dtype. Under a sharded ``jax.jit`` the batch axis is global, so statistics span
    the global batch (the official DDP training uses per-GPU statistics).

    Variables: params ``scale``, ``bias`` [C]; batch_stats ``mean``, ``var`` [C].
    """

    momentum: float = 0.97
    epsilon: float = 1e-3
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))

        if train:
            xf = x.astype(jnp.float32)
            mean = jnp.mean(xf, axis=(0, 1, 2))
            # Two-pass variance: E[x^2] - E[x]^2 loses digits for large-mean activations.
            var = jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))
            if not self.is_initializing():
                n = x.shape[0] * x.shape[1] * x.shape[2]
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
                ra_var.value = m * ra_var.value + (1.0 - m) * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value

        mul = scale.astype(jnp.float32) * jax.lax.rsqrt(var + self.epsilon)
        shift = bias.astype(jnp.float32) - mean * mul
        dtype = self.dtype or x.dtype
        return x.astype(dtype) * mul.astype(dtype) + shift.astype(dtype)


class BaseConv(nn.Module):
    """Conv (no bias, symmetric padding (k-1)//2) -> BatchNorm -> activation.

    [B, H, W, Cin] -> [B, H/stride, W/stride, features]. Flax's "SAME" would pad stride-2 convs
    (0, 1) on even sides; the official model pads (1, 1), hence the explicit padding.
    Variables: ``conv/kernel`` [k, k, Cin/groups, features], ``bn/*``.
    """

    features: int
    kernel_size: int = 1
    stride: int = 1
    groups: int = 1
    act: str = "silu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        k, p = self.kernel_size, (self.kernel_size - 1) // 2
        x = nn.Conv(self.features, (k, k), strides=(self.stride, self.stride),
                    padding=((p, p), (p, p)), feature_group_count=self.groups, use_bias=False,
                    kernel_init=torch_kernel_init, dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    conv_general_dilated=conv_function(self.conv),
                    name="conv")(x)
        x = BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="bn")(x, train)
        return get_activation(self.act)(x)


class DWConv(nn.Module):
    """Depthwise k x k conv (``dconv``, groups = Cin) then pointwise 1x1 conv (``pconv``), each BN+act.

    [B, H, W, Cin] -> [B, H/stride, W/stride, features].
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    act: str = "silu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        cin = x.shape[-1]
        conv = functools.partial(BaseConv, act=self.act, dtype=self.dtype,
                                 param_dtype=self.param_dtype, conv=self.conv)
        x = conv(cin, self.kernel_size, self.stride, groups=cin, name="dconv")(x, train)
        return conv(self.features, 1, 1, name="pconv")(x, train)


def Conv(depthwise: bool, features: int, kernel_size: int, stride: int = 1, **kw) -> nn.Module:
    """The official ``Conv = DWConv if depthwise else BaseConv`` switch."""
    if depthwise:
        return DWConv(features, kernel_size, stride, **kw)
    return BaseConv(features, kernel_size, stride, **kw)


class Bottleneck(nn.Module):
    """1x1 ``conv1`` to int(features*expansion), 3x3 ``conv2`` to features, + x if shortcut and Cin == features.

    [B, H, W, Cin] -> [B, H, W, features].
    """

    features: int
    shortcut: bool = True
    expansion: float = 0.5
    depthwise: bool = False
    act: str = "silu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, dtype=self.dtype, param_dtype=self.param_dtype, conv=self.conv)
        hidden = int(self.features * self.expansion)
        y = BaseConv(hidden, 1, **kw, name="conv1")(x, train)
        y = Conv(self.depthwise, self.features, 3, 1, **kw, name="conv2")(y, train)
        if self.shortcut and x.shape[-1] == self.features:
            y = y + x
        return y


class CSPLayer(nn.Module):
    """CSP "C3" block: [B, H, W, Cin] -> [B, H, W, features].

    h = int(features/2); ``conv1`` (1x1 -> h) then ``m_0..m_{n-1}`` Bottlenecks (expansion 1) is the
    main branch, ``conv2`` (1x1 -> h) the bypass; concat [main, bypass] -> ``conv3`` 1x1.
    """

    features: int
    n: int = 1
    shortcut: bool = True
    depthwise: bool = False
    act: str = "silu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, dtype=self.dtype, param_dtype=self.param_dtype, conv=self.conv)
        hidden = int(self.features * 0.5)
        main = BaseConv(hidden, 1, **kw, name="conv1")(x, train)
        bypass = BaseConv(hidden, 1, **kw, name="conv2")(x, train)
        for j in range(self.n):
            main = Bottleneck(hidden, self.shortcut, 1.0, self.depthwise, **kw,
                              name=f"m_{j}")(main, train)
        return BaseConv(self.features, 1, **kw, name="conv3")(
            jnp.concatenate([main, bypass], axis=-1), train)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: ``conv1`` 1x1 -> Cin/2, concat [x, mp5, mp9, mp13], ``conv2`` 1x1.

    [B, H, W, Cin] -> [B, H, W, features]. ``hidden`` overrides Cin/2 (None = Cin // 2).
    """

    features: int
    kernel_sizes: Sequence[int] = (5, 9, 13)
    hidden: int | None = None
    act: str = "silu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, dtype=self.dtype, param_dtype=self.param_dtype, conv=self.conv)
        hidden = self.hidden or x.shape[-1] // 2
        x = BaseConv(hidden, 1, **kw, name="conv1")(x, train)
        x = jnp.concatenate([x] + [max_pool_same(x, k) for k in self.kernel_sizes], axis=-1)
        return BaseConv(self.features, 1, **kw, name="conv2")(x, train)


def space_to_depth(x):
    """Focus slicing: [B, H, W, C] -> [B, H/2, W/2, 4C].

    Channel blocks in the official order: (even row, even col), (odd row, even col),
    (even row, odd col), (odd row, odd col); each block keeps the input channel order.
    """
    return jnp.concatenate(
        [x[:, ::2, ::2], x[:, 1::2, ::2], x[:, ::2, 1::2], x[:, 1::2, 1::2]], axis=-1)


class Focus(nn.Module):
    """Space-to-depth then ``conv`` (BaseConv, stride 1): [B, H, W, 3] -> [B, H/2, W/2, features]."""

    features: int
    kernel_size: int = 3
    act: str = "silu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        return BaseConv(self.features, self.kernel_size, 1, act=self.act, dtype=self.dtype,
                        param_dtype=self.param_dtype, conv=self.conv,
                        name="conv")(space_to_depth(x), train)


class ResLayer(nn.Module):
    """Darknet residual block: ``layer1`` 1x1 C -> C/2, ``layer2`` 3x3 C/2 -> C, + x. [B,H,W,C] -> same."""

    act: str = "lrelu"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv: ConvChoice = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(act=self.act, dtype=self.dtype, param_dtype=self.param_dtype, conv=self.conv)
        c = x.shape[-1]
        y = BaseConv(c // 2, 1, **kw, name="layer1")(x, train)
        y = BaseConv(c, 3, **kw, name="layer2")(y, train)
        return x + y

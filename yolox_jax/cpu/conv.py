"""Convolution forms that XLA:CPU runs faster than its own convolution: ``model.conv="cpu"``.

``conv_general_dilated`` here has ``lax.conv_general_dilated``'s signature (flax's ``nn.Conv``
takes it as ``conv_general_dilated``); ``build_model(..., conv="cpu")`` routes every model
convolution through it. It computes the same sums in another order, so results equal XLA's
convolution to float rounding, and it is a choice made when the model is built: nothing here
looks at the backend or at a global switch. On GPU and TPU use XLA's convolution (the default).

What it does with each kind of convolution (NHWC x HWIO, explicit padding, no dilation):

* **1x1 stride 1**: the dot over channels that it is (``pointwise_conv``), gradients two 2-D
  GEMMs. XLA:CPU runs these convolutions 2.3-3.5x slower than the dot; most of YOLOX's
  convolutions are 1x1.
* **Depthwise** (one group per channel, multiplier 1: ``DWConv``): the ``kh * kw`` shifted
  multiply-adds it is (``depthwise_conv_shifted``), plain autodiff. XLA:CPU's grouped convolution
  runs those layers 15-50x slower forward, 6-40x forward+backward.
* **Other plain convolutions** large enough to gain (``MIN_TAP_FLOPS``): XLA's forward, with
  the gradients as GEMMs (a ``custom_vjp``). XLA:CPU computes a kernel gradient as a
  convolution whose "kernel" is the whole output map, at a few tens of GFLOP/s where a GEMM
  reaches ~200. Stride 1: one GEMM of the input's column shifts against the cotangent's row
  shifts (``kernel_grad_shifted``); strided: one GEMM per kernel row (``kernel_grad_rows``, few
  input channels) or per tap (``kernel_grad_taps``). The input gradient of a strided
  convolution (an input-dilated convolution for XLA, also slow on CPU) is one GEMM plus shifted
  sums per stride phase (``input_grad_strided``); stride-1 input gradients stay XLA's.

Anything else (dilation, groups other than depthwise, string padding, other layouts) goes to
``lax.conv_general_dilated`` unchanged. Measurements: docs/benchmarks.md, docs/perf-notes.md.
Forward-mode autodiff (``jax.jvp``) does not pass through the ``custom_vjp`` forms; use XLA's
convolution (``conv="xla"``) for that.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def _plain(x, w, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
           batch_group_count):
    if x.ndim != 4 or w.ndim != 4 or feature_group_count != 1 or batch_group_count != 1:
        return False
    if any(d not in (None, 1) for d in (lhs_dilation or ())) or \
            any(d not in (None, 1) for d in (rhs_dilation or ())):
        return False
    if isinstance(padding, str):
        return False
    if dimension_numbers is None:
        return False
    want = lax.conv_dimension_numbers(x.shape, w.shape, _DN)
    have = (dimension_numbers if isinstance(dimension_numbers, lax.ConvDimensionNumbers)
            else lax.conv_dimension_numbers(x.shape, w.shape, dimension_numbers))
    return tuple(have) == tuple(want)


def _depthwise(x, w, padding, lhs_dilation, rhs_dilation, dimension_numbers,
               feature_group_count, batch_group_count):
    """NHWC x HWIO, one group per input channel, channel multiplier 1 (w [kh, kw, 1, C]),
    explicit padding, no dilation."""
    if x.ndim != 4 or w.ndim != 4 or feature_group_count == 1:
        return False
    if feature_group_count != x.shape[-1] or tuple(w.shape[2:]) != (1, x.shape[-1]):
        return False
    return _plain(x, w, padding, lhs_dilation, rhs_dilation, dimension_numbers, 1,
                  batch_group_count)


def depthwise_conv_shifted(x, w, strides, padding):
    """Depthwise convolution as shifted multiply-adds.

    x [B, H, W, C], w [kh, kw, 1, C], strides (sh, sw), padding ((top, bottom), (left, right))
    -> [B, Ho, Wo, C] with ``Ho = (H + top + bottom - kh) // sh + 1`` (Wo alike):
    ``y[b, u, v, c] = sum_{i, j} x_pad[b, sh*u + i, sw*v + j, c] * w[i, j, 0, c]``, the value of
    ``lax.conv_general_dilated(..., feature_group_count=C)``. Plain autodiff gives its gradients
    (shifted products and sums over the batch and map). Low-precision inputs accumulate in
    float32 and the result is cast back.
    """
    b, h, wd, c = x.shape
    kh, kw = w.shape[:2]
    sh, sw = (int(v) for v in strides)
    (pt, pb), (pl, pr) = ((int(lo), int(hi)) for lo, hi in padding)
    ho, wo = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"depthwise conv: empty output for input {x.shape}, kernel {w.shape}, "
                         f"strides {(sh, sw)}, padding {padding}")
    acc = jnp.promote_types(x.dtype, jnp.float32)
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
    y = None
    for i in range(kh):
        for j in range(kw):
            tap = lax.slice(xp, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                            (1, sh, sw, 1))
            term = tap.astype(acc) * w[i, j, 0].astype(acc)
            y = term if y is None else y + term
    return y.astype(jnp.result_type(x.dtype, w.dtype))


# Below this many FLOPs per kernel-tap GEMM (2 * B*Ho*Wo * Cin * Cout) XLA's own gradients win:
# nine small GEMMs plus their strided slices cost more in per-kernel overhead than XLA's slow
# kernel gradient loses. Measured per layer (vjp alone, 2-core CPU, per-tap kernel gradient): at
# 6.5-13 MFLOP per tap the GEMM path was 0.54-1.06x XLA's speed, at 52 MFLOP and above 1.05-4.5x.
MIN_TAP_FLOPS = 25e6


def _tap_flops(x_shape, w_shape, strides, padding):
    b, h, w, ci = x_shape
    kh, kw, _, co = w_shape
    ho = (h + padding[0][0] + padding[0][1] - kh) // strides[0] + 1
    wo = (w + padding[1][0] + padding[1][1] - kw) // strides[1] + 1
    return 2.0 * b * ho * wo * ci * co


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` with the same signature and values (to float rounding),
    computed in the CPU forms described in the module docstring."""
    if _depthwise(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                  feature_group_count, batch_group_count) and preferred_element_type is None:
        return depthwise_conv_shifted(lhs, rhs, window_strides, padding)
    plain = _plain(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                   feature_group_count, batch_group_count)
    if plain and _is_pointwise(rhs.shape, window_strides, padding):
        return pointwise_conv(lhs, rhs, precision, preferred_element_type)
    if preferred_element_type is None and plain \
            and _tap_flops(lhs.shape, rhs.shape, window_strides, padding) >= MIN_TAP_FLOPS:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
        return _conv(lhs, rhs, tuple(int(s) for s in window_strides), pads, precision)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)


def _is_pointwise(w_shape, strides, padding):
    return tuple(w_shape[:2]) == (1, 1) and tuple(int(v) for v in strides) == (1, 1) and \
        all(int(lo) == 0 and int(hi) == 0 for lo, hi in padding)


def pointwise_conv(x, w, precision=None, preferred_element_type=None):
    """A 1x1 stride-1 unpadded NHWC x HWIO convolution as a dot over channels:
    x [B, H, W, Cin], w [1, 1, Cin, Cout] -> [B, H, W, Cout]. Same sums as the convolution
    (float rounding may differ). Its gradient is two 2-D GEMMs (``_pointwise_bwd``)."""
    if preferred_element_type is not None:  # rare (flax never asks): plain autodiff
        return _pointwise_dot(x, w, precision, preferred_element_type)
    return _pointwise(x, w, precision)


def _pointwise_dot(x, w, precision, preferred_element_type=None):
    return lax.dot_general(x, w[0, 0], (((3,), (0,)), ((), ())), precision=precision,
                           preferred_element_type=preferred_element_type)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pointwise(x, w, precision):
    return _pointwise_dot(x, w, precision)


def _pointwise_fwd(x, w, precision):
    return _pointwise_dot(x, w, precision), (x, w)


def _pointwise_bwd(precision, res, g):
    """dx = dY W^T over channels; dW = X^T dY with X, dY flattened to [B*H*W, C] first
    (autodiff's contraction over (B, H, W) made XLA:CPU copy X into another layout)."""
    x, w = res
    ci, co = w.shape[2:]
    dx = lax.dot_general(g, w[0, 0], (((3,), (1,)), ((), ())), precision=precision)
    dw = lax.dot_general(x.reshape(-1, ci), g.reshape(-1, co), (((0,), (0,)), ((), ())),
                         precision=precision, preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), dw.reshape(1, 1, ci, co).astype(w.dtype)


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def _xla_conv(x, w, strides, pads, precision):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DN,
                                    precision=precision)


def kernel_grad_taps(x, g, kernel_hw, strides, pads):
    """Kernel gradient as one GEMM per tap: x [B, H, W, Cin], g [B, Ho, Wo, Cout] (the output
    cotangent) -> [kh, kw, Cin, Cout] float32 (accumulated in float32)."""
    kh, kw = kernel_hw
    b, ho, wo, co = g.shape
    ci = x.shape[3]
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    n = b * ho * wo
    g2 = g.reshape(n, co)
    s0, s1 = strides
    taps = []
    for i in range(kh):
        for j in range(kw):
            tap = lax.slice(xp, (0, i, j, 0), (b, i + s0 * (ho - 1) + 1, j + s1 * (wo - 1) + 1, ci),
                            (1, s0, s1, 1))
            taps.append(lax.dot_general(tap.reshape(n, ci), g2, (((0,), (0,)), ((), ())),
                                        preferred_element_type=jnp.float32))
    return jnp.stack(taps).reshape(kh, kw, ci, co)


def kernel_grad_rows(x, g, kernel_hw, strides, pads):
    """Kernel gradient as one GEMM per kernel row: the kw tap slices of row i are stacked on
    channels ([B*Ho*Wo, kw*Cin]) and contracted with the cotangent at once. x [B, H, W, Cin],
    g [B, Ho, Wo, Cout] -> [kh, kw, Cin, Cout] float32. For strided layers with few input
    channels, where ``kernel_grad_taps``'s [N, Cin]^T [N, Cout] GEMMs are too narrow for
    XLA:CPU (320->160 32->64 at batch 8: 153 ms against 199 ms for the nine tap GEMMs)."""
    kh, kw = kernel_hw
    b, ho, wo, co = g.shape
    ci = x.shape[3]
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    s0, s1 = strides
    g2 = g.reshape(-1, co)
    rows = []
    for i in range(kh):
        taps = [lax.slice(xp, (0, i, j, 0), (b, i + s0 * (ho - 1) + 1, j + s1 * (wo - 1) + 1, ci),
                          (1, s0, s1, 1)) for j in range(kw)]
        cols = jnp.concatenate(taps, axis=-1).reshape(-1, kw * ci)
        rows.append(lax.dot_general(cols, g2, (((0,), (0,)), ((), ())),
                                    preferred_element_type=jnp.float32).reshape(kw, ci, co))
    return jnp.stack(rows)


# Strided kernel gradients with fewer input channels than this group each kernel row's taps
# into one GEMM (kernel_grad_rows); per layer it was 0.96-1.3x the nine tap GEMMs below 64
# channels and 0.92-0.97x at 128 and 256.
ROW_GROUP_MAX_CIN = 63


def kernel_grad_shifted(x, g, kernel_hw, pads):
    """Kernel gradient of a stride-1 convolution as one GEMM: x [B, H, W, Cin], g [B, Ho, Wo,
    Cout] (the output cotangent) -> [kh, kw, Cin, Cout] float32.

    ``dW[i, j] = sum_{b, y, x} X_pad[b, y + i, x + j]^T g[b, y, x]``. The kw column shifts of
    the padded input are stacked on channels, ``XW[b, r, x] = (X_pad[b, r, x + j])_j``
    [B, Hp, Wo, kw*Cin], and the kh row shifts of the cotangent likewise,
    ``GH[b, r, x] = (g[b, r - i, x])_i`` [B, Hp, Wo, kh*Cout] (zero where r - i is off the
    map). Then ``XW^T GH`` over all (b, r, x) is the [kw*Cin, kh*Cout] matrix whose (j, i)
    block is dW[i, j]: every tap in one GEMM, with kw + kh shifted copies instead of the kh*kw
    strided tap slices of ``kernel_grad_taps`` (1.0-1.7x faster per layer on XLA:CPU).
    """
    kh, kw = kernel_hw
    b, ho, wo, co = g.shape
    ci = x.shape[3]
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    hp = xp.shape[1]
    if hp != ho + kh - 1 or xp.shape[2] != wo + kw - 1:
        raise ValueError(f"kernel_grad_shifted is for stride 1: input {x.shape}, pads {pads}, "
                         f"kernel {kernel_hw}, cotangent {g.shape}")
    m = b * hp * wo
    xw = jnp.concatenate([xp[:, :, j:j + wo] for j in range(kw)], axis=-1).reshape(m, kw * ci)
    gh = jnp.concatenate([jnp.pad(g, ((0, 0), (i, kh - 1 - i), (0, 0), (0, 0)))
                          for i in range(kh)], axis=-1).reshape(m, kh * co)
    p = lax.dot_general(xw, gh, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    return p.reshape(kw, ci, kh, co).transpose(2, 0, 1, 3)


def input_grad_strided(g, w, x_hw, strides, pads):
    """Input gradient of a strided convolution without XLA's input-dilated convolution (slow on
    XLA:CPU): one GEMM ``dY @ W^T`` for all taps, then every stride-phase of the padded input
    sums its taps' contributions on a sub-grid, and the phases are interleaved.

    g [B, Ho, Wo, Cout], w [kh, kw, Cin, Cout], x_hw (H, W) -> [B, H, W, Cin] float32.
    """
    kh, kw, ci, co = w.shape
    b, ho, wo, _ = g.shape
    s0, s1 = strides
    (p0, q0), (p1, q1) = pads
    hs = -(-(x_hw[0] + p0 + q0) // s0)          # sub-grid size per phase (padded input / stride)
    ws = -(-(x_hw[1] + p1 + q1) // s1)
    z = lax.dot_general(g.reshape(-1, co), w.reshape(kh * kw * ci, co), (((1,), (1,)), ((), ())),
                        preferred_element_type=jnp.float32)
    z = z.reshape(b, ho, wo, kh, kw, ci)
    phases = []
    for ry in range(s0):
        row = []
        for rx in range(s1):
            acc = jnp.zeros((b, hs, ws, ci), jnp.float32)
            for i in range(ry, kh, s0):
                for j in range(rx, kw, s1):
                    oy, ox = i // s0, j // s1      # tap (i, j) lands at sub-grid (y + oy, x + ox)
                    acc = acc + jnp.pad(z[:, :, :, i, j], ((0, 0), (oy, hs - ho - oy),
                                                             (ox, ws - wo - ox), (0, 0)))
            row.append(acc)
        phases.append(jnp.stack(row, axis=3))                        # [B, Hs, Ws, s1, Cin]
    full = jnp.stack(phases, axis=2)                                  # [B, Hs, s0, Ws, s1, Cin]
    full = full.reshape(b, hs * s0, ws * s1, ci)
    return full[:, p0:p0 + x_hw[0], p1:p1 + x_hw[1]]


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, pads, precision):
    return _xla_conv(x, w, strides, pads, precision)


def _conv_fwd(x, w, strides, pads, precision):
    return _xla_conv(x, w, strides, pads, precision), (x, w)


def _conv_bwd(strides, pads, precision, res, g):
    x, w = res
    if strides == (1, 1):
        # XLA's stride-1 input gradient is a plain convolution, which XLA:CPU runs well (the
        # kernel gradient it would also compute is unused, so XLA drops it).
        dx = jax.vjp(lambda x_, w_: _xla_conv(x_, w_, strides, pads, precision), x, w)[1](g)[0]
        dw = kernel_grad_shifted(x, g, w.shape[:2], pads)
    else:
        dx = input_grad_strided(g, w, x.shape[1:3], strides, pads).astype(x.dtype)
        if x.shape[3] <= ROW_GROUP_MAX_CIN:
            dw = kernel_grad_rows(x, g, w.shape[:2], strides, pads)
        else:
            dw = kernel_grad_taps(x, g, w.shape[:2], strides, pads)
    return dx, dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)

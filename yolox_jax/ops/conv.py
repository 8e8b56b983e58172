"""A drop-in ``lax.conv_general_dilated`` whose kernel gradient is fast on XLA:CPU.

The forward pass is XLA's own. The kernel gradient of an NHWC x HWIO convolution,
``dW[i, j] = sum_{b, y, x} X_pad[b, s*y + i, s*x + j, :]^T dY[b, y, x, :]``, is what XLA:CPU
handles worst: it runs it as a convolution whose "kernel" is the whole output map and whose
result is a tiny ``[kh, kw, Cin, Cout]``, at a few tens of GFLOP/s, while a plain GEMM reaches
~200 on the same machine (scripts/bench_train.py, docs/benchmarks.md). On CPU we therefore
compute it with GEMMs: for stride 1 as a single GEMM of the input's column shifts against the
cotangent's row shifts (``kernel_grad_shifted``), otherwise as one GEMM per kernel tap (a
strided slice of the padded input, flattened to ``[B*Ho*Wo, Cin]``, contracted with ``dY``
flattened to ``[B*Ho*Wo, Cout]``, ``kernel_grad_taps``); 2-4x faster per layer than XLA's.
The input gradient of a strided convolution (an input-dilated convolution for XLA, also
slow on CPU) is one GEMM ``dY @ W^T`` plus a sum of shifted tap contributions per stride phase
(``input_grad_strided``); stride-1 input gradients stay XLA's. Other platforms keep XLA's
gradients (decided at trace time, ``_on_cpu``): cuDNN and the TPU emitters are good at them. Same math,
different summation order: results agree to float rounding.

With the switch on and ``use_cpu_winograd(True)`` (``train.cpu_winograd``, off by default), a
float32 3x3 stride-1 pad-1 convolution with at least ``WINOGRAD_MIN_CHANNELS`` channels on a
large enough map runs, forward and input gradient, as Winograd's F(2x2, 3x3)
(``winograd_conv3x3``: 16 GEMMs on transformed tiles, 2.25x fewer multiplies). YNNPACK's
convolution is 1.2-1.6x slower on those layers. XLA's Eigen convolution, which ``import
yolox_jax`` selects on CPU hosts (``train/host_xla_flags.py``), is about as fast (session 9).

A plain 1x1 stride-1 convolution is, on CPU, computed as the dot over channels that it is, with
its gradient as two 2-D GEMMs (``pointwise_conv``), whether or not the gradient switch below is
on: XLA:CPU ran those convolutions 2.3-3.5x slower than the dot (session 6), and most of
YOLOX's convolutions are 1x1.

A depthwise convolution (one group per input channel, channel multiplier 1: YOLOX-nano's and
the ``depthwise=True`` variants' ``DWConv``) is, on CPU, computed as the ``kh * kw`` shifted
multiply-adds it is (``depthwise_conv_shifted``), one loop fusion forward and a few backward,
whatever the switch: XLA:CPU's grouped convolution ran those layers 15-50x slower forward and
6-40x slower forward+backward (session 10, docs/benchmarks.md).

Only the plain case takes the GEMM path (2-D, NHWC / HWIO / NHWC, no dilation, one group) and only
for layers big enough to gain (``MIN_TAP_FLOPS``); any other call goes straight to
``lax.conv_general_dilated``. Switched by ``use_cpu_gemm_gradients``
(the trainer turns it on from ``train.cpu_gemm_gradients``, default true).
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
# kernel gradient loses. Measured per layer (forward-free vjp, 2-core CPU, session 5): at 6.5-13
# MFLOP per tap the GEMM path was 0.54-1.06x XLA's speed, at 52 MFLOP and above 1.05-4.5x.
# (Calibrated with the per-tap kernel gradient, before stride-1 layers took kernel_grad_shifted.)
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
    """``lax.conv_general_dilated`` with the same signature (pass it to ``flax.linen.Conv``'s
    ``conv_general_dilated``); plain NHWC convolutions get the CPU-friendly kernel gradient,
    and on CPU a plain 1x1 stride-1 convolution is computed as the matrix product it is and a
    depthwise one as its shifted multiply-adds."""
    if _depthwise(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                  feature_group_count, batch_group_count) and preferred_element_type is None \
            and _cpu_backend():
        return depthwise_conv_shifted(lhs, rhs, window_strides, padding)
    plain = _plain(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                   feature_group_count, batch_group_count)
    if plain and _is_pointwise(rhs.shape, window_strides, padding) and _pointwise_as_dot():
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


def _cpu_backend() -> bool:
    """Trace-time platform test for the always-on CPU forms (1x1 convolutions as dots, depthwise
    ones as shifted multiply-adds); other backends keep the convolution."""
    return jax.default_backend() == "cpu"


def _pointwise_as_dot() -> bool:
    """Trace-time: XLA:CPU runs a 1x1 convolution 2.3-3.5x slower than the same product written
    as a dot (per-layer timings and the whole-step A/B: docs/benchmarks.md, session 6)."""
    return _cpu_backend()


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
    XLA:CPU (320->160 32->64 at batch 8: 153 ms against 199 ms for the nine tap GEMMs,
    session 9)."""
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
# channels and 0.92-0.97x at 128 and 256 (session 9).
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
    strided tap slices of ``kernel_grad_taps`` (1.0-1.7x faster per layer on XLA:CPU,
    docs/benchmarks.md, session 7).
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


# Winograd F(2x2, 3x3) (Lavin & Gray, 2016): a 4x4 input tile d gives the 2x2 output tile
# A^T [(G g G^T) * (B^T d B)] A. Rows of B^T, G, A^T as (coefficient, index) pairs.
_WINO_BT = (((1, 0), (-1, 2)), ((1, 1), (1, 2)), ((-1, 1), (1, 2)), ((1, 1), (-1, 3)))
_WINO_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
_WINO_AT = (((1, 0), (1, 1), (1, 2)), ((1, 1), (-1, 2), (-1, 3)))

# Where the Winograd form beats YNNPACK's convolution (forward, and the stride-1 input gradient,
# which is the same convolution with the flipped kernel). Per layer, batch 8, 2-core CPU,
# session 9: 80x80 128->128 fwd 51 vs 78 ms, 40x40 192->192 29 vs 46 ms, 52x52 48->48 6.4 vs
# 7.7 ms; it loses with 32 channels (160x160 32->32: 34 vs 28 ms) and on small maps (20x20
# 128->128 at batch 8: 5.6 vs 3.5 ms), where the tile transforms cost more than the GEMMs save.
WINOGRAD_MIN_CHANNELS = 48
WINOGRAD_MIN_PIXELS = 5000      # B * H * W


def _combine(rows, terms):
    """Linear combinations ``[sum_k c * terms[k] for (c, k) in row] for row in rows``."""
    out = []
    for row in rows:
        acc = None
        for c, k in row:
            t = terms[k] if c == 1 else -terms[k]
            acc = t if acc is None else acc + t
        out.append(acc)
    return out


def winograd_conv3x3(x, w, precision=None):
    """A 3x3 stride-1 convolution with one pixel of zero padding on each side, by Winograd's
    F(2x2, 3x3): x [B, H, W, Cin] (H, W even), w [3, 3, Cin, Cout] -> [B, H, W, Cout].

    The padded input is cut into overlapping 4x4 tiles at stride 2 (T = B*H*W/4 of them); the
    tile transform ``B^T d B`` gives V [16, T, Cin], the kernel transform ``G g G^T`` gives
    U [16, Cin, Cout], 16 GEMMs give M = V @ U [16, T, Cout], and ``A^T M A`` gives each tile's
    2x2 outputs. 2.25x fewer multiplies than the direct convolution, at the cost of the
    transforms' memory traffic; the result equals the convolution up to float rounding
    (~1e-6 relative in float32, tests/ops/test_conv.py).
    """
    b, h, wd, ci = x.shape
    co = w.shape[3]
    if h % 2 or wd % 2 or w.shape[:2] != (3, 3):
        raise ValueError(f"winograd_conv3x3 needs even H, W and a 3x3 kernel: input {x.shape}, "
                         f"kernel {w.shape}")
    th, tw = h // 2, wd // 2
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # d[r][c] [B, th, tw, Cin]: element (r, c) of every tile.
    d = [[lax.slice(xp, (0, r, c, 0), (b, r + 2 * th - 1, c + 2 * tw - 1, ci), (1, 2, 2, 1))
          for c in range(4)] for r in range(4)]
    cols = [_combine(_WINO_BT, [d[r][c] for r in range(4)]) for c in range(4)]   # [c][i]
    v = jnp.stack([jnp.stack(_combine(_WINO_BT, [cols[c][i] for c in range(4)]))
                   for i in range(4)]).reshape(16, b * th * tw, ci)
    g = jnp.asarray(_WINO_G, w.dtype)
    u = jnp.einsum("ir,rsxy,js->ijxy", g, w, g, precision=precision).reshape(16, ci, co)
    m = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))), precision=precision)
    m = m.reshape(4, 4, b, th, tw, co)
    rows = [_combine(_WINO_AT, [m[i, j] for i in range(4)]) for j in range(4)]     # [j][a]
    y = jnp.stack([jnp.stack(_combine(_WINO_AT, [rows[j][a] for j in range(4)]))
                   for a in range(2)])                                # [2a, 2b, B, th, tw, Co]
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(b, h, wd, co)


def _winograd_pays(x_shape, w_shape, dtype, strides, pads) -> bool:
    """Trace-time: take ``winograd_conv3x3`` for this convolution (CPU, float32 only)."""
    b, h, wd, ci = x_shape
    return (_WINOGRAD and _on_cpu() and dtype == jnp.float32 and tuple(w_shape[:2]) == (3, 3)
            and strides == (1, 1) and pads == ((1, 1), (1, 1)) and h % 2 == 0 and wd % 2 == 0
            and min(ci, w_shape[3]) >= WINOGRAD_MIN_CHANNELS
            and b * h * wd >= WINOGRAD_MIN_PIXELS)


def _conv_forward(x, w, strides, pads, precision):
    if _winograd_pays(x.shape, w.shape, x.dtype, strides, pads) and w.dtype == x.dtype:
        return winograd_conv3x3(x, w, precision)
    return _xla_conv(x, w, strides, pads, precision)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, pads, precision):
    return _conv_forward(x, w, strides, pads, precision)


def _conv_fwd(x, w, strides, pads, precision):
    return _conv_forward(x, w, strides, pads, precision), (x, w)


def _conv_bwd(strides, pads, precision, res, g):
    x, w = res

    def xla_vjp():
        return jax.vjp(lambda x_, w_: _xla_conv(x_, w_, strides, pads, precision), x, w)[1](g)

    if not _on_cpu():
        return xla_vjp()
    if _winograd_pays(g.shape, (*w.shape[:2], w.shape[3], w.shape[2]), g.dtype, strides, pads):
        # The input gradient of a 3x3 stride-1 pad-1 convolution is the same convolution of
        # the cotangent with the kernel flipped in space and transposed in channels.
        dx = winograd_conv3x3(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2).astype(g.dtype),
                              precision).astype(x.dtype)
    elif strides == (1, 1):
        # XLA's stride-1 input gradient is a plain convolution, which XLA:CPU runs well (the
        # kernel gradient it would also compute is unused, so XLA drops it).
        dx = xla_vjp()[0]
    else:
        dx = input_grad_strided(g, w, x.shape[1:3], strides, pads).astype(x.dtype)
    if strides == (1, 1) and _SHIFTED:
        dw = kernel_grad_shifted(x, g, w.shape[:2], pads)
    elif strides != (1, 1) and x.shape[3] <= ROW_GROUP_MAX_CIN:
        dw = kernel_grad_rows(x, g, w.shape[:2], strides, pads)
    else:
        dw = kernel_grad_taps(x, g, w.shape[:2], strides, pads)
    return dx, dw.astype(w.dtype)


_ENABLED = False
_SHIFTED = True  # stride-1 kernel gradients by kernel_grad_shifted (False: per-tap GEMMs)
_WINOGRAD = False  # 3x3 stride-1 forward and input gradient by winograd_conv3x3 where it pays


def use_cpu_gemm_gradients(enabled: bool) -> None:
    """Switch the CPU gradient formulation on or off for functions traced from now on
    (``train.cpu_gemm_gradients`` in the config, on by default; the module default here is
    off, so library users opt in).

    The gradients equal XLA's to float rounding (tests/ops/test_conv.py; 4e-6 relative on a
    whole model). SimOTA's discrete choices turn rounding into different trajectories, so a
    run with it is not bitwise the run without it; over three seeds of the quick-start
    training the final COCO AP50 was 0.893 / 0.948 / 0.916 with it and 0.925 / 0.913 / 0.857
    without (AP50:95 0.554 / 0.660 / 0.594 vs 0.604 / 0.571 / 0.499; session 5,
    docs/benchmarks.md): no sign of a difference beyond seed noise."""
    global _ENABLED
    _ENABLED = bool(enabled)


def use_cpu_winograd(enabled: bool) -> None:
    """With the CPU gradient formulation on, compute large 3x3 stride-1 convolutions and their
    input gradients by ``winograd_conv3x3`` (``train.cpu_winograd``, off by default; affects
    functions traced from now on). Same values as XLA's convolution to float rounding."""
    global _WINOGRAD
    _WINOGRAD = bool(enabled)


def _on_cpu() -> bool:
    """Trace-time platform test (and the opt-in). ``lax.platform_dependent`` would be the exact
    tool, but on XLA:CPU it leaves a conditional around each gradient, and code inside
    conditionals ran markedly slower there. Both branches compute the same values, so the
    choice only matters for speed (a function traced for CPU but lowered for GPU keeps the CPU
    formulation)."""
    return _ENABLED and jax.default_backend() == "cpu"


_conv.defvjp(_conv_fwd, _conv_bwd)

"""yolox_jax/cpu/conv.py (``conv="cpu"``): every form equals XLA's convolution, values and
gradients, to float rounding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from yolox_jax.cpu import conv as conv_mod
from yolox_jax.cpu.conv import conv_general_dilated, kernel_grad_shifted, kernel_grad_taps

DN = ("NHWC", "HWIO", "NHWC")

# The forms are compared with XLA:CPU's float32 convolution at float32 tolerances; elsewhere the
# reference may run in TF32 or bf16 passes.
pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu",
                                reason="compares with XLA:CPU's convolution")


@pytest.fixture(autouse=True)
def gemm_gradients_for_small_layers(monkeypatch):
    # The small test layers are below the size where the model's layers take the GEMM path.
    monkeypatch.setattr(conv_mod, "MIN_TAP_FLOPS", 0)


@pytest.mark.parametrize("hw,cin,cout,k,stride", [
    ((12, 10), 5, 7, 3, 1), ((12, 10), 5, 7, 3, 2), ((9, 9), 4, 6, 1, 1), ((8, 8), 3, 4, 1, 2),
    ((11, 13), 2, 3, 5, 2),
])
def test_forward_and_gradients_equal_lax(hw, cin, cout, k, stride):
    rng = np.random.default_rng(k * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, *hw, cin)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)).astype(np.float32))
    p = (k - 1) // 2
    dn = lax.conv_dimension_numbers(x.shape, w.shape, DN)

    def loss(conv, x, w):
        y = conv(x, w, (stride, stride), ((p, p), (p, p)), dimension_numbers=dn)
        return jnp.sum(jnp.sin(y)), y

    (l_ref, y_ref), g_ref = jax.jit(jax.value_and_grad(
        lambda x, w: loss(lax.conv_general_dilated, x, w), argnums=(0, 1), has_aux=True))(x, w)
    (l_new, y_new), g_new = jax.jit(jax.value_and_grad(
        lambda x, w: loss(conv_general_dilated, x, w), argnums=(0, 1), has_aux=True))(x, w)
    if k == 1 and stride == 1:   # a 1x1 stride-1 conv is a dot on CPU: same sums, other order
        np.testing.assert_allclose(np.asarray(y_new), np.asarray(y_ref), rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(np.asarray(y_new), np.asarray(y_ref))  # forward untouched
    for a, b in zip(g_new, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn", [kernel_grad_taps, conv_mod.kernel_grad_rows])
def test_kernel_grad_taps_against_numpy_loop(fn):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
    g = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)           # 3x3, stride 2, pad 1
    got = np.asarray(fn(jnp.asarray(x), jnp.asarray(g), (3, 3), (2, 2), ((1, 1), (1, 1))))
    assert got.dtype == np.float32
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.zeros((3, 3, 3, 5), np.float64)
    for i in range(3):
        for j in range(3):
            for y in range(4):
                for xx in range(3):
                    want[i, j] += xp[:, 2 * y + i, 2 * xx + j, :].T @ g[:, y, xx, :]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hw,k,pads", [
    ((7, 6), 3, ((1, 1), (1, 1))), ((5, 9), 5, ((2, 2), (2, 2))), ((6, 5), 3, ((0, 2), (1, 0))),
    ((4, 4), 1, ((0, 0), (0, 0))), ((6, 7), (3, 1), ((1, 1), (0, 0))),
])
def test_kernel_grad_shifted_against_numpy_loop(hw, k, pads):
    """Stride-1 kernel gradient as one GEMM over shifted copies = the definition, summed tap by
    tap in float64 (odd sizes, asymmetric and zero padding, non-square kernels)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(kh * 7 + kw)
    x = rng.normal(size=(2, *hw, 3)).astype(np.float32)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    g = rng.normal(size=(2, ho, wo, 4)).astype(np.float32)
    got = np.asarray(kernel_grad_shifted(jnp.asarray(x), jnp.asarray(g), (kh, kw), pads))
    want = np.zeros((kh, kw, 3, 4), np.float64)
    for i in range(kh):
        for j in range(kw):
            for y in range(ho):
                for xx in range(wo):
                    want[i, j] += xp[:, y + i, xx + j, :].astype(np.float64).T @ g[:, y, xx, :]
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    taps = np.asarray(kernel_grad_taps(jnp.asarray(x), jnp.asarray(g), (kh, kw), (1, 1), pads))
    np.testing.assert_allclose(got, taps, rtol=1e-5, atol=1e-5)


def test_kernel_grad_shifted_rejects_strided_shapes():
    x = jnp.zeros((1, 8, 8, 2))
    g = jnp.zeros((1, 4, 4, 3))                                       # a stride-2 cotangent
    with pytest.raises(ValueError, match="stride 1"):
        kernel_grad_shifted(x, g, (3, 3), ((1, 1), (1, 1)))


def _kernel_grad_and_dots(conv, x, w, stride):
    """Kernel gradient of sum(sin(conv(x, w))) for a 3x3 pad-1 conv, and how many dot_generals
    its trace holds."""
    dn = lax.conv_dimension_numbers(x.shape, w.shape, DN)
    fn = jax.grad(lambda w_: jnp.sum(jnp.sin(conv(
        x, w_, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=dn))))
    return np.asarray(jax.jit(fn)(w)), str(jax.make_jaxpr(fn)(w)).count("dot_general")


def test_stride_one_gradient_takes_the_shifted_gemm():
    """The traced backward of a plain stride-1 3x3 conv is one dot (not nine tap dots) and
    equals XLA's gradient."""
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 5)).astype(np.float32))
    x = jnp.asarray(rng.normal(size=(2, 9, 8, 4)).astype(np.float32))
    got, dots = _kernel_grad_and_dots(conv_general_dilated, x, w, 1)
    ref, _ = _kernel_grad_and_dots(lax.conv_general_dilated, x, w, 1)
    assert dots == 1
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_other_convolutions_fall_back_to_lax():
    """Grouped (2 channels a group) / dilated depthwise / string-padded calls are lax's own."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(1, 8, 8, 4)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, 1, 4)).astype(np.float32))
    w2 = jnp.asarray(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
    dn = lax.conv_dimension_numbers(x.shape, w.shape, DN)
    for kernel, kw in ((w2, {"feature_group_count": 2}),
                       (w, {"rhs_dilation": (2, 2), "feature_group_count": 4})):
        a = conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn, **kw)
        b = lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn,
                                     **kw)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    y = conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=4)
    assert y.shape == (1, 8, 8, 4)


def _depthwise_loop(x, w, strides, pads):
    """float64 NumPy oracle: y[b, u, v, c] = sum_ij x_pad[b, s*u + i, s*v + j, c] w[i, j, 0, c]."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    kh, kw = w.shape[:2]
    ho = (xp.shape[1] - kh) // strides[0] + 1
    wo = (xp.shape[2] - kw) // strides[1] + 1
    y = np.zeros((x.shape[0], ho, wo, x.shape[3]))
    for u in range(ho):
        for v in range(wo):
            patch = xp[:, u * strides[0]:u * strides[0] + kh, v * strides[1]:v * strides[1] + kw]
            y[:, u, v] = np.einsum("bijc,ijc->bc", patch, w[:, :, 0])
    return y


@pytest.mark.parametrize("hw,k,strides,pads", [
    ((9, 8), 3, (1, 1), ((1, 1), (1, 1))), ((9, 8), 3, (2, 2), ((1, 1), (1, 1))),
    ((11, 7), 5, (2, 1), ((2, 2), (2, 2))), ((10, 10), 3, (2, 2), ((0, 1), (1, 0))),
])
def test_depthwise_conv_shifted_against_numpy_loop(hw, k, strides, pads):
    rng = np.random.default_rng(k + strides[0])
    x = rng.normal(size=(2, *hw, 6)).astype(np.float32)
    w = rng.normal(size=(k, k, 1, 6)).astype(np.float32)
    got = conv_mod.depthwise_conv_shifted(jnp.asarray(x), jnp.asarray(w), strides, pads)
    np.testing.assert_allclose(np.asarray(got), _depthwise_loop(x, w, strides, pads),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_calls_take_the_shifted_form_with_lax_values_and_gradients(stride):
    """A depthwise call holds no convolution, and its value and both gradients equal lax's
    grouped convolution's."""
    rng = np.random.default_rng(stride)
    x = jnp.asarray(rng.normal(size=(2, 12, 10, 8)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, 1, 8)).astype(np.float32))
    dn = lax.conv_dimension_numbers(x.shape, w.shape, DN)

    def loss(conv, x, w):
        return jnp.sum(jnp.sin(conv(x, w, (stride, stride), ((1, 1), (1, 1)),
                                    dimension_numbers=dn, feature_group_count=8)))

    ours = lambda x, w: loss(conv_general_dilated, x, w)  # noqa: E731
    assert "conv_general_dilated" not in str(jax.make_jaxpr(jax.grad(ours, (0, 1)))(x, w))
    l_new, g_new = jax.jit(jax.value_and_grad(ours, (0, 1)))(x, w)
    l_ref, g_ref = jax.jit(jax.value_and_grad(
        lambda x, w: loss(lax.conv_general_dilated, x, w), (0, 1)))(x, w)
    np.testing.assert_allclose(float(l_new), float(l_ref), rtol=1e-5)
    for a, b in zip(g_new, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_depthwise_bfloat16_accumulates_in_float32():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 8, 8, 4)).astype(np.float32)
    w = rng.normal(size=(3, 3, 1, 4)).astype(np.float32)
    got = conv_mod.depthwise_conv_shifted(jnp.asarray(x, jnp.bfloat16),
                                          jnp.asarray(w, jnp.bfloat16), (1, 1), ((1, 1), (1, 1)))
    assert got.dtype == jnp.bfloat16
    xb = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
    wb = np.asarray(jnp.asarray(w, jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(got.astype(jnp.float32)),
                               _depthwise_loop(xb, wb, (1, 1), ((1, 1), (1, 1))),
                               rtol=1e-2, atol=1e-2)


def test_depthwise_conv_shifted_rejects_an_empty_output():
    with pytest.raises(ValueError, match="empty output"):
        conv_mod.depthwise_conv_shifted(jnp.zeros((1, 2, 2, 3)), jnp.zeros((5, 5, 1, 3)),
                                        (1, 1), ((0, 0), (0, 0)))


def test_small_layers_keep_xla_gradients(monkeypatch):
    """Below MIN_TAP_FLOPS per tap GEMM the call is lax's own convolution (no custom VJP)."""
    monkeypatch.setattr(conv_mod, "MIN_TAP_FLOPS", 25e6)

    def traced(b, hw, cin, cout, stride):
        x = jax.ShapeDtypeStruct((b, hw, hw, cin), jnp.float32)
        w = jax.ShapeDtypeStruct((3, 3, cin, cout), jnp.float32)
        dn = lax.conv_dimension_numbers(x.shape, w.shape, DN)
        return str(jax.make_jaxpr(lambda x, w: conv_general_dilated(
            x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=dn))(x, w))

    # 2 * 16*20*20 * 32*32 = 13 MFLOP per tap: XLA's gradients; 2 * 8*52*52 * 48*48 = 100 MFLOP:
    # the GEMM path; a stride-2 layer counts its output positions.
    assert "custom_vjp" not in traced(16, 20, 32, 32, 1)
    assert "custom_vjp" in traced(8, 52, 48, 48, 1)
    assert "custom_vjp" not in traced(8, 104, 24, 24, 2)      # 2 * 8*52*52 * 576 = 24.9 M
    assert "custom_vjp" in traced(8, 104, 24, 48, 2)


def test_pointwise_conv_is_a_dot_with_equal_values_and_gradients():
    """A 1x1 stride-1 conv runs as a dot (XLA:CPU's 1x1 convolution is 2-3x slower); values
    and both gradients equal the convolution's, bf16 included."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 6, 5, 7)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(1, 1, 7, 3)).astype(np.float32))
    dn = lax.conv_dimension_numbers(x.shape, w.shape, DN)

    def run(conv, dtype):
        def loss(x, w):
            y = conv(x.astype(dtype), w.astype(dtype), (1, 1), ((0, 0), (0, 0)),
                     dimension_numbers=dn)
            return jnp.sum(jnp.sin(y.astype(jnp.float32))), y
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(x, w)

    jaxpr = str(jax.make_jaxpr(lambda x, w: conv_general_dilated(
        x, w, (1, 1), ((0, 0), (0, 0)), dimension_numbers=dn))(x, w))
    assert "dot_general" in jaxpr and "conv_general_dilated" not in jaxpr
    for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)):
        (_, y_ref), g_ref = run(lax.conv_general_dilated, dtype)
        (_, y_new), g_new = run(conv_general_dilated, dtype)
        assert y_new.dtype == y_ref.dtype and y_new.shape == y_ref.shape
        np.testing.assert_allclose(np.asarray(y_new, np.float32), np.asarray(y_ref, np.float32),
                                   rtol=tol, atol=tol)
        for a, b in zip(g_new, g_ref):
            assert a.dtype == b.dtype
            np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                       rtol=tol, atol=tol * 10)


def test_strided_gradient_groups_kernel_rows_below_the_channel_bound(monkeypatch):
    """A stride-2 3x3 kernel gradient is three GEMMs (one per kernel row) with few input
    channels and nine (one per tap) above ROW_GROUP_MAX_CIN; both equal XLA's gradient."""
    rng = np.random.default_rng(8)
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 5)).astype(np.float32))

    # one more dot: the input gradient's dY @ W^T (input_grad_strided)
    for bound, hw, want_dots in ((63, (9, 8), 3 + 1), (3, (7, 10), 9 + 1)):
        monkeypatch.setattr(conv_mod, "ROW_GROUP_MAX_CIN", bound)
        x = jnp.asarray(rng.normal(size=(2, *hw, 4)).astype(np.float32))
        got, dots = _kernel_grad_and_dots(conv_general_dilated, x, w, 2)
        ref, _ = _kernel_grad_and_dots(lax.conv_general_dilated, x, w, 2)
        assert dots == want_dots
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)

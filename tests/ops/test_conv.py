"""ops/conv.py: the CPU kernel-gradient path equals XLA's convolution gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from yolox_jax.ops import conv as conv_mod
from yolox_jax.ops.conv import conv_general_dilated, kernel_grad_shifted, kernel_grad_taps

DN = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(autouse=True)
def cpu_gemm_gradients(monkeypatch):
    # The small test layers are below the size where the trainer would take this path.
    monkeypatch.setattr(conv_mod, "MIN_TAP_FLOPS", 0)
    conv_mod.use_cpu_gemm_gradients(True)
    yield
    conv_mod.use_cpu_gemm_gradients(False)


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
    """The traced backward of a plain stride-1 3x3 conv is one dot (not nine tap dots), and
    switching ``_SHIFTED`` off gives the per-tap GEMMs; both equal XLA's gradient."""
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 5)).astype(np.float32))

    # Traces are cached per shape, so each setting gets inputs of its own shape.
    for shifted, hw, want_dots in ((True, (9, 8), 1), (False, (7, 10), 9)):
        x = jnp.asarray(rng.normal(size=(2, *hw, 4)).astype(np.float32))
        conv_mod._SHIFTED = shifted
        try:
            got, dots = _kernel_grad_and_dots(conv_general_dilated, x, w, 1)
        finally:
            conv_mod._SHIFTED = True
        ref, _ = _kernel_grad_and_dots(lax.conv_general_dilated, x, w, 1)
        assert dots == want_dots
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
    """On CPU a depthwise call holds no convolution, and its value and both gradients equal
    lax's grouped convolution's; whatever the GEMM-gradient switch says."""
    conv_mod.use_cpu_gemm_gradients(False)
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


@pytest.mark.parametrize("gemm_gradients", [True, False])
def test_pointwise_conv_is_a_dot_with_equal_values_and_gradients(gemm_gradients):
    """On CPU a 1x1 stride-1 conv runs as a dot (XLA:CPU's 1x1 convolution is 2-3x slower),
    whatever train.cpu_gemm_gradients says; values and both gradients equal the convolution's,
    bf16 included."""
    conv_mod.use_cpu_gemm_gradients(gemm_gradients)
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


def _conv3x3_numpy(x, w):
    """Definition of a 3x3 stride-1 pad-1 NHWC x HWIO convolution, summed in float64."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    b, h, wd, _ = x.shape
    out = np.zeros((b, h, wd, w.shape[3]))
    for i in range(3):
        for j in range(3):
            out += xp[:, i:i + h, j:j + wd, :] @ w[i, j].astype(np.float64)
    return out


@pytest.mark.parametrize("shape", [(2, 6, 8, 5, 7), (1, 2, 2, 3, 4), (3, 10, 4, 1, 2)])
def test_winograd_conv3x3_against_numpy_loop(shape):
    b, h, wd, ci, co = shape
    rng = np.random.default_rng(h * wd + ci)
    x = rng.normal(size=(b, h, wd, ci)).astype(np.float32)
    w = rng.normal(size=(3, 3, ci, co)).astype(np.float32)
    got = np.asarray(jax.jit(conv_mod.winograd_conv3x3)(jnp.asarray(x), jnp.asarray(w)))
    assert got.shape == (b, h, wd, co) and got.dtype == np.float32
    np.testing.assert_allclose(got, _conv3x3_numpy(x, w), rtol=1e-5, atol=1e-5)


def test_winograd_conv3x3_rejects_odd_maps_and_other_kernels():
    with pytest.raises(ValueError, match="even H, W"):
        conv_mod.winograd_conv3x3(jnp.zeros((1, 5, 4, 2)), jnp.zeros((3, 3, 2, 2)))
    with pytest.raises(ValueError, match="3x3 kernel"):
        conv_mod.winograd_conv3x3(jnp.zeros((1, 4, 4, 2)), jnp.zeros((5, 5, 2, 2)))


def _conv_fn(x_shape, w):
    dn = lax.conv_dimension_numbers(x_shape, w.shape, DN)
    return lambda conv, x, w_: conv(x, w_, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)


def test_large_3x3_layers_take_winograd_forward_and_input_gradient(monkeypatch):
    """Above the Winograd thresholds a 3x3 stride-1 conv has no convolution left in its forward
    or backward (Winograd forward and input gradient, shifted-GEMM kernel gradient), and its
    value and both gradients equal XLA's to float rounding."""
    monkeypatch.setattr(conv_mod, "_WINOGRAD", True)
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_CHANNELS", 4)
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_PIXELS", 0)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 8, 6, 4)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 6)).astype(np.float32))
    f = _conv_fn(x.shape, w)

    def loss(conv, x, w_):
        y = f(conv, x, w_)
        return jnp.sum(jnp.sin(y)), y

    vg = lambda conv: jax.value_and_grad(lambda x, w_: loss(conv, x, w_), argnums=(0, 1),  # noqa: E731
                                         has_aux=True)
    (_, y_new), g_new = jax.jit(vg(conv_general_dilated))(x, w)
    (_, y_ref), g_ref = jax.jit(vg(lax.conv_general_dilated))(x, w)
    np.testing.assert_allclose(np.asarray(y_new), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
    for a, b in zip(g_new, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)
    jaxpr = str(jax.make_jaxpr(vg(conv_general_dilated))(x, w))
    assert "conv_general_dilated" not in jaxpr


def test_winograd_is_not_taken_below_thresholds_or_off_the_plain_case(monkeypatch):
    monkeypatch.setattr(conv_mod, "_WINOGRAD", True)
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=(2, 8, 6, 4)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 6)).astype(np.float32))
    f = _conv_fn(x.shape, w)

    def convs(x, w_):
        return str(jax.make_jaxpr(lambda a, b: f(conv_general_dilated, a, b))(x, w_)).count(
            "conv_general_dilated")

    assert convs(x, w) == 1                                  # 4 channels < 48: XLA's conv
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_CHANNELS", 4)
    monkeypatch.setattr(conv_mod, "WINOGRAD_MIN_PIXELS", 0)
    assert convs(x, w) == 0
    assert convs(x[:, :7], w) == 1                           # odd height
    assert convs(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)) == 1
    conv_mod.use_cpu_winograd(False)                         # the default
    y = jax.jit(lambda a, b: f(conv_general_dilated, a, b))(x, w)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(f(lax.conv_general_dilated, x, w)))
    assert convs(x, w) == 1


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

"""Building blocks against NumPy oracles: padding, BN statistics, pooling, Focus order."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax.models.blocks import (BaseConv, BatchNorm, CSPLayer, DWConv, SPPBottleneck,
                                     max_pool_same, space_to_depth, upsample2x)


def np_conv(x, w_hwio, stride, pad):
    """Plain NumPy cross-correlation, NHWC x HWIO, symmetric zero padding."""
    k = w_hwio.shape[0]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (xp.shape[1] - k) // stride + 1
    wo = (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w_hwio.shape[-1]), np.float64)
    for i in range(k):
        for j in range(k):
            patch = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
            out += np.einsum("bhwc,co->bhwo", patch, w_hwio[i, j])
    return out


def np_silu(x):
    return x / (1 + np.exp(-x))


@pytest.fixture(scope="module")
def conv_case():
    """A 3x3 stride-2 BaseConv on an even-sided input, with non-trivial running stats."""
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (2, 6, 8, 3)).astype(np.float32)
    module = BaseConv(4, 3, 2)
    variables = module.init(jax.random.PRNGKey(0), x)
    variables = {
        "params": {"conv": variables["params"]["conv"],
                   "bn": {"scale": jnp.asarray([1.0, 0.5, 2.0, -1.0]),
                          "bias": jnp.asarray([0.0, 0.1, -0.2, 0.3])}},
        "batch_stats": {"bn": {"mean": jnp.asarray([0.1, -0.2, 0.3, 0.0]),
                               "var": jnp.asarray([1.0, 2.0, 0.5, 3.0])}},
    }
    return module, variables, x


def test_baseconv_eval_matches_numpy_with_symmetric_padding(conv_case):
    module, v, x = conv_case
    y = np.asarray(module.apply(v, x, train=False))
    assert y.shape == (2, 3, 4, 4)
    conv = np_conv(x, np.asarray(v["params"]["conv"]["kernel"]), 2, 1)
    bn, st = v["params"]["bn"], v["batch_stats"]["bn"]
    ref = np_silu((conv - st["mean"]) / np.sqrt(np.asarray(st["var"]) + 1e-3) * bn["scale"]
                  + bn["bias"])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_train_mode_batch_stats_follow_pytorch(conv_case):
    """Normalise with the biased batch variance; running var gets the unbiased one (n/(n-1))."""
    module, v, x = conv_case
    y, updates = module.apply(v, x, train=True, mutable=["batch_stats"])
    conv = np_conv(x, np.asarray(v["params"]["conv"]["kernel"]), 2, 1)
    n = conv.shape[0] * conv.shape[1] * conv.shape[2]
    mean = conv.mean(axis=(0, 1, 2))
    var_biased = conv.var(axis=(0, 1, 2))
    old = v["batch_stats"]["bn"]
    new = updates["batch_stats"]["bn"]
    np.testing.assert_allclose(new["mean"], 0.97 * np.asarray(old["mean"]) + 0.03 * mean,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["var"], 0.97 * np.asarray(old["var"])
                               + 0.03 * var_biased * n / (n - 1), rtol=1e-5, atol=1e-6)
    bn = v["params"]["bn"]
    ref = np_silu((conv - mean) / np.sqrt(var_biased + 1e-3) * bn["scale"] + bn["bias"])
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_batchnorm_init_does_not_update_stats():
    x = jnp.full((2, 2, 2, 3), 5.0)
    v = BatchNorm().init(jax.random.PRNGKey(0), x, train=True)
    np.testing.assert_array_equal(v["batch_stats"]["mean"], 0.0)
    np.testing.assert_array_equal(v["batch_stats"]["var"], 1.0)


def test_max_pool_pads_with_neg_inf():
    rng = np.random.default_rng(1)
    x = -np.abs(rng.normal(size=(1, 6, 7, 2))).astype(np.float32) - 1.0  # all negative
    for k in (5, 9, 13):
        y = np.asarray(max_pool_same(jnp.asarray(x), k))
        p = k // 2
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf)
        ref = np.stack([np.stack([xp[:, i:i + k, j:j + k].max(axis=(1, 2))
                                  for j in range(7)], 1) for i in range(6)], 1)
        np.testing.assert_array_equal(y, ref)


def test_max_pool_gradient_goes_to_the_first_maximum_in_row_major_order():
    """PyTorch's MaxPool2d backward: each output's gradient goes to its window's first maximum
    (row-major scan). Small integers make ties common, so the order is really tested."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, size=(2, 7, 9, 3)).astype(np.float32)
    up = rng.normal(size=x.shape).astype(np.float32)
    for k in (5, 9, 13):
        p = k // 2
        g = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(max_pool_same(x, k) * up)))(x))
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf)
        ref = np.zeros((x.shape[0], x.shape[1] + 2 * p, x.shape[2] + 2 * p, x.shape[3]),
                       np.float32)
        for b in range(x.shape[0]):
            for c in range(x.shape[3]):
                for i in range(x.shape[1]):
                    for j in range(x.shape[2]):
                        di, dj = divmod(int(np.argmax(xp[b, i:i + k, j:j + k, c])), k)
                        ref[b, i + di, j + dj, c] += up[b, i, j, c]
        np.testing.assert_allclose(g, ref[:, p:-p, p:-p], rtol=1e-6, atol=1e-6)


def test_space_to_depth_uses_official_block_order():
    x = np.arange(1 * 4 * 6 * 3, dtype=np.float32).reshape(1, 4, 6, 3)
    y = np.asarray(space_to_depth(jnp.asarray(x)))
    assert y.shape == (1, 2, 3, 12)
    blocks = [x[:, ::2, ::2], x[:, 1::2, ::2], x[:, ::2, 1::2], x[:, 1::2, 1::2]]
    for b, ref in enumerate(blocks):
        np.testing.assert_array_equal(y[..., 3 * b:3 * b + 3], ref)


def test_upsample_is_nearest():
    x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    y = upsample2x(x)[0, ..., 0]
    np.testing.assert_array_equal(y, [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_block_param_layout_mirrors_official_names():
    x = jnp.zeros((1, 8, 8, 8))
    dw = jax.eval_shape(DWConv(16, 3, 2).init, jax.random.PRNGKey(0), x)["params"]
    assert dw["dconv"]["conv"]["kernel"].shape == (3, 3, 1, 8)  # depthwise: groups = Cin
    assert dw["pconv"]["conv"]["kernel"].shape == (1, 1, 8, 16)
    csp = jax.eval_shape(CSPLayer(8, n=2).init, jax.random.PRNGKey(0), x)["params"]
    assert sorted(csp) == ["conv1", "conv2", "conv3", "m_0", "m_1"]
    assert csp["conv3"]["conv"]["kernel"].shape == (1, 1, 8, 8)
    spp = jax.eval_shape(SPPBottleneck(6).init, jax.random.PRNGKey(0), x)["params"]
    assert spp["conv2"]["conv"]["kernel"].shape == (1, 1, 16, 6)  # [x, mp5, mp9, mp13] of 4 ch


def test_gradients_flow_through_pooling_and_batchnorm():
    """Training differentiates SPP (reduce_window max) and train-mode BN, under jit.

    (An array-valued reduce_window init becomes a tracer under jit, which turns the max-pool into
    a generic reduce_window without a reverse-mode rule.)
    """
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 4))
    g = jax.jit(jax.grad(lambda x: max_pool_same(x, 5).sum()))(x)
    # Each of the 2*8*8*4 outputs routes a gradient of 1 to its window's maximum.
    assert float(g.sum()) == x.size and float(g.min()) >= 0
    module = SPPBottleneck(4)
    v = module.init(jax.random.PRNGKey(0), x)

    def loss(params, x):
        y, _ = module.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                            mutable=["batch_stats"])
        return jnp.mean(y ** 2)

    gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(v["params"], x)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves((gp, gx)))
    assert float(jnp.abs(gp["conv1"]["conv"]["kernel"]).sum()) > 0

"""With the default convolution (XLA's), forward-mode autodiff passes through the model and the
loss: ``jax.jvp`` through yolox-s's forward pass (against finite differences) and through the
loss (against the reverse-mode gradient). Hessian-vector products: tests/models/test_hvp.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import yolox_jax
from tree_math import random_like, vdot
from yolox_jax.losses import yolox_loss

HW = (64, 64)
LABELS = jnp.asarray([[[1, 20, 24, 16, 20], [5, 40, 40, 30, 22]],
                      [[3, 30, 30, 40, 36], [0, 0, 0, 0, 0]]], jnp.float32)
MASK = jnp.asarray([[True, True], [True, False]])


@pytest.fixture(scope="module")
def yolox_s():
    # The init program (model, shapes, key) is the one tests/test_import.py compiles: one compile.
    model = yolox_jax.build_model("yolox-s", num_classes=80)
    images = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (2, *HW, 3)), jnp.float32)
    variables = jax.jit(lambda r: model.init(r, images[:1]))(jax.random.key(0, impl="rbg"))
    return model, variables, images


def _central_difference(f, params, v, eps):
    """(f(p + eps v) - f(p - eps v)) / (2 eps), one jitted program for both points (the
    parameters and the direction are its arguments, not constants folded into it)."""
    plus_minus = jax.jit(lambda p, t, s: jax.vmap(
        lambda si: f(jax.tree.map(lambda a, b: a + si * b, p, t)))(s))
    out = plus_minus(params, v, jnp.asarray([eps, -eps], jnp.float32))
    return (out[0] - out[1]) / (2 * eps)


@pytest.mark.slow
def test_jvp_through_the_forward_pass_matches_finite_differences(yolox_s):
    """Forward mode through yolox-s (no custom_vjp in the way) gives the derivative of the raw
    outputs along a parameter direction."""
    model, variables, images = yolox_s
    f = lambda p: model.apply({"params": p, "batch_stats": variables["batch_stats"]}, images)  # noqa: E731
    params = variables["params"]
    v = jax.tree.map(lambda t: 1e-2 * t, random_like(params, 1))
    _, jv = jax.jit(lambda p, t: jax.jvp(f, (p,), (t,)))(params, v)
    fd = _central_difference(f, params, v, 1e-1)
    assert np.isfinite(np.asarray(jv)).all() and float(jnp.abs(jv).max()) > 0
    np.testing.assert_allclose(np.asarray(jv), np.asarray(fd), rtol=0,
                               atol=2e-2 * float(jnp.abs(fd).max()))


@pytest.mark.slow
def test_jvp_through_the_loss_equals_the_directional_gradient(yolox_s):
    """d/dt loss(params + t v) by forward mode == <grad loss, v> (train-mode forward, SimOTA
    assignment, the official losses)."""
    model, variables, images = yolox_s

    def loss(p):
        raw, _ = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, images,
                             train=True, mutable=["batch_stats"])
        return yolox_loss(raw, LABELS, MASK, HW, use_l1=True)["total_loss"]

    params = variables["params"]
    v = random_like(params, 3)
    forward_mode = jax.jit(lambda p, t: jax.jvp(loss, (p,), (t,))[1])(params, v)
    reverse_mode = vdot(jax.jit(jax.grad(loss))(params), v)
    assert np.isfinite(float(forward_mode)) and float(forward_mode) != 0
    np.testing.assert_allclose(float(forward_mode), float(reverse_mode), rtol=2e-3)

"""Hessian-vector products (forward over reverse) pass through a YOLOX with the default
convolution and the loss, and are symmetric: <u, H v> == <v, H u>."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import yolox_jax
from tree_math import random_like, vdot
from yolox_jax.losses import yolox_loss


@pytest.mark.slow
def test_hessian_vector_products_are_symmetric():
    """Forward-over-reverse HVPs through a small YOLOX and the loss: <u, H v> == <v, H u>."""
    hw = (32, 32)
    model = yolox_jax.build_model("yolox-tiny", num_classes=4, width=0.125)
    images = jnp.asarray(np.random.default_rng(4).uniform(0, 255, (2, *hw, 3)), jnp.float32)
    variables = jax.jit(lambda r: model.init(r, images[:1]))(jax.random.key(5, impl="rbg"))
    labels = jnp.asarray([[[1, 10, 12, 12, 14]], [[3, 16, 18, 20, 16]]], jnp.float32)
    mask = jnp.ones((2, 1), bool)

    def loss(p, stats, images, labels, mask):
        raw = model.apply({"params": p, "batch_stats": stats}, images)
        return yolox_loss(raw, labels, mask, hw)["total_loss"]

    # Every array is an argument of the jitted program, none a constant in it: XLA would fold
    # the whole computation on constants at compile time (slowly) into a 100 MB program.
    @jax.jit
    def hvp(p, t, *data):
        return jax.jvp(lambda q: jax.grad(loss)(q, *data), (p,), (t,))[1]

    params = variables["params"]
    u, v = random_like(params, 6), random_like(params, 7)
    data = (variables["batch_stats"], images, labels, mask)
    uhv, vhu = vdot(u, hvp(params, v, *data)), vdot(v, hvp(params, u, *data))
    assert np.isfinite(float(uhv)) and float(uhv) != 0
    np.testing.assert_allclose(float(uhv), float(vhu), rtol=2e-3)

"""Pytree helpers for the autodiff tests (imported by them)."""
import jax
import jax.numpy as jnp
import numpy as np


def vdot(a, b):
    """Sum over the leaves of two pytrees of the same structure of their dot products."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def random_like(tree, seed):
    """A pytree of standard normal arrays with the shapes and dtypes of ``tree`` (drawn with
    NumPy: no program to compile per leaf shape)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), tree)

"""Pytree helpers for the autodiff tests (imported by them)."""
import jax
import jax.numpy as jnp


def vdot(a, b):
    """Sum over the leaves of two pytrees of the same structure of their dot products."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def random_like(tree, seed):
    """A pytree of standard normal arrays with the shapes and dtypes of ``tree``."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                        for k, x in zip(keys, leaves)])

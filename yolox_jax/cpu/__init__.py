"""Everything in yolox_jax that exists only for speed on XLA:CPU, all of it opt-in.

- :func:`tune_process`: glibc malloc settings and an XLA:CPU flag for this process
  (:mod:`yolox_jax.cpu.process`); the ``yolox-jax`` command line calls it on CPU hosts.
- ``build_model(..., conv="cpu")`` / config key ``model.conv``: convolutions in the forms that
  XLA:CPU runs fastest (:mod:`yolox_jax.cpu.conv`). The default everywhere is XLA's own.
- :mod:`yolox_jax.cpu.precompile`: the command line's compile child for tuned CPU processes.

Importing yolox_jax, or this package, changes nothing in the process.
"""
from yolox_jax.cpu.process import tune_process, tuned

__all__ = ["tune_process", "tuned"]

"""XLA:CPU flags that ``import yolox_jax`` sets on CPU hosts before any JAX backend exists.

One flag, measured on the 2-core Xeon VM of docs/benchmarks.md (session 9):
``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` takes standalone
convolutions off YNNPACK and gives them back to XLA's Eigen convolution, keeping YNNPACK for
dots and fusions. Per layer at batch 8, the Eigen kernels were 1.3-2.3x faster. For example,
stride-2 320->160 32->64 took 33.7 against 75.0 ms, 160x160 32->32 17.9 against 28.5 ms and
80x80 128->128 58.1 against 77.2 ms. The yolox-s 640 train step went from about 4.7-5.0 s to
4.6 s. Turning all YNNPACK fusions off (``=`` with no value) made the step 1.5x slower.

It is applied when JAX will run on the CPU (no GPU/TPU plugin installed, or ``JAX_PLATFORMS``
starting with ``cpu``; the same test as ``host_malloc``), only for jaxlib 0.10 and 0.11 (an
unknown flag aborts XLA), and never when ``XLA_FLAGS`` already sets
``xla_cpu_experimental_ynn_fusion_type`` (the user's choice wins).
``YOLOX_JAX_XLA_CPU_FLAGS=0`` opts out and ``=1`` skips the platform test. It changes which
kernel computes a convolution, so results move by float rounding only.
"""
from __future__ import annotations

import os
import sys

CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
_JAXLIB_VERSIONS = ((0, 10), (0, 11))     # where the flag and its "-type" syntax exist

_applied = False


def applied() -> bool:
    """Whether this process set the flag."""
    return _applied


def _jaxlib_minor():
    try:
        from jaxlib import version
    except ImportError:
        return None
    try:
        major, minor = (int(p) for p in version.__version__.split(".")[:2])
    except ValueError:
        return None
    return major, minor


def _backend_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(xb, "_backends", None))


def apply_default() -> bool:
    """What ``import yolox_jax`` does (see the module doc). Returns whether it set the flag."""
    global _applied
    from yolox_jax.train.host_malloc import will_run_on_cpu

    mode = os.environ.get("YOLOX_JAX_XLA_CPU_FLAGS", "auto").strip().lower()
    if mode in ("0", "off", "false", "no"):
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG_NAME in flags or _backend_started():
        return False
    if mode not in ("1", "on", "true", "yes") and not will_run_on_cpu():
        return False
    if _jaxlib_minor() not in _JAXLIB_VERSIONS:
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + CONV_FLAG).strip()
    _applied = True
    return True

"""glibc malloc settings that let XLA:CPU reuse its step buffers instead of re-faulting them.

XLA:CPU allocates every temporary of a compiled program (about 1.8 GB for a yolox-tiny 416
batch-8 train step, several GB for yolox-s 640) with ``malloc`` when the program starts and frees
it when it ends. With glibc's defaults, allocations that large are served by ``mmap`` and
returned with ``munmap`` (and those made on XLA's worker threads come from per-thread arenas, whose
heaps are capped at 64 MiB, so they are mmapped whatever the threshold). Every step therefore
maps fresh zeroed pages and takes one minor page fault per 4 KiB: ~450k faults and about a
second of kernel time per yolox-tiny step on a 2-core machine.

:func:`tune_host_malloc` makes glibc keep that memory:

* ``M_ARENA_MAX = 1``: every thread allocates from the main arena, which grows with ``brk`` and
  has no size cap;
* ``M_MMAP_THRESHOLD = SIZE_MAX``: large blocks come from that heap, not from ``mmap``;
* ``M_TRIM_THRESHOLD = SIZE_MAX``: freed memory is kept for the next step, not given back.

The same as starting the process with ``MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=<huge>
MALLOC_TRIM_THRESHOLD_=<huge>``. The cost: the process keeps its peak heap for its lifetime
(a training process does anyway). It must run before XLA's threads first allocate, i.e. before
the first JAX computation; later it still helps the main thread's allocations only. On a GPU or
TPU the step's temporaries live on the device and this changes nothing there. Measured figures:
docs/benchmarks.md (training step, session 5).
A cost found later (session 8): with one arena, the tens of thousands of small free chunks that
an XLA compilation leaves behind share the arena with the step's temporaries, and ``malloc``
then searches them on every step (a step compiled in this process runs 30-55 % slower than the
same executable loaded from the persistent compilation cache by a fresh process). The
training loop therefore compiles in a child process (:mod:`yolox_jax.train.precompile`).

``import yolox_jax`` calls :func:`apply_default`, which applies the settings when this process
will run JAX on the CPU (``JAX_PLATFORMS`` starts with ``cpu``, or no GPU/TPU plugin is
installed); ``YOLOX_JAX_HOST_MALLOC=0`` switches that off and ``=1`` forces it on.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# mallopt takes an int; glibc converts it to size_t, so -1 means SIZE_MAX for both thresholds.
_SIZE_MAX = -1

_applied = False


def is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def applied() -> bool:
    """Whether :func:`tune_host_malloc` has taken effect in this process."""
    return _applied


def tune_host_malloc() -> bool:
    """Apply the settings above to this process (once); returns whether they are in effect.

    A no-op that returns False where the C library is not glibc (macOS, musl).
    """
    global _applied
    if _applied:
        return True
    if not is_glibc():
        return False
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    settings = ((_M_ARENA_MAX, 1, "M_ARENA_MAX"),
                (_M_MMAP_THRESHOLD, _SIZE_MAX, "M_MMAP_THRESHOLD"),
                (_M_TRIM_THRESHOLD, _SIZE_MAX, "M_TRIM_THRESHOLD"))
    for param, value, name in settings:
        if libc.mallopt(param, value) != 1:
            log.warning("mallopt(%s) was refused; XLA:CPU steps may page-fault", name)
            return False
    _applied = True
    return True


def _accelerator_plugin_installed() -> bool:
    """Whether JAX could find a GPU/TPU backend here (without initialising any backend)."""
    from importlib import metadata, util

    if any(True for _ in metadata.entry_points(group="jax_plugins")):
        return True
    if util.find_spec("jax_plugins") is not None:  # namespace package of the CUDA/ROCm plugins
        import jax_plugins
        import pkgutil

        if any(True for _ in pkgutil.iter_modules(jax_plugins.__path__)):
            return True
    return util.find_spec("libtpu") is not None


def will_run_on_cpu() -> bool:
    """Whether JAX will pick the CPU: ``JAX_PLATFORMS`` starts with ``cpu``, or it is unset and
    no GPU/TPU plugin is installed. Decided without starting a backend."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not _accelerator_plugin_installed()


def apply_default() -> bool:
    """What ``import yolox_jax`` does: tune when JAX will run on the CPU (see the module doc)."""
    mode = os.environ.get("YOLOX_JAX_HOST_MALLOC", "auto").strip().lower()
    if mode in ("0", "off", "false", "no"):
        return False
    if mode not in ("1", "on", "true", "yes") and not will_run_on_cpu():
        return False
    return tune_host_malloc()

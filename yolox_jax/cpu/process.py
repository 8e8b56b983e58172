"""Process-level tuning for training on XLA:CPU: one explicit call, :func:`tune_process`.

Nothing in yolox_jax calls it on import. The ``yolox-jax`` command line and the benchmark
scripts call it first thing when JAX will run on the CPU; a program of your own may call it
before its first JAX computation. It changes two things in the calling process:

1. **glibc malloc** (``mallopt``): ``M_ARENA_MAX = 1``, ``M_MMAP_THRESHOLD = SIZE_MAX``,
   ``M_TRIM_THRESHOLD = SIZE_MAX``. XLA:CPU mallocs every temporary of a compiled program when
   it starts (1.3 GB for a yolox-tiny 416 batch-8 train step) and frees it when it ends.
   With glibc's defaults those blocks are mmapped and unmapped, so every step maps fresh zeroed
   pages and takes a minor page fault per 4 KiB (~450k faults, about a second of kernel time per
   yolox-tiny step on 2 cores). With one arena that never trims, the step reuses its memory.
   The costs: the process keeps its heap, and a freed block is reused only if nothing took a
   piece of it before the next step asked for it, so the training loop on a tuned heap runs
   one step at a time (the next batch is prepared after a step, not during it), hands the
   free heap back (:func:`release_free_memory`) when the program changes and, every 0.2 s,
   while its background thread prepares another program; and compilations leave small free
   chunks in the same arena that later steps search (a step compiled in the tuned process ran
   30-55 % slower than the same executable loaded from the persistent cache by a fresh
   process), hence the command line's compile child (:mod:`yolox_jax.cpu.precompile`). Same
   as starting the process with
   ``MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=<huge> MALLOC_TRIM_THRESHOLD_=<huge>``.
   Effective for the allocations of XLA's threads only when made before the first JAX
   computation. glibc only (a no-op on macOS and musl).
2. **XLA:CPU flag** ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``, appended
   to ``XLA_FLAGS``: standalone convolutions run on XLA's Eigen kernels instead of YNNPACK's
   (1.3-2.3x faster per layer at batch 8 on the machines of docs/benchmarks.md; YNNPACK keeps
   the dots and fusions). Only with jaxlib 0.10 and 0.11 (an unknown flag aborts XLA), only
   before a JAX backend has started (XLA reads the flags once), and never when ``XLA_FLAGS``
   already names the flag (yours wins). Results move by float rounding only.

Opt-outs for one run: ``YOLOX_JAX_HOST_MALLOC=0``, ``YOLOX_JAX_XLA_CPU_FLAGS=0``.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# mallopt takes an int; glibc converts it to size_t, so -1 means SIZE_MAX for both thresholds.
_SIZE_MAX = -1

CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
_JAXLIB_VERSIONS = ((0, 10), (0, 11))     # where the flag and its "-type" syntax exist

_state = {"malloc": False, "xla_flags": False}


def is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def tuned() -> dict[str, bool]:
    """What :func:`tune_process` has changed in this process: ``{"malloc", "xla_flags"}``."""
    return dict(_state)


def _off(env: str) -> bool:
    return os.environ.get(env, "").strip().lower() in ("0", "off", "false", "no")


def tune_malloc() -> bool:
    """Apply the glibc malloc settings (once); returns whether they are in effect."""
    if _state["malloc"]:
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
    _state["malloc"] = True
    return True


def release_free_memory() -> bool:
    """Return the free memory of a tuned heap to the system (glibc ``malloc_trim(0)``); returns
    whether it ran (only after :func:`tune_malloc`).

    The tuned heap keeps every block it ever held, so a run that moves between programs of
    different sizes (multiscale training, evaluation) would hold the sum of their temporaries.
    The training loop calls it when the next program differs from the last one, once the last
    one has finished (the process then holds about what the largest program needs; the first
    step after a switch pays the page faults of mapping its temporaries again), and while its
    background thread prepares a program (whose allocations can pin a step's freed
    temporaries: their free part goes back to the system)."""
    if not _state["malloc"]:
        return False
    libc = ctypes.CDLL(None)
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    libc.malloc_trim.restype = ctypes.c_int
    libc.malloc_trim(0)
    return True


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


def backend_started() -> bool:
    """Whether a JAX backend exists in this process (then XLA has read its flags)."""
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(xb, "_backends", None))


def set_xla_cpu_flags() -> bool:
    """Append :data:`CONV_FLAG` to ``XLA_FLAGS`` where that takes effect and is safe (see the
    module doc); returns whether this call or an earlier one set it."""
    if _state["xla_flags"]:
        return True
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG_NAME in flags or backend_started() or _jaxlib_minor() not in _JAXLIB_VERSIONS:
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + CONV_FLAG).strip()
    _state["xla_flags"] = True
    return True


def _accelerator_plugin_installed() -> bool:
    """Whether JAX could find a GPU/TPU backend here (without initialising any backend)."""
    from importlib import metadata, util

    if any(True for _ in metadata.entry_points(group="jax_plugins")):
        return True
    if util.find_spec("jax_plugins") is not None:  # namespace package of the CUDA/ROCm plugins
        import pkgutil

        import jax_plugins

        if any(True for _ in pkgutil.iter_modules(jax_plugins.__path__)):
            return True
    return util.find_spec("libtpu") is not None


def will_run_on_cpu() -> bool:
    """Whether JAX will pick the CPU, decided without starting a backend: ``JAX_PLATFORMS``
    starts with ``cpu``, or it is unset and no GPU/TPU plugin is installed. Once a backend has
    started, what it is."""
    if backend_started():
        import jax

        return jax.default_backend() == "cpu"
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not _accelerator_plugin_installed()


def tune_process() -> dict[str, bool]:
    """Tune this process for training on XLA:CPU (see the module doc); returns :func:`tuned`.

    Does nothing when JAX will run on a GPU or TPU. Call it before the first JAX computation;
    later, the XLA flag is skipped (XLA has read its flags) and the malloc settings help the main
    thread only.
    """
    if not will_run_on_cpu():
        return tuned()
    if not _off("YOLOX_JAX_HOST_MALLOC"):
        tune_malloc()
    if not _off("YOLOX_JAX_XLA_CPU_FLAGS"):
        set_xla_cpu_flags()
    return tuned()

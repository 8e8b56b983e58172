"""``yolox_jax.cpu.tune_process``: on a CPU host it tunes glibc malloc (a freed large block is
reused without fresh page faults, what XLA:CPU's per-step temporaries need) and gives
convolutions to XLA's Eigen kernels; it keeps a user's own flag, has opt-outs, and does nothing
where JAX targets an accelerator. Each probe runs in a fresh process."""
import json
import os
import subprocess
import sys

import pytest

from yolox_jax.cpu import process

# Allocate and touch a 256 MiB block twice (freed in between); report the minor page faults of
# the second round. Without tuning glibc mmaps blocks this large and unmaps them on free, so
# the second round faults every page again (65536 faults of 4 KiB); with tuning the block stays
# in the heap and is reused.
_MALLOC_PROBE = r"""
import json, resource, sys
import numpy as np
from yolox_jax.cpu import tune_process, tuned
if sys.argv[1] == "tune":
    tune_process()
def touch():
    a = np.empty(64 << 20, np.float32)
    a.fill(1.0)
    del a
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({**tuned(), "faults": after - before}))
"""

_FLAGS_PROBE = r"""
import json, os
from yolox_jax.cpu import tune_process, tuned
tune_process()
import jax, jax.numpy as jnp
from jax import lax
f = jax.jit(lambda x, w: lax.conv_general_dilated(
    x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")))
text = f.lower(jnp.ones((2, 40, 40, 64)), jnp.ones((3, 3, 64, 64))).compile().as_text()
conv_lines = [l for l in text.splitlines() if " convolution(" in l or "__ynn_fusion" in l]
print(json.dumps({**tuned(), "flags": os.environ.get("XLA_FLAGS", ""),
                  "ynn": any("__ynn_fusion" in l for l in conv_lines)}))
"""

_CLEAN = ("YOLOX_JAX_HOST_MALLOC", "YOLOX_JAX_XLA_CPU_FLAGS", "XLA_FLAGS", "JAX_PLATFORMS")


def _probe(code, *args, **env):
    full = {k: v for k, v in os.environ.items() if k not in _CLEAN}
    full.update(env, NUMPY_MADVISE_HUGEPAGE="0")  # count 4 KiB pages, not transparent huge ones
    full.setdefault("JAX_PLATFORMS", "cpu")
    out = subprocess.run([sys.executable, "-c", code, *args], env=full, capture_output=True,
                         text=True, timeout=180, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


glibc = pytest.mark.skipif(not process.is_glibc(), reason="glibc only")
flag_known = pytest.mark.skipif(process._jaxlib_minor() not in process._JAXLIB_VERSIONS,
                                reason="the flag is only set for the jaxlib versions it exists in")


@glibc
def test_tuned_process_reuses_a_freed_block_without_faults():
    got = _probe(_MALLOC_PROBE, "tune")
    assert got["malloc"] is True
    assert got["faults"] < 2000, got


@glibc
def test_untuned_process_keeps_glibc_defaults_which_fault_again():
    plain = _probe(_MALLOC_PROBE, "plain")
    assert plain["malloc"] is False
    assert plain["faults"] > 30000, plain  # 65536 pages of 4 KiB
    opted_out = _probe(_MALLOC_PROBE, "tune", YOLOX_JAX_HOST_MALLOC="0")
    assert opted_out["malloc"] is False and opted_out["faults"] > 30000, opted_out


# A tuned heap keeps a freed 256 MiB block resident (a small block allocated after it pins it
# below the heap's top, as a step's outputs pin its temporaries); release_free_memory hands its
# pages back. Untuned, release_free_memory does nothing.
_RELEASE_PROBE = r"""
import ctypes, json
from yolox_jax.cpu import process
def rss_mib():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmRSS"))
    return int(line.split()[1]) // 1024
untuned = process.release_free_memory()
process.tune_malloc()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
big = libc.malloc(256 << 20)
ctypes.memset(big, 1, 256 << 20)
pin = libc.malloc(64)
touched = rss_mib()
libc.free(big)
freed = rss_mib()
released = process.release_free_memory()
print(json.dumps({"untuned": untuned, "released": released, "touched": touched,
                  "freed": freed, "after": rss_mib()}))
"""


@glibc
def test_release_free_memory_hands_a_pinned_free_block_back():
    got = _probe(_RELEASE_PROBE)
    assert got["untuned"] is False and got["released"] is True
    assert got["freed"] > got["touched"] - 16, got     # the tuned heap kept it
    assert got["after"] < got["freed"] - 200, got      # and now it is returned


def test_nothing_is_tuned_when_jax_targets_an_accelerator():
    got = _probe(_MALLOC_PROBE, "tune", JAX_PLATFORMS="cuda")
    assert got["malloc"] is False and got["xla_flags"] is False


@flag_known
def test_tuned_cpu_process_gets_eigen_convolutions():
    on = _probe(_FLAGS_PROBE)
    assert on["xla_flags"] and process.CONV_FLAG in on["flags"]
    assert not on["ynn"]
    off = _probe(_FLAGS_PROBE, YOLOX_JAX_XLA_CPU_FLAGS="0")
    assert not off["xla_flags"] and process.CONV_FLAG not in off["flags"]
    if process._jaxlib_minor() == (0, 10):   # where YNNPACK takes convolutions by default
        assert off["ynn"]


@flag_known
def test_a_users_own_flag_is_kept():
    mine = "--xla_cpu_experimental_ynn_fusion_type=-individual_dot"
    got = _probe(_FLAGS_PROBE, XLA_FLAGS=mine)
    assert not got["xla_flags"] and got["flags"] == mine

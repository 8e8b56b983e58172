"""glibc malloc tuning (yolox_jax/train/host_malloc.py): applied on import on CPU hosts, and it
makes a freed large block reusable without fresh page faults (what XLA:CPU's per-step temporaries
need)."""
import json
import os
import subprocess
import sys

import pytest

from yolox_jax.train import host_malloc

pytestmark = pytest.mark.skipif(not host_malloc.is_glibc(), reason="glibc only")

# Allocate and touch a 256 MiB block twice (freed in between); report the minor page faults of
# the second round. Without tuning glibc mmaps blocks this large and unmaps them on free, so
# the second round faults every page again (65536 faults of 4 KiB); with tuning the block stays
# in the heap and is reused.
_PROBE = r"""
import json, resource
import numpy as np
import yolox_jax  # noqa: F401  (applies the default)
from yolox_jax.train import host_malloc
def touch():
    a = np.empty(64 << 20, np.float32)
    a.fill(1.0)
    del a
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"applied": host_malloc.applied(), "faults": after - before}))
"""


def _probe(**env):
    full = {k: v for k, v in os.environ.items() if k != "YOLOX_JAX_HOST_MALLOC"}
    full.update(env, NUMPY_MADVISE_HUGEPAGE="0")  # count 4 KiB pages, not transparent huge ones
    out = subprocess.run([sys.executable, "-c", _PROBE], env=full, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_tunes_on_cpu_and_a_freed_block_is_reused_without_faults():
    tuned = _probe(JAX_PLATFORMS="cpu")
    assert tuned["applied"] is True
    assert tuned["faults"] < 2000, tuned


def test_opt_out_keeps_glibc_defaults_which_fault_again():
    plain = _probe(JAX_PLATFORMS="cpu", YOLOX_JAX_HOST_MALLOC="0")
    assert plain["applied"] is False
    assert plain["faults"] > 30000, plain  # 65536 pages of 4 KiB


def test_not_applied_when_jax_targets_an_accelerator():
    assert _probe(JAX_PLATFORMS="cuda")["applied"] is False
    assert _probe(JAX_PLATFORMS="cuda", YOLOX_JAX_HOST_MALLOC="1")["applied"] is True

"""XLA:CPU flag setup on import (yolox_jax/train/host_xla_flags.py): on a CPU host the flag is
appended to XLA_FLAGS, convolutions then compile to XLA's own kernel instead of a YNNPACK
fusion, a user's own setting is kept, and the opt-out works."""
import json
import os
import subprocess
import sys

import pytest

from yolox_jax.train import host_xla_flags

_PROBE = r"""
import json, os
import yolox_jax  # noqa: F401  (applies the default)
import jax, jax.numpy as jnp
from jax import lax
from yolox_jax.train import host_xla_flags
f = jax.jit(lambda x, w: lax.conv_general_dilated(
    x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")))
text = f.lower(jnp.ones((2, 40, 40, 64)), jnp.ones((3, 3, 64, 64))).compile().as_text()
conv_lines = [l for l in text.splitlines() if " convolution(" in l or "__ynn_fusion" in l]
print(json.dumps({"applied": host_xla_flags.applied(), "flags": os.environ.get("XLA_FLAGS", ""),
                  "ynn": any("__ynn_fusion" in l for l in conv_lines)}))
"""


def _probe(**env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("YOLOX_JAX_XLA_CPU_FLAGS", "XLA_FLAGS")}
    full.update(env, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _PROBE], env=full, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


supported = pytest.mark.skipif(host_xla_flags._jaxlib_minor() not in host_xla_flags._JAXLIB_VERSIONS,
                               reason="flag only set for the jaxlib versions it is known in")


@supported
def test_cpu_host_gets_eigen_convolutions():
    on = _probe()
    assert on["applied"] and host_xla_flags.CONV_FLAG in on["flags"]
    assert not on["ynn"]
    off = _probe(YOLOX_JAX_XLA_CPU_FLAGS="0")
    assert not off["applied"] and host_xla_flags.CONV_FLAG not in off["flags"]
    if host_xla_flags._jaxlib_minor() == (0, 10):   # where YNNPACK takes convolutions by default
        assert off["ynn"]


@supported
def test_user_setting_is_kept():
    mine = "--xla_cpu_experimental_ynn_fusion_type=-individual_dot"
    got = _probe(XLA_FLAGS=mine)
    assert not got["applied"] and got["flags"] == mine


def test_not_applied_when_jax_targets_an_accelerator(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    monkeypatch.delenv("YOLOX_JAX_XLA_CPU_FLAGS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(host_xla_flags, "_backend_started", lambda: False)
    assert host_xla_flags.apply_default() is False
    assert os.environ["XLA_FLAGS"] == ""

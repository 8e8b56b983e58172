"""Importing yolox_jax and using it as a library changes nothing in the user's process: no
environment variable, no ``jax.config`` value, no allocator setting (checked in a fresh process:
import, build and apply yolox-s, the loss, decode and postprocess); the ``yolox-jax`` command
line does tune a CPU process."""
import json
import os
import subprocess
import sys

import pytest

# Runs in a clean process. jax is imported first, as the user's program would (jax itself sets
# a few variables on import); every ctypes library load and symbol lookup after that is
# recorded (the allocator is tuned through ctypes' mallopt; tests/cpu/test_process.py shows
# what an untuned process's malloc does).
_LIBRARY_USE = r"""
import ctypes, json, os, sys
import jax, jax.numpy as jnp, numpy as np

loaded, looked_up = [], []

class RecordingCDLL(ctypes.CDLL):
    def __init__(self, name, *args, **kwargs):
        loaded.append(str(name))
        super().__init__(name, *args, **kwargs)

    def __getattr__(self, name):
        looked_up.append(name)
        return super().__getattr__(name)

    def __getitem__(self, name):
        looked_up.append(name)
        return super().__getitem__(name)

ctypes.CDLL = RecordingCDLL
ctypes.cdll = ctypes.LibraryLoader(RecordingCDLL)
env_before = dict(os.environ)
config_before = {k: repr(v) for k, v in jax.config.values.items()}

import yolox_jax
from yolox_jax.losses import yolox_loss

hw = (64, 64)
model = yolox_jax.build_model("yolox-s", num_classes=80)
images = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (2, *hw, 3)), jnp.float32)
variables = jax.jit(lambda r: model.init(r, images[:1]))(jax.random.key(0, impl="rbg"))
raw = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
labels = jnp.asarray([[[1, 20, 24, 16, 20], [5, 40, 40, 30, 22]]] * 2, jnp.float32)
mask = jnp.asarray([[True, True], [True, False]])
losses = jax.jit(lambda r: yolox_loss(r, labels, mask, hw))(raw)
dets = yolox_jax.postprocess(yolox_jax.decode(raw, hw), conf_threshold=0.001, nms_threshold=0.65)
jax.block_until_ready((losses, dets))

env_after = dict(os.environ)
result = {
    "env_changed": sorted(k for k in set(env_before) | set(env_after)
                          if env_before.get(k) != env_after.get(k)),
    "config_changed": sorted(k for k, v in jax.config.values.items()
                             if config_before.get(k) != repr(v)),
    "loaded": list(loaded), "looked_up": list(looked_up),
    "tuned": yolox_jax.cpu.tuned(),
    "loss": float(losses["total_loss"]), "num_dets": int(dets.valid.sum()),
}
# The recorder sees the library's allocator call when there is one (then the process is tuned).
looked_up.clear()
yolox_jax.cpu.process.tune_malloc()
result["recorder_sees_mallopt"] = "mallopt" in looked_up
print(json.dumps(result))
"""

_CLI_TUNES = r"""
import json, os
from yolox_jax import cli
from yolox_jax.cpu import tuned
rc = cli.main(["train", "train.max_epochz=3"])     # tunes first, then rejects the key
print(json.dumps({"rc": rc, **tuned(), "env_xla_flags": os.environ.get("XLA_FLAGS", "")}))
"""


def _run(code, **env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("XLA_FLAGS", "YOLOX_JAX_HOST_MALLOC", "YOLOX_JAX_XLA_CPU_FLAGS")
             and not k.startswith("MALLOC_")}
    clean.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def library_use():
    return _run(_LIBRARY_USE)


@pytest.mark.slow
def test_library_use_changes_no_environment_variable_or_jax_config(library_use):
    assert library_use["env_changed"] == []
    assert library_use["config_changed"] == []
    assert library_use["tuned"] == {"malloc": False, "xla_flags": False}
    assert library_use["loss"] > 0                         # the work above really ran


def test_library_use_leaves_the_allocator_alone(library_use):
    assert "mallopt" not in library_use["looked_up"], library_use["looked_up"]
    if sys.platform.startswith("linux"):
        assert library_use["recorder_sees_mallopt"]      # the check above could have failed


def test_command_line_tunes_a_cpu_process():
    got = _run(_CLI_TUNES, JAX_PLATFORMS="cpu")
    assert got["rc"] == 2
    from yolox_jax.cpu import process

    if process.is_glibc():
        assert got["malloc"] is True
    if process._jaxlib_minor() in process._JAXLIB_VERSIONS:
        assert got["xla_flags"] is True and process.CONV_FLAG in got["env_xla_flags"]

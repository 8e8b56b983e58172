"""The command line's compile child: it fills the persistent cache with the programs the loop
will compile, so that the training process loads them (yolox_jax/cpu/precompile.py)."""
import json
import subprocess
import sys

import jax
import pytest

from yolox_jax import config as config_lib
from yolox_jax.config import apply_overrides, load_config
from yolox_jax.cpu import precompile


def _cfg(out, *extra):
    # A small run of the synthetic default: 2 steps of yolox-tiny at width 0.125, 96x128.
    return apply_overrides(load_config(None), [
        f"run.output_dir={out}", "run.tensorboard=false", "run.max_steps=2",
        "model.name=yolox-tiny", "model.width=0.125", "data.synthetic_train_images=48",
        "data.synthetic_val_images=6", "data.synthetic_image_size=(96,128)",
        "data.input_size=(96,128)", "data.test_size=(96,128)", "data.batch_size=4",
        "data.max_labels=16", "eval.batch_size=4", "train.max_epoch=4", "train.warmup_epochs=1",
        "train.no_aug_epochs=1", "train.steps_per_epoch=3", *extra])


def test_marker_covers_what_decides_the_programs(tmp_path, monkeypatch):
    a = precompile.marker_path(_cfg(tmp_path), "/cache")
    # Output location, resume and fine-tuning source change no program.
    same = _cfg(tmp_path / "elsewhere", "run.experiment=x", "run.resume=true",
                "run.init_from=some.pth")
    assert precompile.marker_path(same, "/cache") == a
    assert precompile.marker_path(_cfg(tmp_path, "model.width=0.25"), "/cache") != a
    assert precompile.marker_path(_cfg(tmp_path, "run.max_steps=3"), "/cache") != a
    assert precompile.marker_path(_cfg(tmp_path), "/other") != a
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert precompile.marker_path(_cfg(tmp_path), "/cache") != a


def test_wanted_switches(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    monkeypatch.delenv(precompile.SWITCH_ENV, raising=False)
    monkeypatch.delenv(precompile.CHILD_ENV, raising=False)
    monkeypatch.setattr(precompile, "tuned", lambda: {"malloc": False, "xla_flags": False})
    assert not precompile.wanted(cfg)                      # only for a tuned process
    monkeypatch.setattr(precompile, "tuned", lambda: {"malloc": True, "xla_flags": True})
    on_cpu_with_cache = jax.default_backend() == "cpu" and precompile.cache_dir() is not None
    assert precompile.wanted(cfg) == on_cpu_with_cache
    monkeypatch.setenv(precompile.SWITCH_ENV, "0")
    assert not precompile.wanted(cfg)
    monkeypatch.delenv(precompile.SWITCH_ENV)
    monkeypatch.setenv(precompile.CHILD_ENV, "1")          # the child never starts another
    assert not precompile.wanted(cfg)
    monkeypatch.delenv(precompile.CHILD_ENV)
    cfg.train.precompile_in_child = False
    assert not precompile.wanted(cfg)
    monkeypatch.setattr(precompile, "cache_dir", lambda: None)
    cfg.train.precompile_in_child = True
    assert not precompile.wanted(cfg)


# Runs in a fresh process with a cache of its own, so that no other test's compilations (other
# pytest workers share the session cache) can show up in it.
_CHILD_WITH_LOOP = r"""
import json, logging, sys
from pathlib import Path
import jax
cache, cfg_file = sys.argv[1], sys.argv[2]
jax.config.update("jax_compilation_cache_dir", cache)
from yolox_jax import config as config_lib
from yolox_jax.cpu import precompile
from yolox_jax.train.loop import train

found = {"hit": [], "miss": []}

class Cache(logging.Handler):
    def emit(self, record):
        message = record.getMessage()
        kind = ("hit" if message.startswith("Persistent compilation cache hit") else
                "miss" if message.startswith("PERSISTENT COMPILATION CACHE MISS") else None)
        if kind:
            found[kind].append(message.split("'")[1])

logger = logging.getLogger("jax._src.compiler")
logger.setLevel(logging.DEBUG)
logger.addHandler(Cache())
cfg = config_lib.from_dict(json.loads(Path(cfg_file).read_text()))
child = precompile.start(cfg)
out = train(cfg, compiler=child)
print(json.dumps({"ok": child.join(), "ready": sorted(child.compile_s), "step": out["step"],
                  "marker": precompile.marker_path(cfg, cache).is_file(), **found,
                  "again": precompile.start(cfg) is None}))
"""


@pytest.mark.slow
def test_child_compiles_as_needed_and_the_loop_loads(tmp_path):
    """The training process starts with the compile child running and waits for each program
    the child reports ready: every train-step and evaluation program it uses is a cache hit
    (it compiles none itself); the marker makes the next run skip the child."""
    if jax.default_backend() != "cpu":
        pytest.skip("the compile child is for CPU runs")
    cfg = _cfg(tmp_path / "run")
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(config_lib.dumps(cfg))
    cache = tmp_path / "cache"
    cache.mkdir()
    proc = subprocess.run([sys.executable, "-c", _CHILD_WITH_LOOP, str(cache), str(cfg_file)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["ok"] and got["marker"] and got["again"]
    assert got["ready"] == ["eval", "init", "train:96x128"]
    assert got["step"] == 2
    ours = ("jit_step", "jit_predict_batch")
    assert {m for m in got["hit"] if m in ours} == set(ours), got
    assert not [m for m in got["miss"] if m in ours], got


def test_a_failing_child_is_one_warning_line_not_a_second_traceback(tmp_path, monkeypatch, caplog):
    """The run meets the same error and reports it itself: the child's traceback is kept for
    --debug-level logging only, so the user sees one traceback (or one line), not two."""
    import logging

    class Failed:
        """A child that stops with a traceback after compiling nothing."""

        def __init__(self, *args, **kwargs):
            self.stdout = iter(["Traceback (most recent call last):\n", "  ...\n",
                                "ValueError: boom\n"])

        def wait(self):
            return 1

        def poll(self):
            return 1

    monkeypatch.setattr(precompile, "cache_dir", lambda: str(tmp_path / "cache"))
    monkeypatch.setattr(precompile.subprocess, "Popen", Failed)
    with caplog.at_level(logging.INFO, logger=precompile.log.name):
        assert precompile.precompile_in_child(_cfg(tmp_path / "run")) is False
        child = precompile.start(_cfg(tmp_path / "run"))
        assert child.wait("train:64x64") >= 0 and child.ready("eval")  # never blocks on it
        child.close()
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("compile child stopped (exit 1)" in m for m in shown)
    assert not any("Traceback" in m or "boom" in m for m in shown)

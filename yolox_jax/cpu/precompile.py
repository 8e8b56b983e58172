"""The command line's compile child for tuned CPU processes: compile a run's XLA programs in a
child process that only fills the persistent compilation cache, so that the training process
loads executables instead of compiling them.

Why: with the malloc settings of :func:`yolox_jax.cpu.tune_process` (one arena), an XLA
compilation leaves tens of thousands of small free chunks in the arena that every later step
allocates its temporaries from, and ``malloc`` then searches them on every step. A yolox-tiny
step compiled in the training process ran at 2010-2092 ms, the same executable loaded from the
cache by a fresh process at 1311-1361 ms (2-core CPU, docs/perf-notes.md).

The child runs :func:`yolox_jax.train.loop.train` with ``compile_only=True`` on the same config,
so it traces exactly the functions the loop will call: the train step at every input size and
the evaluation program, in the order the run first needs them
(:mod:`yolox_jax.train.programs`), while the initialiser and train state compile in a thread
beside them, writing ``READY <program>`` (``READY init`` for the initialiser) after each. The
training process starts as soon as the first step's program is ready and waits for a later
one only if it needs it first. When the child is done, a marker keyed by the config, the JAX
version and ``XLA_FLAGS`` is written in the cache directory, and later runs of the same config
skip the child. Nothing depends on the child for correctness: if it fails, or the cache misses
anyway, the loop compiles in-process.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

from yolox_jax import config as config_lib
from yolox_jax.cpu.process import tuned

log = logging.getLogger("yolox_jax.train")

CHILD_ENV = "YOLOX_JAX_PRECOMPILE_CHILD"
READY = "READY "  # the child's line when a program is compiled: READY <key>
SWITCH_ENV = "YOLOX_JAX_PRECOMPILE"  # "0" switches the child off for this process and its own
# Run fields that change neither the compiled programs nor the input sizes (the child always
# starts at step 0, so it compiles the sizes of any resumed run of the same config too).
_IRRELEVANT_RUN_KEYS = ("output_dir", "experiment", "keep_checkpoints", "checkpoint_every_epochs",
                        "tensorboard", "init_from", "log_batch_digests", "resume")


def cache_dir() -> str | None:
    """The persistent compilation cache directory JAX writes to, or None when it is off."""
    return jax.config.jax_compilation_cache_dir or None


def wanted(cfg: config_lib.Config) -> bool:
    """Whether this run should precompile in a child: asked for (``train.precompile_in_child``,
    unless ``YOLOX_JAX_PRECOMPILE=0``), in a process whose malloc :func:`tune_process` tuned,
    on one CPU process, with a persistent cache, and not already the child."""
    if os.environ.get(SWITCH_ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return False
    return (bool(cfg.train.precompile_in_child) and os.environ.get(CHILD_ENV) != "1"
            and tuned()["malloc"] and jax.process_count() == 1
            and jax.default_backend() == "cpu" and cache_dir() is not None)


def marker_path(cfg: config_lib.Config, cache: str) -> Path:
    """``<cache>/yolox_jax_precompiled/<digest>``: the digest covers everything that decides
    which programs the run compiles."""
    d = config_lib.to_dict(cfg)
    d["run"] = {k: v for k, v in d["run"].items() if k not in _IRRELEVANT_RUN_KEYS}
    import jaxlib

    key = json.dumps({"config": d, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                      "xla_flags": os.environ.get("XLA_FLAGS", ""), "python": sys.version},
                     sort_keys=True, default=list)
    return Path(cache) / "yolox_jax_precompiled" / hashlib.sha256(key.encode()).hexdigest()[:24]


class ChildCompiler:
    """A running compile child: it compiles the run's programs in the order the run needs them
    and reports each as ready; the training process, which loads them from the cache, waits for
    one only when it needs it before it is ready (the same interface and stall accounting as
    :class:`yolox_jax.train.programs.BackgroundCompiler`)."""

    def __init__(self, cfg: config_lib.Config, cache: str):
        import threading

        self._marker = marker_path(cfg, cache)
        self._tmp = tempfile.TemporaryDirectory(prefix="yolox_jax_precompile_")
        cfg_file = Path(self._tmp.name) / "config.json"
        cfg_file.write_text(config_lib.dumps(cfg))
        env = dict(os.environ, **{CHILD_ENV: "1"})
        self._t0 = time.perf_counter()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "yolox_jax.cpu.precompile", str(cfg_file), cache,
             str(Path(self._tmp.name) / "out")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._ready: set[str] = set()
        self._changed = threading.Condition()
        self._exited = False
        self._output: list[str] = []
        self.ok = None
        self.stall_s, self.stalls, self.compile_s = 0.0, [], {}
        self._reader = threading.Thread(target=self._read, name="yolox_jax-compile-child",
                                        daemon=True)
        self._reader.start()

    def submit(self, key: str, fn) -> None:
        """Nothing to do: the child compiles every program of the run on its own."""

    def ready(self, key: str) -> bool:
        with self._changed:
            return key in self._ready or self._exited

    def wait(self, key: str, count: bool = True) -> float:
        """Block until the child has compiled ``key`` (or has stopped: then the run compiles
        it itself); returns the seconds waited."""
        t0 = time.perf_counter()
        with self._changed:
            self._changed.wait_for(lambda: key in self._ready or self._exited)
        waited = time.perf_counter() - t0
        if count and waited > 0.01:
            self.stall_s += waited
            self.stalls.append((key, waited))
        return waited

    def join(self) -> bool:
        """Wait for the child to finish; returns whether it compiled everything."""
        self._reader.join()
        return bool(self.ok)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._reader.join(timeout=10)

    def _read(self) -> None:
        for line in self._proc.stdout:
            self._output.append(line)
            if line.startswith(READY):
                key = line[len(READY):].strip()
                with self._changed:
                    self.compile_s[key] = time.perf_counter() - self._t0
                    self._ready.add(key)
                    self._changed.notify_all()
        code = self._proc.wait()
        self.ok = code == 0
        if self.ok:
            self._marker.parent.mkdir(parents=True, exist_ok=True)
            self._marker.write_text(self._output[-1].strip() if self._output else "{}")
            log.info("the compile child compiled the run's programs in %.0f s",
                     time.perf_counter() - self._t0)
        elif code > 0:
            # The run meets the same error, if it is one, and reports it: once.
            log.warning("compiling in this process instead: the compile child stopped (exit %d)",
                        code)
            log.debug("compile child output:\n%s", "".join(self._output)[-4000:])
        with self._changed:
            self._exited = True
            self._changed.notify_all()
        self._tmp.cleanup()


def start(cfg: config_lib.Config) -> ChildCompiler | None:
    """Start the compile child unless this config's marker says its programs are all in the
    cache already (then None)."""
    cache = cache_dir()
    if marker_path(cfg, cache).exists():
        return None
    log.info("compiling this config's programs in a child process as they are needed (they are "
             "then loaded from the cache %s)", cache)
    return ChildCompiler(cfg, cache)


def precompile_in_child(cfg: config_lib.Config) -> bool:
    """Run the child to the end unless this config's marker exists; returns whether a child ran
    and succeeded. A failing child is logged and ignored."""
    child = start(cfg)
    return child.join() if child is not None else False


def _child_main(argv: list[str]) -> int:
    cfg_file, cache, out_dir = argv
    jax.config.update("jax_compilation_cache_dir", cache)
    cfg = config_lib.from_dict(json.loads(Path(cfg_file).read_text()))
    cfg.run.output_dir = out_dir
    cfg.run.experiment = "precompile"
    cfg.run.init_from = ""      # values do not change the programs; shapes come from the config
    cfg.run.tensorboard = False
    cfg.run.resume = False
    from yolox_jax.train.loop import train

    out = train(cfg, compile_only=True, on_ready=lambda key: print(READY + key, flush=True))
    print(json.dumps({"programs": out["compiled"]}))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(_child_main(sys.argv[1:]))

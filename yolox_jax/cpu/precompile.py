"""The command line's compile child for tuned CPU processes: compile a run's XLA programs in a
child process that only fills the persistent compilation cache, so that the training process
loads executables instead of compiling them.

Why: with the malloc settings of :func:`yolox_jax.cpu.tune_process` (one arena), an XLA
compilation leaves tens of thousands of small free chunks in the arena that every later step
allocates its temporaries from, and ``malloc`` then searches them on every step. A yolox-tiny
step compiled in the training process ran at 2010-2092 ms, the same executable loaded from the
cache by a fresh process at 1311-1361 ms (2-core CPU, docs/benchmarks.md).

The child runs :func:`yolox_jax.train.loop.train` with ``compile_only=True`` on the same config,
so it traces exactly the functions the loop will call: the initialiser, the train state, the
train step at every input size the run will use, and the evaluation program. When it is done, a
marker keyed by the config, the JAX version and ``XLA_FLAGS`` is written in the cache
directory, and later runs of the same config skip the child. Nothing depends on the child for
correctness: if it fails, or the cache misses anyway, the loop compiles in-process.
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


def precompile_in_child(cfg: config_lib.Config) -> bool:
    """Run the child unless this config's marker exists; returns whether a child ran and
    succeeded. A failing child is logged and ignored."""
    cache = cache_dir()
    marker = marker_path(cfg, cache)
    if marker.exists():
        return False
    log.info("first run of this config: compiling its programs in a child process (then loaded "
             "from the cache %s)", cache)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="yolox_jax_precompile_") as tmp:
        cfg_file = Path(tmp) / "config.json"
        cfg_file.write_text(config_lib.dumps(cfg))
        env = dict(os.environ, **{CHILD_ENV: "1"})
        proc = subprocess.run([sys.executable, "-m", "yolox_jax.cpu.precompile", str(cfg_file),
                               cache, str(Path(tmp) / "out")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        # The run itself meets the same error, if it is one, and reports it: once.
        log.warning("compiling in this process instead: the compile child stopped (exit %d)",
                    proc.returncode)
        log.debug("compile child output:\n%s", proc.stdout[-4000:])
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}")
    log.info("compiled in %.0f s", time.perf_counter() - t0)
    return True


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

    out = train(cfg, compile_only=True)
    print(json.dumps({"sizes": out["compiled_sizes"]}))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(_child_main(sys.argv[1:]))

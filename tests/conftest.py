import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir():
    return DATA


@pytest.fixture(scope="session")
def nano_ref():
    return dict(np.load(DATA / "yolox_nano_ref.npz"))


@pytest.fixture(scope="session")
def tiny_ref():
    return dict(np.load(DATA / "yolox_tiny_ref.npz"))


@pytest.fixture(scope="session")
def simota_ref():
    return dict(np.load(DATA / "simota_cases.npz"))


LOOP_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
ONE_CODEGEN_PART = "--xla_cpu_parallel_codegen_split_count=1"


def pytest_configure(config):
    # One persistent XLA cache for the session: tests that build the same program (the same small
    # model's train step, say) compile it once, also across the subprocesses they start.
    import tempfile

    import jax

    cache = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                                  os.path.join(tempfile.gettempdir(), "yolox_jax_test_xla_cache"))
    jax.config.update("jax_compilation_cache_dir", cache)
    # Every program, not only those that took over a second to compile (JAX's default): the
    # suite's processes (test workers, command lines, multi-process workers) compile many of the
    # same small programs, and reading one back takes milliseconds.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    # The suite's XLA programs are compiled at LLVM optimisation level 0 instead of XLA's default
    # 3: compiling (most of what the tests do) takes about a third less CPU, and the small
    # programs the tests run get slower by less than that saves. Results differ from the
    # default level's in the last bits only (the parity tests' tolerances hold at both). The
    # one long training run, tests/train/test_train_synthetic.py, sets level 1 for itself.
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_backend_optimization_level=" not in flags:
        flags = (flags + " --xla_backend_optimization_level=0").strip()
    # And with XLA:CPU's loop emitters instead of its newer fusion emitters: the compile-bound
    # test files take about 40 % less CPU (test_losses, test_autodiff, test_hvp and test_simota
    # from a cold cache: 224 s -> 134 s). Larger steps run slower with them (about 15 % at
    # 128 px), so the long training run keeps the default. Only with jaxlib 0.10, where the
    # flag is known (an unknown flag aborts XLA).
    from yolox_jax.cpu.process import _jaxlib_minor

    if _jaxlib_minor() == (0, 10) and "--xla_cpu_use_fusion_emitters=" not in flags:
        flags += " " + LOOP_EMITTERS
    # And in one piece: XLA:CPU splits each program's LLVM module into parts that it compiles in
    # parallel, each part repeating some work; on a machine whose cores the test workers already
    # keep busy, one part costs less CPU (a small train step's compile: 12-14 s -> 10-11 s;
    # test_losses.py and test_programs.py from a cold cache: 115 s -> 108 s).
    if _jaxlib_minor() == (0, 10) and "--xla_cpu_parallel_codegen_split_count=" not in flags:
        flags += " " + ONE_CODEGEN_PART
    os.environ["XLA_FLAGS"] = flags
    # Test workers share the machine (pytest-xdist): on a GPU or TPU none may reserve most of
    # the device's memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    # No compile child when a test runs the command line in-process (each would add a process
    # start and a trace); tests/cpu/test_precompile.py exercises it directly.
    os.environ.setdefault("YOLOX_JAX_PRECOMPILE", "0")
    # The suite's processes (this one, and the command lines the tests run, in-process or as
    # subprocesses) get the command line's XLA:CPU flag but keep glibc's malloc: the one-arena
    # setting speeds up large steps, but slows down compiling, which is what most tests do
    # (about a fifth longer on 2 cores). tests/cpu/test_process.py and tests/test_import.py
    # check the tuning itself in fresh processes, whose environment leaves this out.
    os.environ.setdefault("YOLOX_JAX_HOST_MALLOC", "0")
    from yolox_jax.cpu import tune_process

    tune_process()


# The longest files, longest first: seconds each took in a full parallel run on a 2-core AMD
# VM (``--durations``, three workers; the files without a figure took less than 30 s). The one
# exception: the two files that start multi-process runs take turns
# (``tiny_step.one_run_at_a_time``), so test_multihost_cli.py comes after a file that keeps a
# worker busy while test_multihost.py runs its pair. Only the order of the files comes from
# these figures.
_LONGEST_FIRST = (
    "train/test_resume.py",               # 526 s
    "train/test_train_synthetic.py",      # 485 s
    "train/test_multihost.py",            # 345 s
    "train/test_programs.py",             # 333 s
    "train/test_multihost_cli.py",        # 451 s
    "assign/test_simota.py",              # 157 s
    "cpu/test_precompile.py",             # 158 s
    "test_bench_cli.py",                  # 133 s
    "assign/test_buckets.py",             # 128 s
    "test_study.py",                      # 128 s
    "models/test_autodiff.py",            # 118 s
    "test_own_data.py",                   # 97 s
    "test_losses.py",                     # 95 s
    "test_export.py",                     # 76 s
    "models/test_hvp.py",                 # 66 s
    "test_import.py",                     # 48 s
    "test_assign_vis.py",                 # 42 s
    "test_convert_cli.py",                # 39 s
    "models/test_model_zoo.py",
    "test_nms.py",
    "data/test_device_aug.py",
    "train/test_accelerator_export.py",
    "assign/test_registry.py",
    "test_convert.py",
    "ops/test_postprocess.py",
    "assign/test_ota_soft.py",
    "models/test_model_parity.py",
)


def pytest_collection_modifyitems(config, items):
    # Longest files first (pytest-xdist hands out one file at a time), then files with slow
    # tests, then the rest, each group in collection order: the workers start on the long files
    # and the short ones fill in after, instead of one worker finishing on a long file alone.
    root = Path(__file__).parent

    def rank(item):
        name = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        first = _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)
        return (first, item.path not in slow_files)

    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=rank)

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


def pytest_configure(config):
    # One persistent XLA cache for the session: tests that build the same program (the same small
    # model's train step, say) compile it once, also across the subprocesses they start.
    import tempfile

    import jax

    cache = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                                  os.path.join(tempfile.gettempdir(), "yolox_jax_test_xla_cache"))
    jax.config.update("jax_compilation_cache_dir", cache)
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


# The longest files, longest first: seconds each took in a full parallel run on a 2-core AMD CI
# machine (``--durations``, three workers). The one exception: the two files that start
# multi-process runs take turns (``tiny_step.one_run_at_a_time``), so test_multihost_cli.py
# comes after files that keep a worker busy while test_multihost.py runs its pair, instead of
# second. Only the order of the files comes from these figures.
_LONGEST_FIRST = (
    "train/test_multihost.py",            # 652 s
    "train/test_programs.py",             # 527 s
    "train/test_resume.py",               # 475 s
    "train/test_multihost_cli.py",        # 609 s
    "assign/test_simota.py",              # 443 s
    "train/test_train_synthetic.py",      # 342 s
    "assign/test_buckets.py",             # 245 s
    "test_bench_cli.py",                  # 217 s
    "test_losses.py",                     # 216 s
    "cpu/test_precompile.py",             # 211 s
    "test_own_data.py",                   # 186 s
    "test_study.py",                      # 182 s
    "test_export.py",                     # 180 s
    "models/test_autodiff.py",            # 174 s
    "models/test_model_zoo.py",           # 136 s
    "models/test_hvp.py",                 # 105 s
    "test_nms.py",                        # 92 s
    "test_convert_cli.py",                # 83 s
    "data/test_device_aug.py",            # 80 s
    "train/test_accelerator_export.py",   # 79 s
    "assign/test_registry.py",            # 75 s
    "test_import.py",                     # 71 s
    "test_assign_vis.py",                 # 64 s
    "test_convert.py",                    # 63 s
    "ops/test_postprocess.py",            # 60 s
    "assign/test_ota_soft.py",            # 55 s
    "models/test_model_parity.py",        # 54 s
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

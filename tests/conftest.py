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


# Seconds each of the longest files takes in the parallel suite on a 2-core AMD CI machine
# (``--durations``). Only the order of the files comes from these figures.
_FILE_SECONDS = {
    "train/test_multihost.py": 475, "train/test_programs.py": 454,
    "train/test_multihost_cli.py": 356, "cpu/test_precompile.py": 265,
    "assign/test_simota.py": 247, "models/test_autodiff.py": 216,
    "train/test_train_synthetic.py": 205, "train/test_resume.py": 197, "test_losses.py": 193,
    "test_study.py": 187, "test_bench_cli.py": 173, "test_own_data.py": 166,
    "test_export.py": 153, "assign/test_registry.py": 95, "test_convert_cli.py": 85,
    "test_import.py": 83, "ops/test_postprocess.py": 83, "models/test_model_zoo.py": 80,
    "test_assign_vis.py": 80, "models/test_model_parity.py": 77, "assign/test_buckets.py": 75,
    "data/test_device_aug.py": 73, "train/test_accelerator_export.py": 66,
}


def pytest_collection_modifyitems(config, items):
    # Longest files first (pytest-xdist hands out one file at a time), then files with slow
    # tests, then the rest, each group in collection order: the workers start on the long files
    # and the short ones fill in after, instead of one worker finishing on a long file alone.
    root = Path(__file__).parent

    def rank(item):
        name = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        return (-_FILE_SECONDS.get(name, 0), item.path not in slow_files)

    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=rank)

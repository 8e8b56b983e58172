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


def pytest_collection_modifyitems(config, items):
    # Files with slow tests first, in their own order: the two workers (pytest-xdist, one file
    # at a time) start on the longest files and the short ones fill in after, instead of one
    # worker finishing on a long file alone.
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)

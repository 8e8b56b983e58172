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

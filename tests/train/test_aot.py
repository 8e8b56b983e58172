"""`yolox-jax compile` (yolox_jax/train/aot.py) without compiling: the sizes it compiles, the
batch it compiles for, device memory, errors and the table. (That its programs are the
trainer's own, found in the cache a run filled, is tests/train/test_programs.py.)"""
import types
from importlib.util import find_spec

import jax
import pytest

from yolox_jax.config import load_config
from yolox_jax.errors import UserError
from yolox_jax.train import aot


def test_sizes_largest_base_all():
    cfg = load_config(None, ["data.input_size=(416,416)", "data.random_size=(10,20)"])
    every = [(416, 416)] + [(32 * s, 32 * s) for s in range(10, 21) if 32 * s != 416]
    assert aot.train_sizes(cfg, "all") == every
    assert aot.train_sizes(cfg, "base") == [(416, 416)]
    assert aot.train_sizes(cfg, "largest") == [(640, 640)]
    # Single scale: the base size is the largest.
    one = load_config(None, ["data.input_size=(96,128)"])
    assert aot.train_sizes(one, "largest") == aot.train_sizes(one, "all") == [(96, 128)]


def test_abstract_batch_is_the_pipelines_batch():
    """What the programs are lowered for: the shapes, dtypes and shardings of the batch the
    training loop hands the step (the synthetic pipeline, read here)."""
    from yolox_jax.train import inputs
    from yolox_jax.train.loop import abstract_train_batch, close_iterator
    from yolox_jax.train.sharding import make_mesh

    cfg = load_config("synthetic", ["data.synthetic_train_images=8", "data.batch_size=4",
                                    "data.input_size=(96,128)", "data.max_labels=16"])
    mesh = make_mesh()
    source, _ = inputs.build_sources(cfg.data)
    iterator = inputs.train_iterator(cfg, source, "aug", cfg.data.batch_size)
    try:
        real = inputs.batch_preparer(cfg, mesh)(next(iterator))
    finally:
        close_iterator(iterator)
    want = abstract_train_batch(cfg, mesh)
    assert sorted(real) == sorted(want)
    for k, v in real.items():
        assert (v.shape, v.dtype, v.sharding) == (want[k].shape, want[k].dtype,
                                                   want[k].sharding), k


def _device(platform, kind, stats=None):
    def memory_stats():
        if stats is None:
            raise RuntimeError("no allocator")
        return stats
    return types.SimpleNamespace(platform=platform, device_kind=kind, memory_stats=memory_stats)


def test_device_memory():
    assert aot.device_memory_bytes(jax.devices("cpu")[0]) is None
    assert aot.device_memory_bytes(_device("tpu", "TPU v5 lite")) == 16 * 2 ** 30
    assert aot.device_memory_bytes(_device("tpu", "TPU v4")) == 32 * 2 ** 30
    assert aot.device_memory_bytes(_device("tpu", "TPU v9 future")) is None
    # A local device's allocator limit wins over the table.
    assert aot.device_memory_bytes(_device("gpu", "NVIDIA H100", {"bytes_limit": 80e9})) == 80e9


def test_table_says_what_does_not_fit():
    row = dict(program="train:640x640", devices=4, device_kind="TPU v5 lite", global_batch=256,
               compile_s=12.0, flops=2.5e12, argument_mib=100.0, output_mib=10.0, alias_mib=10.0,
               temp_mib=20000.0, code_mib=5.0, device_mib=16384.0)
    big = aot.ProgramReport(**row, total_mib=20105.0, peak_mib=19000.0, fits=False)
    small = aot.ProgramReport(**{**row, "temp_mib": 8000.0}, total_mib=8105.0, peak_mib=None,
                              fits=True)
    lines = aot.table([big, small]).splitlines()
    assert "| NO |" in lines[2] and "| yes |" in lines[3]
    assert "4 x TPU v5 lite" in lines[2] and "19.63 GiB | 18.55 GiB" in lines[2]
    assert "2500" in lines[2] and "7.92 GiB | - |" in lines[3]


def test_errors_name_what_is_wrong(monkeypatch):
    cfg = load_config("synthetic", ["data.batch_size=4"])
    with pytest.raises(UserError, match="data.batch_size"):
        aot.compile_train_programs(cfg, [jax.devices()[0]] * 3)
    with pytest.raises(UserError, match="--topology"):
        aot.topology_devices("v5e")
    if find_spec("libtpu") is None:
        with pytest.raises(UserError, match=r"jax\[tpu\].*\(--topology\)"):
            aot.topology_devices("v5e:2x2")


def test_cli_without_libtpu_is_one_line(capsys, monkeypatch):
    from yolox_jax.cli import main

    import importlib.util
    import os

    # The command keeps JAX's own backend on the CPU for a topology: not in this process.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "libtpu" else find_spec(name, *a))
    assert main(["compile", "--topology", "v5e:2x2"]) == 2
    err = capsys.readouterr().err
    assert "--topology" in err and "libtpu" in err and "Traceback" not in err


@pytest.mark.skipif(find_spec("libtpu") is None, reason="needs libtpu (jax[tpu])")
def test_topology_devices_without_tpus(monkeypatch):
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # as the command line sets it
    devices = aot.topology_devices("v5e:2x2")
    assert len(devices) == 4 and {d.platform for d in devices} == {"tpu"}
    assert aot.device_memory_bytes(devices[0]) == 16 * 2 ** 30
    assert len(aot.topology_devices("v5e:1x1")) == 1

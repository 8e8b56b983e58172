"""The command line's compile child: it fills the persistent cache with the programs the loop
will compile, so that the training process loads them (yolox_jax/cpu/precompile.py)."""
from pathlib import Path

import jax
import pytest

from yolox_jax.config import apply_overrides, load_config
from yolox_jax.cpu import precompile
from yolox_jax.train.loop import train


def _cfg(out, *extra):
    # The train-step program of tests/train/test_resume.py (same model, sizes, batch, label
    # padding and schedule), so that its runs load what the child compiles here.
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


def _programs(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir()
            if p.name.startswith(("jit_step-", "jit_predict_batch-"))}


@pytest.mark.slow
def test_child_compiles_and_the_loop_loads(tmp_path):
    if jax.default_backend() != "cpu" or precompile.cache_dir() is None:
        pytest.skip("the precompile child is for CPU runs with a persistent cache")
    cfg = _cfg(tmp_path / "run")
    cache = Path(precompile.cache_dir())
    marker = precompile.marker_path(cfg, str(cache))
    if marker.exists():   # a rerun of the suite on a kept cache
        marker.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    before = _programs(cache)

    assert precompile.precompile_in_child(cfg)
    assert marker.is_file()
    # The child compiled the train step and the evaluation program (on a kept cache an earlier
    # run of this test may have left them there already).
    names = {n.split("-")[0] for n in _programs(cache) - before} or \
        {n.split("-")[0] for n in before}
    assert {"jit_step", "jit_predict_batch"} <= names
    assert not (tmp_path / "run").exists()      # the child wrote nothing where the run will

    after_child = _programs(cache)
    out = train(cfg)                            # train() itself never starts a child
    assert out["step"] == 2
    # Every train-step and evaluation program the loop needed was a cache hit: it wrote none.
    assert _programs(cache) == after_child, _programs(cache) - after_child
    # A second run of the same config skips the child.
    assert not precompile.precompile_in_child(cfg)

"""Checkpointer: latest N kept, best by AP, an interrupted save leaves the previous one usable,
variables readable without a model."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax.train.checkpoint import Checkpointer, abstract_like, read_variables


def _state(v):
    return {"step": jnp.asarray(v, jnp.int32), "params": {"w": jnp.full((3,), float(v))},
            "batch_stats": {"m": jnp.zeros(2)}, "ema_params": {"w": jnp.full((3,), v + 0.5)},
            "ema_batch_stats": {"m": jnp.ones(2)}}


def test_keeps_latest_n_and_best(tmp_path):
    ck = Checkpointer(tmp_path, keep=2, async_save=False)
    for step, ap in [(1, 0.1), (2, 0.3), (3, 0.2), (4, 0.25)]:
        ck.save(step, _state(step), None, {"a": 1}, {"step": step})
        ck.save_best(step, _state(step), {"a": 1}, {"step": step}, ap)
    ck.wait()
    assert ck.latest.all_steps() == [3, 4]
    assert ck.best.all_steps() == [2]
    restored = ck.restore(abstract_like(_state(0)), which="best")
    assert float(restored["state"]["params"]["w"][0]) == 2.0
    assert restored["meta"]["ap"] == pytest.approx(0.3)
    ck.close()


def test_best_ap_survives_a_restart(tmp_path):
    """A new Checkpointer over an existing run compares against the AP kept on disk."""
    ck = Checkpointer(tmp_path, keep=2, async_save=False)
    assert ck.best_ap() == float("-inf")
    assert ck.save_best(1, _state(1), {}, {"step": 1}, 0.3)
    ck.wait()
    ck.close()
    ck = Checkpointer(tmp_path, keep=2, async_save=False)
    assert ck.best_ap() == pytest.approx(0.3)
    assert not ck.save_best(2, _state(2), {}, {"step": 2}, 0.3)   # a tie is not an improvement
    assert ck.save_best(3, _state(3), {}, {"step": 3}, 0.4)
    ck.wait()
    assert ck.best.all_steps() == [3] and ck.best_ap() == pytest.approx(0.4)
    ck.close()


def test_interrupted_save_leaves_previous_checkpoint(tmp_path):
    ck = Checkpointer(tmp_path, keep=3, async_save=False)
    ck.save(1, _state(1), None, {}, {"step": 1})
    ck.wait()
    ck.close()
    # What a process killed in the middle of writing step 2 leaves behind: orbax's temporary
    # folder, never renamed to "2", with part of the files.
    partial = tmp_path / "latest" / "2.orbax-checkpoint-tmp-1234567"
    shutil.copytree(tmp_path / "latest" / "1", partial)
    shutil.rmtree(partial / "state")
    ck = Checkpointer(tmp_path, keep=3, async_save=False)
    assert ck.latest_step() == 1
    restored = ck.restore(abstract_like(_state(0)))
    assert restored["step"] == 1
    np.testing.assert_array_equal(np.asarray(restored["state"]["params"]["w"]), np.ones(3))
    ck.close()


def test_read_variables_returns_ema_by_default(tmp_path):
    ck = Checkpointer(tmp_path / "checkpoints", keep=1, async_save=False)
    ck.save(5, _state(5), None, {"model": {}}, {"step": 5})
    ck.wait()
    ck.close()
    variables, _ = read_variables(tmp_path)
    assert float(variables["params"]["w"][0]) == 5.5
    raw, _ = read_variables(tmp_path, use_ema=False)
    assert float(raw["params"]["w"][0]) == 5.0

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


def _rich_state(v):
    """A state with enough values that a flipped bit lands in array data."""
    rng = np.random.default_rng(int(v))
    return {"step": jnp.asarray(v, jnp.int32),
            "params": {"w": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32)},
            "batch_stats": {"m": jnp.asarray(rng.normal(size=(32,)), jnp.float32)},
            "ema_params": {"w": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32)},
            "ema_batch_stats": {"m": jnp.asarray(rng.normal(size=(32,)), jnp.float32)}}


def _two_steps(folder):
    ck = Checkpointer(folder, keep=3, async_save=False)
    for step in (1, 2):
        ck.save(step, _rich_state(step), None, {"model": {"name": "x"}},
                {"step": step, "phase": "aug"})
    ck.wait()
    ck.close()
    return sorted(p for p in (folder / "latest" / "2").rglob("*") if p.is_file())


def _same(tree_a, tree_b):
    return all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree_util.tree_leaves(tree_a), jax.tree_util.tree_leaves(tree_b)))


def test_a_flipped_bit_in_any_file_never_restores_wrong_values(tmp_path, caplog):
    """One bit flipped in the middle of each file of the newest step, one file at a time: the
    restore gives the saved values of step 2, or (detected) warns naming step 2 and gives step
    1. Flips in array data and in the JSON records are always detected."""
    import logging

    files = _two_steps(tmp_path / "clean")
    assert files
    detected = []
    for k, f in enumerate(files):
        run = tmp_path / f"run{k}"
        shutil.copytree(tmp_path / "clean", run)
        target = run / f.relative_to(tmp_path / "clean")
        data = bytearray(target.read_bytes())
        if not data:
            continue
        data[len(data) // 2] ^= 0x10
        target.write_bytes(bytes(data))
        ck = Checkpointer(run, async_save=False)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="yolox_jax.train"):
            restored = ck.restore(abstract_like(_rich_state(0)))
        ck.close()
        if restored["step"] == 2:
            assert _same(restored["state"], _rich_state(2)), f.relative_to(tmp_path / "clean")
        else:
            assert restored["step"] == 1 and _same(restored["state"], _rich_state(1))
            assert any("latest/2" in r.getMessage() for r in caplog.records)
            detected.append(str(f.relative_to(tmp_path / "clean" / "latest" / "2")))
        # The model-only reader (eval, predict, fine-tuning) reads state and config only: it
        # gives the values of step 2 or, when those are damaged, of step 1; never others.
        variables, _ = read_variables(run / "latest")
        if restored["step"] == 1 and "/state/" in str(f):
            assert _same(variables["params"], _rich_state(1)["ema_params"])
        else:
            assert any(_same(variables["params"], _rich_state(s)["ema_params"]) for s in (1, 2))
    assert any(d.startswith("state/") for d in detected), detected
    assert any(d.startswith("meta/") for d in detected) and any(d.startswith("config/") for d in detected)


def test_verify_reports_every_step(tmp_path, capsys):
    from yolox_jax.cli import main
    from yolox_jax.train.checkpoint import verify

    files = _two_steps(tmp_path)
    data_file = max((f for f in files if "/state/" in str(f)), key=lambda f: f.stat().st_size)
    data = bytearray(data_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    data_file.write_bytes(bytes(data))
    report = verify(tmp_path)
    assert [(m, s) for m, s, _ in report] == [("latest", 1), ("latest", 2)]
    assert report[0][2] == "ok" and report[1][2] != "ok"
    assert main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "latest/1: ok" in out and "latest/2: DAMAGED" in out

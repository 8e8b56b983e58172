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


def test_damage_to_the_state_store_is_found_before_orbax_reads_the_step(tmp_path, monkeypatch):
    """A flipped bit in the state store's manifest, b-tree nodes or ``_METADATA``, and a truncated
    data file, are found by the synchronous preflight: the restore falls back to step 1 without
    Orbax ever reading step 2 (Orbax's asynchronous reads of a damaged store can hang)."""
    import orbax.checkpoint as ocp

    from yolox_jax.train.checkpoint import CheckpointError, preflight

    files = _two_steps(tmp_path / "clean")
    step2 = tmp_path / "clean" / "latest" / "2"
    state = step2 / "state"
    structure = [f for f in files if f.name in ("manifest.ocdbt", "_METADATA") and f.parent == state
                 or f.parent == state / "d"]
    assert {f.name for f in structure} >= {"manifest.ocdbt", "_METADATA"} and len(structure) >= 3
    data = max((f for f in files if f.parent.name == "d" and f.parent != state / "d"),
               key=lambda f: f.stat().st_size)
    asked = []
    real_restore = ocp.CheckpointManager.restore
    monkeypatch.setattr(ocp.CheckpointManager, "restore",
                        lambda self, step, *a, **k: asked.append(step) or real_restore(
                            self, step, *a, **k))
    preflight(step2)    # the undamaged step passes
    for k, f in enumerate(structure + [data]):
        run = tmp_path / f"run{k}"
        shutil.copytree(tmp_path / "clean", run)
        target = run / f.relative_to(tmp_path / "clean")
        raw = bytearray(target.read_bytes())
        if f == data:
            raw = raw[: len(raw) // 2]
        else:
            raw[len(raw) // 2] ^= 0x10
        target.write_bytes(bytes(raw))
        with pytest.raises(CheckpointError, match="latest/2"):
            preflight(run / "latest" / "2")
        asked.clear()
        ck = Checkpointer(run, async_save=False)
        restored = ck.restore(abstract_like(_rich_state(0)))
        ck.close()
        assert restored["step"] == 1 and asked == [1], (f.relative_to(step2), asked)
        assert _same(restored["state"], _rich_state(1))


def test_preflight_knows_every_leaf_orbax_writes(tmp_path, monkeypatch):
    """Arrays, scalars, empty nodes and None leaves, saved by Orbax as one array per leaf: the
    preflight passes the step (also given as a relative path), and names an array that
    ``_METADATA`` lists but the store lacks."""
    import json
    from pathlib import Path

    import orbax.checkpoint as ocp

    from yolox_jax.train.checkpoint import CheckpointError, preflight

    saver = ocp.StandardCheckpointer()
    saver.save(tmp_path / "1" / "state", {"a": jnp.ones(3), "b": np.ones(2), "n": 3, "f": 1.5,
                                          "e": {}, "z": None})
    saver.wait_until_finished()
    preflight(tmp_path / "1")
    monkeypatch.chdir(tmp_path)
    preflight(Path("1"))
    meta_file = tmp_path / "1" / "state" / "_METADATA"
    meta = json.loads(meta_file.read_text())
    entry = meta["tree_metadata"].pop("('n',)")
    entry["key_metadata"][0]["key"] = "m"
    meta["tree_metadata"]["('m',)"] = entry
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="'m' of state/_METADATA is not in the state store"):
        preflight(tmp_path / "1")


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


def test_no_room_for_a_checkpoint_stops_at_that_save(tmp_path, monkeypatch):
    """Free space is checked against the checkpoint's size before each save: the save that does
    not fit raises one CheckpointSaveError naming its step and the last complete checkpoint."""
    import collections

    from yolox_jax.train import checkpoint as ckpt_mod

    usage = collections.namedtuple("usage", "total used free")
    free = {"bytes": 1 << 30}
    monkeypatch.setattr(ckpt_mod.shutil, "disk_usage", lambda p: usage(2 << 30, 0, free["bytes"]))
    ck = Checkpointer(tmp_path, keep=3, async_save=False)
    ck.check_space(_state(0))  # the start-of-run check
    ck.save(1, _state(1), None, {}, {"step": 1})
    free["bytes"] = 1000
    with pytest.raises(ckpt_mod.CheckpointSaveError) as err:
        ck.save(2, _state(2), None, {}, {"step": 2})
    message = str(err.value)
    assert "no room for checkpoint step 2" in message and "MiB are free" in message
    assert str(tmp_path / "latest" / "1") in message
    ck.close()
    with pytest.raises(ckpt_mod.CheckpointSaveError, match="no checkpoint of this run"):
        Checkpointer(tmp_path / "fresh", async_save=False).check_space(_state(0))


WRITE_FAILS = r"""
import resource, signal, sys
import jax, jax.numpy as jnp
from yolox_jax.train.checkpoint import Checkpointer, CheckpointSaveError

# 4 MiB of random (incompressible) parameters
state = lambda v: {"step": jnp.asarray(v), "params": {"w": jax.random.normal(jax.random.key(v), (1 << 20,))}}
ck = Checkpointer(sys.argv[1], keep=3)
ck.save(1, state(1), None, {}, {"step": 1})
ck.wait()
# From here no file may grow past 64 KiB (EFBIG, as a full disk gives ENOSPC): the background
# write of step 2 (4 MiB of parameters) fails.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
ck.save(2, state(2), None, {}, {"step": 2})
try:
    ck.wait()
except CheckpointSaveError as err:
    print("ERROR", err)
print("LATEST", ck.latest_step())
"""


def test_a_failed_background_write_is_one_error_naming_its_step(tmp_path):
    """A write error in an asynchronous save (a real one: the file-size limit makes the
    writer fail) surfaces as one CheckpointSaveError naming the failed step and the last complete
    checkpoint; the failed step never becomes the latest."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", WRITE_FAILS, str(tmp_path)], capture_output=True,
                         text=True, timeout=300, env={**__import__("os").environ,
                                                      "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    error = [line for line in out.stdout.splitlines() if line.startswith("ERROR")]
    assert len(error) == 1, out.stdout + out.stderr[-3000:]
    assert "checkpoint step 2 could not be written" in error[0]
    assert f"the last complete checkpoint is {tmp_path / 'latest' / '1'}" in error[0]
    assert "LATEST 1" in out.stdout


def _mixed_state(v):
    """Leaves of several dtypes and ranks, nested dicts, a tuple and a scalar."""
    rng = np.random.default_rng(int(v))
    return {"step": jnp.asarray(v, jnp.int32),
            "params": {"a": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
                       "b": jnp.asarray(rng.normal(size=(5,)), jnp.bfloat16)},
            "batch_stats": {"m": jnp.zeros((0,), jnp.float32)},
            "ema_params": {"w": jnp.asarray(rng.integers(0, 9, size=(2, 3)), jnp.int32)},
            "ema_batch_stats": {},
            "opt_state": (jnp.asarray(rng.normal(size=(7,)), jnp.float32), {"t": jnp.float32(v)})}


def test_packed_state_round_trips_exactly(tmp_path):
    """The state is written as one buffer per dtype plus a layout; restoring into the target's
    structure and reading without a model both give every array back bitwise, with its shape and
    dtype."""
    from yolox_jax.train.checkpoint import pack, read_state

    buffers, layout, _ = pack(_mixed_state(3))
    assert sorted(buffers) == ["bfloat16", "float32", "int32"]
    assert buffers["float32"].size == 3 * 3 * 2 * 4 + 7 + 1
    ck = Checkpointer(tmp_path, keep=2, async_save=False)
    ck.save(3, _mixed_state(3), None, {"model": {}}, {"step": 3})
    ck.wait()
    assert (tmp_path / "latest" / "3" / "layout").exists()
    restored = ck.restore(abstract_like(_mixed_state(0)))
    ck.close()
    want = _mixed_state(3)
    assert jax.tree_util.tree_structure(restored["state"]) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(restored["state"]), jax.tree_util.tree_leaves(want)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    step, state, _ = read_state(tmp_path)
    assert step == 3 and state["params"]["b"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(state["opt_state"]["1"]["t"]), np.float32(3))
    np.testing.assert_array_equal(np.asarray(state["params"]["a"]["kernel"]),
                                  np.asarray(want["params"]["a"]["kernel"]))


def test_restore_into_another_shape_names_the_array(tmp_path):
    ck = Checkpointer(tmp_path, keep=2, async_save=False)
    ck.save(1, _state(1), None, {}, {"step": 1})
    ck.wait()
    other = dict(_state(0), params={"w": jnp.zeros((4,))})
    with pytest.raises(Exception, match=r"params/w is float32\[3\] in the checkpoint, "
                                        r"float32\[4\] in the target"):
        ck.restore(abstract_like(other))
    missing = dict(_state(0), params={"w": jnp.zeros((3,)), "v": jnp.zeros((3,))})
    with pytest.raises(Exception, match="1 arrays missing, e.g. params/v"):
        ck.restore(abstract_like(missing))
    ck.close()


def test_a_step_written_one_array_per_leaf_still_restores(tmp_path):
    """Checkpoints of earlier versions (the state as one Orbax array per leaf) restore and read."""
    import orbax.checkpoint as ocp

    from yolox_jax.train.checkpoint import array_checksums, read_state, record_checksum

    manager = ocp.CheckpointManager(tmp_path / "latest",
                                    options=ocp.CheckpointManagerOptions(create=True))
    config, meta = {"model": {}}, {"step": 4}
    sums = {"state": array_checksums(_state(4)), "config": record_checksum(config),
            "meta": record_checksum(meta)}
    manager.save(4, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_state(4)), config=ocp.args.JsonSave(config),
        meta=ocp.args.JsonSave(meta), checksums=ocp.args.JsonSave(sums)))
    manager.wait_until_finished()
    manager.close()
    ck = Checkpointer(tmp_path, async_save=False)
    restored = ck.restore(abstract_like(_state(0)))
    ck.close()
    assert restored["step"] == 4 and _same(restored["state"], _state(4))
    step, state, _ = read_state(tmp_path)
    assert step == 4 and float(state["ema_params"]["w"][0]) == 4.5

"""The checkpoint benchmark's rows: both ways of saving time a save and a restore that give the
state back."""
import jax.numpy as jnp

from yolox_jax.bench import checkpoint as bench


def test_rows_for_a_small_state(monkeypatch, capsys):
    state = {"params": {"w": jnp.arange(6.0), "b": jnp.ones((2, 3))}, "step": jnp.int32(1)}
    monkeypatch.setattr(bench, "_state", lambda name, width: state)
    assert bench.main(["--models", "tiny:0.5", "--repeat", "1"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[1] == "3" and all(c.endswith(" s") for c in cells[3:7])
    assert all(c.endswith("x") for c in cells[7:])

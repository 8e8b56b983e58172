"""Data parallelism: a real multi-process run (``jax.distributed`` with two CPU processes on
localhost, two simulated devices each) equals one device.

The processes talk through JAX's CPU collectives (gloo), so this is the multi-host code path
(``maybe_initialize_distributed``, ``make_array_from_process_local_data``, per-process data
shards, Orbax saving from every process), only with both "hosts" on one machine.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tiny_step import free_port, run_pair, worker_env

STEP_WORKER = textwrap.dedent(r"""
    # argv: out_prefix mode init_file [process_id port]; mode "single" = 1 process x 1 device,
    # which writes the initial variables to init_file, "multi" = one of 2 processes x 2
    # devices, which starts from them. Both write <out>1.npz after the first step and <out>.npz
    # after the second.
    import os, sys
    out, mode, init_file = sys.argv[1:4]
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + (
        " --xla_force_host_platform_device_count=" + ("1" if mode == "single" else "2"))
    import jax, jax.numpy as jnp, numpy as np
    from yolox_jax.train.sharding import maybe_initialize_distributed
    if mode == "multi":
        maybe_initialize_distributed("on", f"127.0.0.1:{sys.argv[5]}", 2, int(sys.argv[4]))
    assert jax.device_count() == (4 if mode == "multi" else 1)
    from tiny_step import tiny_problem
    from yolox_jax.train.sharding import jit_train_step, make_mesh, replicated, shard_batch
    from yolox_jax.train.state import create_train_state

    model, batch, tx, step = tiny_problem()
    p, n = jax.process_index(), jax.process_count()
    # Each process holds only its own rows of the global batch.
    local = {k: v[p * 8 // n:(p + 1) * 8 // n] for k, v in batch.items()}
    init = lambda r: model.init(r, jnp.zeros((1, 64, 96, 3)), train=False)
    if mode == "single":
        variables = jax.jit(init)(jax.random.key(0, impl="rbg"))
        np.savez(init_file, *jax.tree_util.tree_leaves(variables))
    else:
        # The single run's initial variables (one compile fewer in each process).
        saved = np.load(init_file)
        treedef = jax.tree_util.tree_structure(jax.eval_shape(init, jax.random.key(0)))
        variables = jax.tree_util.tree_unflatten(
            treedef, [saved[f"arr_{i}"] for i in range(len(saved.files))])

    def leaves(state, metrics):
        tree = (state.params, state.batch_stats, state.ema_params, state.ema_batch_stats)
        return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)], \
            {"metric_" + k: np.asarray(v) for k, v in metrics.items()}

    mesh = make_mesh()
    state = jax.jit(lambda v: create_train_state(v, tx), out_shardings=replicated(mesh))(variables)
    fn = jit_train_step(step, mesh)
    sharded = shard_batch(local, mesh)
    assert len(sharded["images"].sharding.device_set) == mesh.devices.size
    init_params = [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]
    if mode == "multi" and p == 1:
        # Reach the first collective long after process 0 (as a slow host's compile would):
        # gloo alone gives up after 30 s.
        import time
        time.sleep(40)
    losses = []
    for i in (1, 2):
        state, metrics = fn(state, sharded, None, np.bool_(True))
        arrays, named = leaves(state, metrics)
        losses.append(float(metrics["total_loss"]))
        np.savez(out + ("1.npz" if i == 1 else ".npz"), *arrays, **named)
    moved = max(float(np.max(np.abs(np.asarray(a) - b)))
                for a, b in zip(jax.tree_util.tree_leaves(state.params), init_params))
    np.savez(out + "_run.npz", losses=np.array(losses), moved=np.float32(moved))
    print("OK", p, n, losses, flush=True)
""")


CKPT_WORKER = textwrap.dedent(r"""
    # argv: process_id port directory. Both managers of a Checkpointer save the same steps,
    # asynchronously, one right after the other (what the loop does when the AP improves).
    # Process 1 reaches the Checkpointer 40 s after process 0, as a slower host does.
    import os, sys, time
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + (
        " --xla_force_host_platform_device_count=1")
    import jax, jax.numpy as jnp
    from yolox_jax.train.sharding import maybe_initialize_distributed, make_mesh, replicated
    maybe_initialize_distributed("on", f"127.0.0.1:{sys.argv[2]}", 2, int(sys.argv[1]))
    from yolox_jax.train.checkpoint import Checkpointer
    mesh = make_mesh()
    make = jax.jit(lambda v: {"params": {"w": jnp.full((64, 64), v)}, "batch_stats": {},
                              "ema_params": {"w": jnp.full((64, 64), v)}, "ema_batch_stats": {}},
                   out_shardings=replicated(mesh))
    if jax.process_index() == 1:
        time.sleep(40)
    ck = Checkpointer(sys.argv[3], keep=2)
    for step in range(1, 9):
        state = make(jnp.float32(step))
        assert ck.save_best(step, state, {}, {"step": step}, float(step))
        ck.save(step, state, None, {}, {"step": step})
    ck.wait()
    ck.close()
    print("OK", jax.process_index(), flush=True)
""")


def _env():
    return worker_env(PYTHONFAULTHANDLER="1")


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The 1-process, 1-device run: two steps, and the initial variables."""
    out = tmp_path_factory.mktemp("single") / "s"
    single = subprocess.run([sys.executable, "-c", STEP_WORKER, str(out), "single",
                             f"{out}init.npz"], env=_env(), capture_output=True, text=True,
                            timeout=900)
    assert single.returncode == 0, single.stderr[-4000:]
    return out


def _arrays(npz):
    return [k for k in npz.files if not k.startswith("metric_")]


@pytest.mark.slow
def test_two_processes_equal_one_device(tmp_path, single_process):
    """2 processes x 2 devices, each process feeding only its half of the batch, against one
    device with the whole batch, from the same initial variables: after each of two steps the
    losses, params, BN statistics and EMA equal the 1-device run's (global BatchNorm
    statistics, the loss normalised by the global foreground count) and agree bitwise across
    the two processes (the state is replicated)."""
    port = free_port()
    run_pair(lambda pid: [sys.executable, "-c", STEP_WORKER, str(tmp_path / f"m{pid}"),
                           "multi", f"{single_process}init.npz", str(pid), str(port)])
    for suffix, atol in (("1.npz", 1e-6), (".npz", 2e-5)):
        s = np.load(f"{single_process}{suffix}")
        m0, m1 = (np.load(tmp_path / f"m{pid}{suffix}") for pid in (0, 1))
        assert len(_arrays(s)) > 100 and _arrays(s) == _arrays(m0)
        assert float(s["metric_num_fg"]) > 0 and float(s["metric_total_loss"]) > 0
        for k in s.files:
            np.testing.assert_array_equal(m0[k], m1[k], err_msg=k)
            np.testing.assert_allclose(m0[k], s[k], rtol=1e-4, atol=atol, err_msg=(suffix, k))
    s, m0 = np.load(f"{single_process}_run.npz"), np.load(tmp_path / "m0_run.npz")
    np.testing.assert_allclose(m0["losses"], s["losses"], rtol=1e-5)
    # The weights really moved (by far more than the tolerance): the comparison is not between
    # two copies of the init.
    assert float(s["moved"]) > 1e-3 and float(m0["moved"]) > 1e-3


@pytest.mark.slow
def test_two_processes_save_latest_and_best_of_the_same_step(tmp_path):
    """Regression: Orbax names an async save's barriers after the step folder, so `latest/3` and
    `best/3` saved together by two processes shared barrier keys and a save hung; each manager
    now has its own barrier-key prefix. Both processes finish, and both managers keep what
    they should.

    Regression: process 1 reaches the Checkpointer 40 s after process 0. Orbax's first barrier
    is a device collective, and gloo gives up on connecting processes that reach their first
    collective more than 30 s apart; the Checkpointer now waits for every process first."""
    port = free_port()
    run_pair(lambda pid: [sys.executable, "-c", CKPT_WORKER, str(pid), str(port),
                           str(tmp_path / "ck")], timeout=300)
    from yolox_jax.train.checkpoint import Checkpointer

    ck = Checkpointer(tmp_path / "ck", async_save=False)
    try:
        assert ck.latest.all_steps() == [7, 8] and ck.best.all_steps() == [8]
        assert ck.best_ap() == 8.0
    finally:
        ck.close()

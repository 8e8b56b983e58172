"""Data parallelism: one process over 4 simulated CPU devices equals one device, and real
multi-process runs (``jax.distributed`` with two CPU processes on localhost) equal one process.

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
    # argv: out_prefix mode [process_id port]; mode "single" = 1 process x 4 devices (writes
    # <out>1.npz after one step on 1 device, <out>.npz after two steps on all 4, and
    # <out>4_first.npz after the first of them), "multi" = one of 2 processes x 2 devices.
    import os, sys
    out, mode = sys.argv[1], sys.argv[2]
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + (
        "4" if mode == "single" else "2")
    import jax, jax.numpy as jnp, numpy as np
    from yolox_jax.train.sharding import maybe_initialize_distributed
    if mode == "multi":
        maybe_initialize_distributed("on", f"127.0.0.1:{sys.argv[4]}", 2, int(sys.argv[3]))
    assert jax.device_count() == 4 and jax.process_count() == (2 if mode == "multi" else 1)
    from tiny_step import tiny_problem
    from yolox_jax.train.sharding import jit_train_step, make_mesh, replicated, shard_batch
    from yolox_jax.train.state import create_train_state

    model, batch, tx, step = tiny_problem()
    p, n = jax.process_index(), jax.process_count()
    # Each process holds only its own rows of the global batch.
    local = {k: v[p * 8 // n:(p + 1) * 8 // n] for k, v in batch.items()}
    variables = jax.jit(lambda r: model.init(r, jnp.zeros((1, 64, 96, 3)), train=False))(
        jax.random.key(0, impl="rbg"))

    def leaves(state, metrics):
        tree = (state.params, state.batch_stats, state.ema_params, state.ema_batch_stats)
        return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)], \
            {k: np.asarray(v) for k, v in metrics.items()}

    def run(mesh, steps):
        state = jax.jit(lambda v: create_train_state(v, tx), out_shardings=replicated(mesh))(variables)
        fn = jit_train_step(step, mesh)
        sharded = shard_batch(local, mesh)
        assert len(sharded["images"].sharding.device_set) == mesh.devices.size
        init = [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]
        saved = []
        for _ in range(steps):
            state, metrics = fn(state, sharded, None, np.bool_(True))
            saved.append(leaves(state, metrics))
        moved = max(float(np.max(np.abs(np.asarray(a) - b)))
                    for a, b in zip(jax.tree_util.tree_leaves(state.params), init))
        return saved, moved

    if mode == "single":
        (one,), _ = run(make_mesh(jax.devices()[:1]), 1)
        np.savez(out + "1.npz", *one[0], **{"metric_" + k: v for k, v in one[1].items()})
    if mode == "multi" and p == 1:
        # Reach the first collective long after process 0 (as a slow host's compile would):
        # gloo alone gives up after 30 s.
        import time
        time.sleep(40)
    saved, moved = run(make_mesh(), 2)
    if mode == "single":
        np.savez(out + "4_first.npz", *saved[0][0],
                 **{"metric_" + k: v for k, v in saved[0][1].items()})
    losses = np.array([m["total_loss"] for _, m in saved])
    np.savez(out + ".npz", *saved[-1][0], losses=losses, moved=np.float32(moved))
    print("OK", p, n, losses, flush=True)
""")


CKPT_WORKER = textwrap.dedent(r"""
    # argv: process_id port directory. Both managers of a Checkpointer save the same steps,
    # asynchronously, one right after the other (what the loop does when the AP improves).
    # Process 1 reaches the Checkpointer 40 s after process 0, as a slower host does.
    import os, sys, time
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
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
    env = worker_env(PYTHONFAULTHANDLER="1")
    env.pop("XLA_FLAGS", None)
    return env


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The 1-process run: one step on 1 device, two steps on 4 devices (one program each)."""
    out = tmp_path_factory.mktemp("single") / "s"
    single = subprocess.run([sys.executable, "-c", STEP_WORKER, str(out), "single"],
                            env=_env(), capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-4000:]
    return out


def test_one_step_on_four_devices_equals_one_device(single_process):
    """The batch sharded over 4 devices (global BatchNorm statistics, loss normalised by the
    global foreground count) gives the 1-device step's losses, params and BN statistics."""
    one = np.load(f"{single_process}1.npz")
    four = np.load(f"{single_process}4_first.npz")
    metrics = [k for k in one.files if k.startswith("metric_")]
    assert float(one["metric_num_fg"]) > 0 and float(one["metric_total_loss"]) > 0
    for k in metrics:
        np.testing.assert_allclose(one[k], four[k], rtol=1e-4, atol=1e-6, err_msg=k)
    arrays = [k for k in one.files if not k.startswith("metric_")]
    assert len(arrays) > 100
    for k in arrays:
        np.testing.assert_allclose(one[k], four[k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path, single_process):
    """2 processes x 2 devices, each feeding only its half of the batch: the params, BN
    statistics and EMA after two steps equal the 1-process 4-device run and agree bitwise across the
    two processes (the state is replicated)."""
    port = free_port()
    run_pair(lambda pid: [sys.executable, "-c", STEP_WORKER, str(tmp_path / f"m{pid}"),
                           "multi", str(pid), str(port)])
    s = np.load(f"{single_process}.npz")
    m0, m1 = (np.load(tmp_path / f) for f in ("m0.npz", "m1.npz"))
    keys = [k for k in s.files if k not in ("losses", "moved")]
    assert len(keys) > 100
    for k in keys:
        np.testing.assert_array_equal(m0[k], m1[k], err_msg=k)
        np.testing.assert_allclose(m0[k], s[k], rtol=1e-4, atol=2e-5, err_msg=k)
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

"""Data parallelism: one train step on 4 simulated CPU devices equals the 1-device step."""
import subprocess
import sys
import textwrap

from tiny_step import worker_env

WORKER = textwrap.dedent(r"""
    import jax, jax.numpy as jnp, numpy as np
    assert jax.device_count() == 4, jax.devices()
    from tiny_step import tiny_problem
    from yolox_jax.train.sharding import jit_train_step, make_mesh, replicated, shard_batch
    from yolox_jax.train.state import create_train_state

    model, batch, tx, step = tiny_problem()
    variables = jax.device_get(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 96, 3)), train=False))
    out = {}
    for n in (1, 4):
        mesh = make_mesh(jax.devices()[:n])
        state = jax.device_put(create_train_state(variables, tx), replicated(mesh))
        fn = jit_train_step(step, mesh)
        sharded = shard_batch(batch, mesh)
        assert len(sharded["images"].sharding.device_set) == n
        new_state, metrics = fn(state, sharded, None, np.bool_(True))
        out[n] = jax.device_get((new_state.params, new_state.batch_stats, metrics))
    p1, s1, m1 = out[1]
    p4, s4, m4 = out[4]
    print("losses", {k: float(v) for k, v in m1.items()}, {k: float(v) for k, v in m4.items()})
    for k in m1:
        np.testing.assert_allclose(m1[k], m4[k], rtol=2e-5, atol=1e-6, err_msg=k)
    for a, b in zip(jax.tree_util.tree_leaves((p1, s1)), jax.tree_util.tree_leaves((p4, s4))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert m1["num_fg"] > 0 and float(m1["total_loss"]) > 0
    print("OK")
""")


def test_one_step_on_four_devices_equals_one_device():
    env = worker_env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "OK" in proc.stdout

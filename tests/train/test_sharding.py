"""Data parallelism: one train step on 4 simulated CPU devices equals the 1-device step."""
import os
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent(r"""
    import jax, jax.numpy as jnp, numpy as np
    assert jax.device_count() == 4, jax.devices()
    from yolox_jax import build_model
    from yolox_jax.train.schedule import yolox_warm_cos_lr
    from yolox_jax.train.sharding import jit_train_step, make_mesh, replicated, shard_batch
    from yolox_jax.train.state import create_train_state, make_optimizer
    from yolox_jax.train.step import bind_train_step

    model = build_model("yolox-nano", num_classes=3, width=0.125)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(8, 64, 96, 3)).astype(np.uint8)
    labels = np.zeros((8, 6, 5), np.float32)
    mask = np.zeros((8, 6), bool)
    for b in range(8):
        n = 1 + b % 4
        wh = rng.uniform(8, 40, size=(n, 2))
        cxy = rng.uniform(wh / 2, np.array([96, 64]) - wh / 2)
        labels[b, :n] = np.concatenate([rng.integers(0, 3, (n, 1)), cxy, wh], 1)
        mask[b, :n] = True
    batch = {"images": images, "labels": labels, "label_mask": mask}
    lr_fn = yolox_warm_cos_lr(0.01, 10, 10, warmup_epochs=0)
    tx = make_optimizer(lr_fn)
    step = bind_train_step(model=model, tx=tx, lr_fn=lr_fn)
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
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "OK" in proc.stdout

"""The train step: multiscale resize on device, and the multiscale size schedule."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax.config import Config, apply_overrides
from yolox_jax.data import resize_batch
from yolox_jax.train.programs import multiscale_size
from yolox_jax.train.schedule import yolox_warm_cos_lr
from yolox_jax.train.state import create_train_state, make_optimizer
from yolox_jax.train.step import train_step


class PooledDetector(nn.Module):
    """A stand-in detector with YOLOX's output layout ([B, A, 5 + C], levels at strides 8, 16,
    32, row-major): average-pool the image to each level and map the pixels with a 1x1 conv.
    The train step only needs that layout; a small stand-in keeps its compile cheap."""

    num_classes: int = 2

    @nn.compact
    def __call__(self, images, train: bool = False):
        seen = self.variable("batch_stats", "seen", lambda: jnp.zeros((), jnp.float32))
        if train and not self.is_initializing():
            seen.value = seen.value + images.shape[0]
        outs = []
        for i, s in enumerate((8, 16, 32)):
            x = nn.avg_pool(images / 255.0, (s, s), (s, s))
            x = nn.Conv(5 + self.num_classes, (1, 1), name=f"pred_{i}")(x)
            outs.append(x.reshape(x.shape[0], -1, x.shape[-1]))
        return jnp.concatenate(outs, axis=1)


def test_step_with_size_equals_step_on_resized_batch():
    model = PooledDetector()
    rng = np.random.default_rng(0)
    batch = {"images": rng.integers(0, 255, (2, 64, 96, 3)).astype(np.uint8),
             "labels": np.array([[[0, 40, 30, 30, 20], [1, 70, 40, 20, 30]]] * 2, np.float32),
             "label_mask": np.ones((2, 2), bool)}
    lr_fn = yolox_warm_cos_lr(0.01, 10, 10, warmup_epochs=0)
    tx = make_optimizer(lr_fn)
    variables = jax.jit(lambda r: model.init(r, jnp.zeros((1, 64, 96, 3))))(
        jax.random.key(0, impl="rbg"))
    step = jax.jit(lambda s, b, size: train_step(s, b, model=model, tx=tx, lr_fn=lr_fn, size=size),
                   static_argnums=2)
    _, m_resized_in_step = step(create_train_state(variables, tx), batch, (96, 128))
    images, labels = resize_batch(jnp.asarray(batch["images"]), jnp.asarray(batch["labels"]), (96, 128))
    _, m_pre = step(create_train_state(variables, tx),
                    {"images": images, "labels": labels, "label_mask": batch["label_mask"]}, None)
    for k in ("total_loss", "iou_loss", "conf_loss", "cls_loss", "num_fg"):
        np.testing.assert_allclose(m_resized_in_step[k], m_pre[k], rtol=1e-5, err_msg=k)
    assert float(m_pre["num_fg"]) > 0
    # The resize happened: the same batch at its own size gives other losses.
    _, m_native = step(create_train_state(variables, tx), batch, None)
    assert abs(float(m_native["total_loss"]) - float(m_pre["total_loss"])) > 1e-3


def test_multiscale_schedule_is_deterministic_and_official():
    # The official draw: every size from the start (sizes joining one at a time:
    # tests/train/test_programs.py).
    cfg = apply_overrides(Config(), ["data.input_size=(640,640)", "data.multiscale_range=5",
                                     "data.multiscale_admit_steps=0"])
    sizes = [multiscale_size(cfg, t) for t in range(200)]
    assert sizes[:9] == [(640, 640)] * 9  # the first draw happens at step 9 ((t + 1) % 10 == 0)
    assert all(sizes[t] == sizes[t + 1] for t in range(9, 199) if (t + 2) % 10)  # constant per block
    assert {s[0] for s in sizes} <= {32 * k for k in range(15, 26)} and len(set(sizes)) > 3
    assert sizes == [multiscale_size(cfg, t) for t in range(200)]  # a resumed run draws the same
    nano = apply_overrides(Config(), ["data.input_size=(416,416)", "data.random_size=(10,20)",
                                      "data.multiscale_admit_steps=0"])
    assert {multiscale_size(nano, t)[0] for t in range(2000)} == {32 * k for k in range(10, 21)}
    off = apply_overrides(Config(), ["data.multiscale_range=0"])
    assert {multiscale_size(off, t) for t in range(100)} == {(640, 640)}


def test_initial_variables_do_not_depend_on_the_input_size():
    """The trainer initialises every model with one 64x64 probe input (one init program per
    model, whatever the run's input size): the variables equal, bitwise, those of an init at the
    run's own (non-square) input size, with the same seed."""
    from yolox_jax import build_model
    from yolox_jax.config import load_config
    from yolox_jax.train.loop import INIT_PROBE_HW, initial_variables
    from yolox_jax.train.sharding import make_mesh

    cfg = load_config(None)
    apply_overrides(cfg, ["data.input_size=(96,160)", "train.seed=7"])
    assert tuple(cfg.data.input_size) != INIT_PROBE_HW
    model = build_model("yolox-nano", num_classes=3, width=0.125)
    probe = initial_variables(cfg, model, make_mesh(jax.devices()[:1]))
    own = jax.jit(lambda r: model.init(r, jnp.zeros((1, 96, 160, 3)), train=False))(
        jax.random.key(7, impl="rbg"))
    assert jax.tree_util.tree_structure(probe) == jax.tree_util.tree_structure(own)
    leaves = list(zip(jax.tree_util.tree_leaves(probe), jax.tree_util.tree_leaves(own)))
    assert len(leaves) > 100
    for a, b in leaves:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

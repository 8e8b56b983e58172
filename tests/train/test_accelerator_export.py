"""The train step of the default model exports (``jax.export``) from a CPU host for GPU and TPU,
and what it exports is XLA's convolution in every layer: no CPU-only formulation (1x1 dots,
shifted depthwise sums, GEMM gradients) travels into a program meant for an accelerator."""
import jax
import jax.numpy as jnp
import pytest

from yolox_jax import build_model
from yolox_jax.train.schedule import yolox_warm_cos_lr
from yolox_jax.train.state import create_train_state, make_optimizer
from yolox_jax.train.step import bind_train_step

HW = (64, 96)


def _export_train_step(platforms, **build):
    """(exported StableHLO text, number of convolution layers) for a small YOLOX's train step."""
    model = build_model("yolox-tiny", num_classes=3, width=0.125, **build)
    lr_fn = yolox_warm_cos_lr(0.01, 10, 10, warmup_epochs=0)
    tx = make_optimizer(lr_fn)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *HW, 3))))
    state = jax.eval_shape(lambda v: create_train_state(v, tx), variables)
    batch = {"images": jax.ShapeDtypeStruct((4, *HW, 3), jnp.uint8),
             "labels": jax.ShapeDtypeStruct((4, 6, 5), jnp.float32),
             "label_mask": jax.ShapeDtypeStruct((4, 6), jnp.bool_)}
    step = bind_train_step(model=model, tx=tx, lr_fn=lr_fn)
    leaves, treedef = jax.tree.flatten(state)

    def flat_step(leaves, batch):   # arrays in, arrays out: a serializable signature
        new_state, metrics = step(jax.tree.unflatten(treedef, leaves), batch)
        return jax.tree.leaves(new_state), metrics

    exported = jax.export.export(jax.jit(flat_step), platforms=platforms)(leaves, batch)
    layers = sum(1 for leaf in jax.tree.leaves(variables["params"]) if leaf.ndim == 4)
    return exported, layers


@pytest.fixture(scope="module", params=["cuda", "tpu"])
def accelerator_export(request):
    return _export_train_step((request.param,))


def test_default_train_step_exports_for_cuda_and_tpu_in_one_artifact():
    exported, _ = _export_train_step(("cuda", "tpu"))
    assert tuple(exported.platforms) == ("cuda", "tpu")
    restored = jax.export.deserialize(exported.serialize())
    assert restored.platforms == exported.platforms
    assert restored.in_avals == exported.in_avals


def test_exported_step_convolves_every_layer_with_xla(accelerator_export):
    """Each layer is one convolution forward and one for its kernel gradient, and every layer
    but the first (whose input is the image) one more for its input gradient: 3L - 1
    convolutions, none replaced by a dot or a sum of shifts."""
    exported, layers = accelerator_export
    convs = exported.mlir_module().count("stablehlo.convolution")
    assert convs == 3 * layers - 1, (convs, layers)


def test_cpu_forms_would_show_in_the_export():
    """The check above can fail: the CPU forms leave far fewer convolutions in the program."""
    exported, layers = _export_train_step(("cpu",), conv="cpu")
    assert exported.mlir_module().count("stablehlo.convolution") < 2 * layers

"""Fine-tuning: every leaf whose path and shape match is loaded; the rest is reported."""
import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax import build_model
from yolox_jax.convert import from_torch_state_dict
from yolox_jax.train.state import load_matching


def test_other_class_count_loads_all_but_class_predictions(tiny_ref):
    sd = {k[len("state_dict/"):]: v for k, v in tiny_ref.items() if k.startswith("state_dict/")}
    source = from_torch_state_dict(sd, "yolox-tiny", num_classes=3)
    target = jax.eval_shape(lambda: build_model("yolox-tiny", num_classes=7).init(
        jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    target = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), target)
    params, skipped = load_matching(target["params"], source["params"])
    assert sorted(skipped) == sorted(
        f"head/cls_preds_{i}/{leaf}: checkpoint shape {shape} != model {new}"
        for i in range(3) for leaf, shape, new in (("kernel", (1, 1, 96, 3), (1, 1, 96, 7)),
                                                   ("bias", (3,), (7,))))
    np.testing.assert_array_equal(params["head"]["reg_preds_0"]["kernel"],
                                  source["params"]["head"]["reg_preds_0"]["kernel"])
    assert not np.any(np.asarray(params["head"]["cls_preds_0"]["kernel"]))  # kept at init
    stats, skipped_stats = load_matching(target["batch_stats"], source["batch_stats"])
    assert skipped_stats == []

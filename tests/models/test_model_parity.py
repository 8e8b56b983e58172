"""Numerical parity with the official PyTorch YOLOX (tests/data/*_ref.npz, see REFERENCE_README.md).

Official weights are converted with yolox_jax.convert and run on the RGB version of the official
BGR input. A correct float32 port lands near 1e-6 relative L2 error on the raw outputs; both the
official float32 output and ours are ~4e-6 from a float64 evaluation of the same network.
The decoded error is larger (~4e-5) only because exp(tw)*s turns raw noise into box widths of
up to ~1e4 pixels for these random weights. Both convolution choices (``conv="xla"``, the
default, and ``conv="cpu"``) are held to the same bound.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolox_jax import convert, decode
from yolox_jax.models.yolox import build_model

TOL = 1e-4


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run_reference(ref, name, num_classes, conv="xla"):
    sd = {k[len("state_dict/"):]: v for k, v in ref.items() if k.startswith("state_dict/")}
    variables = convert.from_torch_state_dict(sd, name, num_classes)
    images = jnp.asarray(ref["input_bgr_nchw"].transpose(0, 2, 3, 1)[..., ::-1])  # NHWC RGB
    model = build_model(name, num_classes, conv=conv)
    # "highest" keeps GPU/TPU runs from using TF32/bf16 passes; it is a no-op on CPU.
    with jax.default_matmul_precision("highest"):
        raw = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    # Official per-level [B, 5+C, H, W] -> our [B, A, 5+C], levels concatenated, row-major.
    b = images.shape[0]
    want = np.concatenate([ref[f"raw/{i}"].reshape(b, 5 + num_classes, -1).transpose(0, 2, 1)
                           for i in range(3)], axis=1)
    return raw, want, images.shape[1:3]


@pytest.mark.parametrize("conv", ["xla", "cpu"])
@pytest.mark.parametrize("name,fixture,num_classes", [("yolox-nano", "nano_ref", 80),
                                                      ("yolox-tiny", "tiny_ref", 3)])
def test_eval_outputs_match_official(request, name, fixture, num_classes, conv):
    ref = request.getfixturevalue(fixture)
    raw, want, hw = run_reference(ref, name, num_classes, conv)
    assert raw.shape == want.shape == (2, 1680, 5 + num_classes)
    err_raw = rel_l2(raw, want)
    err_dec = rel_l2(decode(raw, hw), ref["decoded"])
    print(f"{name} conv={conv}: rel L2 raw {err_raw:.2e}, decoded {err_dec:.2e}")
    assert err_raw <= TOL, err_raw
    assert err_dec <= TOL, err_dec

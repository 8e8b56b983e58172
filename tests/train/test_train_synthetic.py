"""End to end on the built-in synthetic dataset, through ``yolox-jax train`` as users run it:
the loss falls and COCO AP50 rises well above chance within the CI budget (the quick start's
real bar is in README/docs)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
def test_small_model_learns_synthetic_shapes(tmp_path):
    # XLA's optimisation level 1: the suite's level 0 (conftest.py) compiles faster but runs
    # this many steps about 2x slower; level 1 runs them as fast as the default level (3) and
    # compiles in a fifth less time. Results differ from the default level's in the last bits.
    # XLA:CPU's default fusion emitters too: the suite's loop emitters compile small programs
    # faster, but run this run's steps about 15 % slower.
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith(("--xla_backend_optimization_level=",
                                  "--xla_cpu_use_fusion_emitters="))]
    env = dict(os.environ, XLA_FLAGS=" ".join([*flags, "--xla_backend_optimization_level=1"]))
    proc = subprocess.run([
        sys.executable, "-m", "yolox_jax.cli", "train",
        f"run.output_dir={tmp_path}", "run.experiment=e2e", "run.tensorboard=false",
        "data.synthetic_train_images=512", "data.synthetic_val_images=64",
        "data.synthetic_image_size=(128,128)", "data.input_size=(128,128)", "data.test_size=(128,128)",
        "train.max_epoch=8", "train.print_interval=8", "eval.interval=100",
        # Twice the quick start's per-image lr: at its lr, float rounding (the convolution
        # kernels of one CPU or another, conv="xla" or "cpu") decides whether 256 steps leave
        # the early plateau (AP50 0.03-0.82 across such runs at 160 x 160); at twice it, AP50
        # 0.30-0.83 and last / first loss 0.37-0.64 over four kernel choices on one machine at
        # 160 x 160, and at 128 x 128 (level 1), AP50 0.31-0.60 and last / first loss
        # 0.55-0.64 over seeds 0-2.
        "train.basic_lr_per_img=0.00125",
    ], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = tmp_path / "e2e"
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/total_loss"] for r in rows if "train/total_loss" in r]
    assert len(losses) >= 4
    first, last = np.mean(losses[:2]), np.mean(losses[-2:])
    assert last < 0.75 * first, losses
    # The last evaluation is the final model's (the no-aug epochs evaluate after each epoch).
    evals = [(r["step"], r["val/COCOAP50"]) for r in rows if "val/COCOAP50" in r]
    assert evals and evals[-1][0] == 256, evals
    # An untrained detector scores ~0 here; chance level for boxes is essentially zero.
    assert evals[-1][1] > 0.15, evals
    assert (run_dir / "checkpoints" / "best").is_dir()

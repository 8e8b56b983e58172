"""The small problem the data-parallel tests' subprocess workers train on (imported by them),
and the helpers that start those workers."""
import numpy as np

from yolox_jax import build_model
from yolox_jax.train.schedule import yolox_warm_cos_lr
from yolox_jax.train.state import make_optimizer
from yolox_jax.train.step import bind_train_step


def tiny_problem():
    """(model, batch, tx, step_fn): a 3-class yolox-nano at width 0.125, a fixed batch of 8
    images 64x96 with 1-4 boxes each (labels padded to 6), SGD on the official schedule."""
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
    return model, batch, tx, bind_train_step(model=model, tx=tx, lr_fn=lr_fn)


def worker_env(**extra):
    """Environment for a worker subprocess: CPU only, this folder importable."""
    import os

    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.abspath(__file__)),
                                                      env.get("PYTHONPATH")]))
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_pair(args_of, timeout=900):
    """Start processes 0 and 1 of a two-process run (``args_of(pid)`` -> argv), wait for both,
    return their ``(returncode, stdout, stderr)``; both must succeed. Python stacks of every
    thread go to stderr if a worker is aborted (e.g. on a barrier timeout), so that a hang shows
    where each process was."""
    import subprocess

    env = worker_env(PYTHONFAULTHANDLER="1")
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen(args_of(pid), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rc, out, err in results:
        assert rc == 0, out[-2000:] + err[-4000:]
    return results

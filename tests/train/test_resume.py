"""Exact resume: a run killed (-9) at the phase switch and again inside the no-aug phase, before
the last steps, resumed each time, ends bitwise equal to the uninterrupted run, on the same
batches."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from yolox_jax.train.checkpoint import read_state

SMALL = ["model.name=yolox-tiny", "model.width=0.125", "data.synthetic_train_images=48",
         "data.synthetic_val_images=0", "data.synthetic_image_size=(96,128)",
         "data.input_size=(96,128)", "data.test_size=(96,128)", "data.batch_size=4",
         "data.max_labels=16", "train.max_epoch=5", "train.warmup_epochs=1", "train.no_aug_epochs=2",
         "train.steps_per_epoch=3", "run.tensorboard=false", "run.log_batch_digests=true",
         "train.print_interval=1"]


def _cmd(out, name, *extra):
    return [sys.executable, "-m", "yolox_jax.cli", "train", *SMALL, f"run.output_dir={out}",
            f"run.experiment={name}", *extra]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu")   # and the session's compilation cache


def _state(run_dir):
    step, state, _ = read_state(Path(run_dir) / "checkpoints" / "latest")
    return step, state


def _digests(run_dir):
    rows = [json.loads(l) for l in (Path(run_dir) / "batches.jsonl").read_text().splitlines()]
    return {r["step"]: r["crc"] for r in rows}  # a resumed step overwrites its first attempt


@pytest.mark.slow
def test_kill_and_resume_equals_straight_run(tmp_path):
    straight = subprocess.run(_cmd(tmp_path, "straight"), env=_env(), capture_output=True,
                              text=True, timeout=1500)
    assert straight.returncode == 0, straight.stderr[-4000:]

    # Second run, killed (-9) twice, each time as soon as a checkpoint is committed, and
    # resumed: at step 6, the phase switch (the no-aug phase, epochs 2-4, starts with the next
    # step: the official trainer starts it one epoch early), and at step 12, inside the no-aug
    # phase (whose iterator started at step 6 in the resumed process) before the last steps.
    for n in (6, 12):
        log = open(tmp_path / f"killed_at_{n}.log", "w+")   # a file: a pipe could fill up
        proc = subprocess.Popen(_cmd(tmp_path, "killed", *(["--resume"] if n > 6 else [])),
                                env=_env(), stdout=subprocess.DEVNULL, stderr=log)
        ckpt = tmp_path / "killed" / "checkpoints" / "latest" / str(n)
        deadline = time.time() + 1500
        while time.time() < deadline and proc.poll() is None:
            if (ckpt / "commit_success.txt").exists() or (ckpt / "_CHECKPOINT_METADATA").exists():
                break
            time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.seek(0)
        err = log.read()
        log.close()
        assert proc.returncode in (0, -signal.SIGKILL), err[-4000:]
        step_at_kill, _ = _state(tmp_path / "killed")
        assert step_at_kill is not None and n <= step_at_kill <= 15, (n, step_at_kill)

    resumed = subprocess.run(_cmd(tmp_path, "killed", "--resume"), env=_env(),
                             capture_output=True, text=True, timeout=1500)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resumed from step {step_at_kill}" in resumed.stderr or step_at_kill == 15

    step_a, state_a = _state(tmp_path / "straight")
    step_b, state_b = _state(tmp_path / "killed")
    assert step_a == step_b == 15
    for name in ("params", "batch_stats", "ema_params", "ema_batch_stats", "opt_state"):
        for x, y in zip(jax.tree_util.tree_leaves(state_a[name]), jax.tree_util.tree_leaves(state_b[name])):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7, err_msg=name)
    # The same batches, in the same order, were seen.
    assert _digests(tmp_path / "straight") == _digests(tmp_path / "killed")
    assert sorted(_digests(tmp_path / "straight")) == list(range(1, 16))
    # metrics.jsonl keeps one record: each step once, in order, as in the straight run (lines
    # the killed run wrote after its checkpoint are replaced by the resumed run's).
    def logged_steps(run_dir):
        rows = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        return [r["step"] for r in rows if "train/total_loss" in r]

    assert logged_steps(tmp_path / "killed") == logged_steps(tmp_path / "straight") == list(range(1, 16))


@pytest.mark.slow
def test_a_failed_save_stops_the_run_at_that_save(tmp_path):
    """A checkpoint write that fails (a real write error: from the first committed checkpoint
    on, no file of the process may grow past 64 KiB, as a full disk refuses more bytes) stops
    the run at that save with one line naming the step and the last complete checkpoint, and
    none of Orbax's error reports."""
    import resource

    # The child inherits an ignored SIGXFSZ (restore_signals=False keeps it ignored), so a write
    # past the limit fails with EFBIG instead of killing the process.
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        proc = subprocess.Popen(_cmd(tmp_path, "disk"), env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, restore_signals=False)
    finally:
        signal.signal(signal.SIGXFSZ, previous)
    first = tmp_path / "disk" / "checkpoints" / "latest" / "3"
    deadline = time.time() + 1500
    while time.time() < deadline and proc.poll() is None and not (
            (first / "commit_success.txt").exists() or (first / "_CHECKPOINT_METADATA").exists()):
        time.sleep(0.05)
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))
    out, err = proc.communicate(timeout=1500)
    assert proc.returncode == 2, err[-4000:]
    lines = [line for line in err.splitlines() if line.startswith("yolox-jax:")]
    assert len(lines) == 1, err[-4000:]
    # Orbax's own error reports (a traceback from every thread the failure passes through) are
    # not shown. (Under load, the storage library's callbacks can still print "Event loop is
    # closed" when Orbax shuts down the failed save's event loop; that is outside our logging.)
    assert "absl ERROR" not in err and "orbax" not in err.replace(lines[0], ""), err[-3000:]
    failed = int(lines[0].split("checkpoint step ")[1].split()[0])
    assert failed in (6, 9, 12, 15) and "could not be written" in lines[0]
    last, _ = _state(tmp_path / "disk")
    assert last == failed - 3
    assert f"the last complete checkpoint is {tmp_path / 'disk' / 'checkpoints' / 'latest' / str(last)}" in lines[0]
    # The run stopped once the failed write returned: at the latest when the next save waits
    # for it (here 3 steps, about a second, later; in a real run the failure returns long
    # before an epoch ends), never after another save.
    steps = sorted(_digests(tmp_path / "disk"))
    assert steps[-1] <= failed + 3, (steps, failed)

"""The small problem the data-parallel tests' subprocess workers train on (imported by them),
and the helpers that start those workers."""
import contextlib

import numpy as np

from yolox_jax import build_model
from yolox_jax.train.schedule import yolox_warm_cos_lr
from yolox_jax.train.state import make_optimizer
from yolox_jax.train.step import bind_train_step


def tiny_problem():
    """(model, batch, tx, step_fn): a 3-class yolox-tiny at width 0.125, a fixed batch of 8
    images 64x96 with 1-4 boxes each (labels padded to 6), SGD on the official schedule."""
    model = build_model("yolox-tiny", num_classes=3, width=0.125)
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
    """Environment for a worker subprocess: CPU only, this folder importable, and of the
    suite's ``XLA_FLAGS`` only its compiler settings (a worker sets its own device
    count)."""
    import os

    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    kept = [f for f in env.get("XLA_FLAGS", "").split()
            if f.startswith(("--xla_backend_optimization_level=", "--xla_cpu_use_fusion_emitters=",
                             "--xla_cpu_parallel_codegen_split_count="))]
    if kept:
        env["XLA_FLAGS"] = " ".join(kept)
    else:
        env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.abspath(__file__)),
                                                      env.get("PYTHONPATH")]))
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_errors(outputs: dict) -> str:
    """The first lines that say what went wrong in each process's output (``{pid: text}``): the
    end of every Python traceback (its exception line) and the first error and fatal lines of
    XLA's log, each with a line of context. A failure report leads with these: the full outputs
    that follow are long, and the process that failed first is usually not the one whose error
    ends the report (the other one times out waiting for it)."""
    import re

    lines = ["--- first errors of each process"]
    for pid, text in outputs.items():
        found = []
        rows = text.splitlines()
        for i, row in enumerate(rows):
            if row.startswith("Traceback (most recent call last)"):
                end = next((j for j in range(i + 1, len(rows)) if rows[j] and rows[j][0] != " "),
                           len(rows) - 1)
                found += [rows[j] for j in range(max(i + 1, end - 2), end + 1)]
            elif re.match(r"[EF]\d{4} ", row) or "Fatal Python error" in row:
                found.append(row)
        lines.append(f"process {pid}:" if found else f"process {pid}: (no error line)")
        lines += [f"  {row[:300]}" for row in found[:12]]
    return "\n".join(lines)


@contextlib.contextmanager
def one_run_at_a_time():
    """A lock (held while the ``with`` block runs) that the tests starting a multi-process run
    take, so that the test workers of a parallel suite run one such run at a time: each run's
    processes step together, and one whose partner is starved of CPU by another run's compiles
    waits at every barrier for it."""
    import fcntl
    import os
    import tempfile

    path = os.path.join(tempfile.gettempdir(), "yolox_jax_test_multiprocess.lock")
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_pair(args_of, timeout=900):
    """Start processes 0 and 1 of a two-process run (``args_of(pid)`` -> argv), wait for both,
    return their ``(returncode, stdout, stderr)``; both must succeed.

    A failure shows the output of both processes, not only of the first that failed: in a
    two-process run the one that reports the error (a barrier timeout, say) is usually not the
    one that caused it. A process still running at ``timeout`` gets SIGABRT, on which Python
    writes the stack of every thread to stderr, so a hang shows where each process was."""
    import signal
    import subprocess
    import time

    env = worker_env(PYTHONFAULTHANDLER="1", PYTHONUNBUFFERED="1")
    with one_run_at_a_time():
        procs = [subprocess.Popen(args_of(pid), env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
        deadline = time.monotonic() + timeout
        results = []
        try:
            for proc in procs:
                try:
                    out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    for other in procs:
                        if other.poll() is None:
                            other.send_signal(signal.SIGABRT)
                    out, err = proc.communicate(timeout=60)
                results.append((proc.returncode, out, err))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
    if any(rc != 0 for rc, _, _ in results):
        report = [first_errors({pid: out + err for pid, (_, out, err) in enumerate(results)})]
        report += [f"--- process {pid}: exit code {rc}\n{out[-2000:]}\n{err[-6000:]}"
                   for pid, (rc, out, err) in enumerate(results)]
        raise AssertionError("\n".join(report))
    return results


def run_launcher(argv, log_dir, log_name, timeout=900):
    """Run a launch script in its local mode (``argv``), which starts processes 0 and 1 of a run
    and writes their output to ``log_dir / log_name.format(pid)``; return ``(stdout, stderr,
    [log of process 0, log of process 1])``. The launcher must succeed.

    As with ``run_pair``, a failure shows the launcher's output and both processes' logs. The
    launcher runs in a process group of its own: at ``timeout`` every process of the run gets
    SIGABRT (Python writes each thread's stack to its log), and whatever is left of the group is
    killed when the launcher ends."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    env = worker_env(PYTHONFAULTHANDLER="1", YOLOX_JAX_PYTHON=sys.executable)
    with one_run_at_a_time():
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGABRT)
                out, err = proc.communicate(timeout=60)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    paths = [Path(log_dir) / log_name.format(pid) for pid in (0, 1)]
    logs = [p.read_text() if p.exists() else f"({p} was not written)" for p in paths]
    if proc.returncode != 0:
        report = [first_errors(dict(enumerate(logs))),
                  f"--- launcher: exit code {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"]
        report += [f"--- process {pid}: {paths[pid]}\n{logs[pid][-6000:]}" for pid in (0, 1)]
        raise AssertionError("\n".join(report))
    return out, err, logs

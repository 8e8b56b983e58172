"""Shared helpers for the benchmark scripts: machine description and timing."""
from __future__ import annotations

import datetime
import os
import platform
import time


def machine() -> str:
    import jax

    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from yolox_jax.cpu import tuned

    state = tuned()
    malloc = "glibc malloc tuned for XLA" if state["malloc"] else "default malloc"
    if state["xla_flags"]:
        malloc += ", Eigen convolutions"
    return (f"{dev.platform}:{getattr(dev, 'device_kind', '')} | {cpu} x{os.cpu_count()} | "
            f"jax {jax.__version__} | {malloc} | {datetime.date.today().isoformat()}")


def time_fn(fn, *, warmup: int = 1, repeat: int = 5):
    """Median wall seconds of ``fn()`` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]

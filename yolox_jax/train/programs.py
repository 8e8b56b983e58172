"""The run's XLA programs, compiled ahead of need, and the input-size schedule that lets training
start after one compile.

**The size schedule.** Multiscale training redraws the input size every
``data.multiscale_interval`` steps. A run would otherwise have to compile every size before its
first step, or stall the first time each size comes up. Instead, sizes *join* the draw one at a
time: the base size (``data.input_size``) first, then the other sizes nearest to it first, one
more every ``data.multiscale_admit_steps`` steps (0: all sizes from the start, the official
draw). The size of a step depends on the config and the step only, never on how long anything
took to compile, so a run is reproducible and a resumed run sees the same sizes.

**Compiling ahead.** :class:`BackgroundCompiler` compiles the run's programs in one thread, in
the order the run needs them (each size at its first step, the evaluation program before the
first evaluation). The loop waits for a program only if it is needed before it is ready; that
wait is the *stall* a run reports. Set ``multiscale_admit_steps`` to about a compile's seconds
divided by a step's seconds and there is none.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

import numpy as np

from yolox_jax.train import inputs

log = logging.getLogger("yolox_jax.train")


def size_order(d) -> list[tuple[int, int]]:
    """The order in which sizes join the draw: ``d.input_size`` first, then the multiscale
    choices by distance of their area from the base size's (ties: the smaller first)."""
    base = tuple(int(v) for v in d.input_size)
    area = base[0] * base[1]
    rest = sorted((s for s in inputs.multiscale_choices(d) if tuple(s) != base),
                  key=lambda s: (abs(s[0] * s[1] - area), s[0] * s[1]))
    return [base] + [tuple(s) for s in rest]


def multiscale_size(cfg, step: int) -> tuple[int, int]:
    """Input size of 0-based ``step``: block ``b = (step + 1) // interval`` (block 0 is the base
    size) draws uniformly from the sizes admitted by its first step, with a generator keyed by
    (seed, b)."""
    d = cfg.data
    base = tuple(d.input_size)
    sizes = [tuple(s) for s in inputs.multiscale_choices(d)]
    if not sizes or d.multiscale_interval <= 0:
        return base
    block = (step + 1) // d.multiscale_interval
    if block == 0:
        return base
    admit = int(d.multiscale_admit_steps)
    if admit > 0:
        order = size_order(d)
        joined = set(order[:1 + block * d.multiscale_interval // admit])
        sizes = [s for s in sizes if s in joined] or [base]
    rng = np.random.default_rng([cfg.train.seed, 7919, block])
    return sizes[int(rng.integers(len(sizes)))]


def first_uses(cfg, steps: range, eval_steps=()) -> list[tuple[int, str]]:
    """``(step, key)`` of each program the 0-based ``steps`` use, by the step that first needs
    it: ``"train:HxW"`` per input size, ``"eval"`` at the first of ``eval_steps``."""
    d = cfg.data
    n_sizes = len({tuple(s) for s in inputs.multiscale_choices(d)} | {tuple(d.input_size)})
    interval = max(int(d.multiscale_interval), 1)
    # The size changes only where a block starts: the first step and every (k * interval - 1).
    starts = [steps.start] * bool(len(steps)) + list(
        range(steps.start + (-(steps.start + 1)) % interval, steps.stop, interval))
    seen, out = set(), []
    for step in starts:
        key = train_key(multiscale_size(cfg, step))
        if key not in seen:
            seen.add(key)
            out.append((step, key))
            if len(seen) == n_sizes:
                break
    if eval_steps:
        out.append((min(eval_steps), "eval"))
    return sorted(out, key=lambda t: t[0])


def train_key(size) -> str:
    return f"train:{int(size[0])}x{int(size[1])}"


class BackgroundCompiler:
    """Compiles programs one after another in a daemon thread, in the order submitted.

    ``submit(key, fn)`` queues ``fn()`` (for example ``jitted.lower(...).compile()``, which
    leaves the executable where the jitted function finds it); ``wait(key)`` blocks until it is
    done and returns the seconds waited, which are added to ``stall_s`` (``count=False``: not a
    stall, e.g. the first program). An error in ``fn`` is logged and dropped: the program then
    compiles when first called, as without this class.

    ``release`` (optional): called every ``release_every_s`` seconds (or less often, so that it
    takes at most a tenth of the time) while a job runs, from a thread of its own, and once after
    each job. The training loop passes
    :func:`yolox_jax.cpu.process.release_free_memory` in a tuned CPU process: a job's
    allocations, made while steps run, can pin a step's freed temporaries in the middle of the
    heap, which would otherwise stay resident beside the next step's."""

    def __init__(self, name: str = "yolox_jax-compile", release=None,
                 release_every_s: float = 0.2):
        self._jobs: queue.Queue = queue.Queue()
        self._done: dict[str, threading.Event] = {}
        self.stall_s, self.stalls, self.compile_s = 0.0, [], {}
        self._busy, self._closed = threading.Event(), False
        self._release = release
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        if release is not None:
            threading.Thread(target=self._release_while_busy, args=(release_every_s,),
                             name=f"{name}-release", daemon=True).start()

    def submit(self, key: str, fn) -> None:
        if key in self._done:
            return
        self._done[key] = threading.Event()
        self._jobs.put((key, fn))

    def submitted(self, key: str) -> bool:
        return key in self._done

    def ready(self, key: str) -> bool:
        return key in self._done and self._done[key].is_set()

    def wait(self, key: str, count: bool = True) -> float:
        event = self._done.get(key)
        if event is None or event.is_set():
            return 0.0
        t0 = time.perf_counter()
        event.wait()
        waited = time.perf_counter() - t0
        if count:
            self.stall_s += waited
            self.stalls.append((key, waited))
        return waited

    def close(self) -> None:
        """Stop after the program being compiled now (the rest are dropped)."""
        while True:
            try:
                key, _ = self._jobs.get_nowait()
            except queue.Empty:
                break
            self._done[key].set()
        self._jobs.put(None)
        self._closed = True
        self._busy.set()  # lets the release thread see that it is closed

    def _release_while_busy(self, every_s: float) -> None:
        while True:
            self._busy.wait()
            if self._closed:
                return
            t0 = time.perf_counter()
            self._release()
            # At most a tenth of this thread's time, however slow a release is.
            time.sleep(max(every_s, 9 * (time.perf_counter() - t0)))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            key, fn = job
            t0 = time.perf_counter()
            self._busy.set()
            try:
                fn()
            except Exception as err:  # noqa: BLE001 - the call at first use reports it
                log.debug("compiling %s ahead failed (it compiles when first used): %s", key, err)
            finally:
                if not self._closed:
                    self._busy.clear()
                if self._release is not None:
                    self._release()
                self.compile_s[key] = time.perf_counter() - t0
                self._done[key].set()

"""Training starts after one compile: the input-size schedule (sizes join the draw one at a
time, never depending on compile timing), and the programs compiled ahead in the background."""
import json
import logging
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from yolox_jax.config import apply_overrides, load_config
from yolox_jax.train import programs
from yolox_jax.train.programs import BackgroundCompiler, multiscale_size, size_order


def _cfg(*overrides):
    cfg = load_config(None)
    apply_overrides(cfg, ["data.input_size=(416,416)", "data.random_size=(10,20)",
                          "data.multiscale_interval=10", *overrides])
    return cfg


def test_sizes_join_nearest_first():
    order = size_order(_cfg().data)
    assert order[0] == (416, 416)
    assert sorted(order) == [(32 * s, 32 * s) for s in range(10, 21)]
    areas = [abs(h * w - 416 * 416) for h, w in order]
    assert areas == sorted(areas)
    assert order[1:3] == [(384, 384), (448, 448)]


def test_admitted_draw_against_a_plain_loop():
    """Each block draws uniformly (generator keyed by seed and block) from the sizes that joined
    by its first step; one size joins every ``multiscale_admit_steps`` steps."""
    cfg = _cfg("data.multiscale_admit_steps=50", "train.seed=3")
    order = size_order(cfg.data)
    choices = [(32 * s, 32 * s) for s in range(10, 21)]
    seen = set()
    for step in range(2000):
        block = (step + 1) // 10
        if block == 0:
            want = (416, 416)
        else:
            joined = order[:1 + block * 10 // 50]
            pool = [s for s in choices if s in joined]
            want = pool[np.random.default_rng([3, 7919, block]).integers(len(pool))]
        got = multiscale_size(cfg, step)
        assert got == want, step
        seen.add(got)
        assert got in order[:1 + (step + 1) // 50]  # never a size that has not joined yet
    assert seen == set(choices)


def test_admit_zero_is_the_uniform_draw_from_the_start():
    cfg = _cfg("data.multiscale_admit_steps=0", "train.seed=5")
    choices = [(32 * s, 32 * s) for s in range(10, 21)]
    for step in range(9, 400, 10):
        block = (step + 1) // 10
        assert multiscale_size(cfg, step) == choices[
            np.random.default_rng([5, 7919, block]).integers(11)]
    single = _cfg("data.random_size=()", "data.multiscale_range=0")
    assert {multiscale_size(single, s) for s in range(100)} == {(416, 416)}


def test_programs_in_the_order_first_needed_against_a_plain_scan():
    cfg = _cfg("data.multiscale_admit_steps=100", "train.seed=1")
    for start in (0, 5, 9, 10, 37, 189):
        want = []
        for step in range(start, 2500):
            key = programs.train_key(multiscale_size(cfg, step))
            if key not in [k for _, k in want]:
                want.append((step, key))
        assert programs.first_uses(cfg, range(start, 2500)) == want, start
    got = programs.first_uses(cfg, range(0, 10**6), eval_steps=[250])
    assert len(got) == 12 and got[0] == (0, "train:416x416")
    assert got.index((250, "eval")) == [s for s, _ in got].index(250)
    assert [s for s, _ in got] == sorted(s for s, _ in got)


def test_background_compiler_waits_counts_and_survives_errors():
    compiler = BackgroundCompiler()
    order = []
    compiler.submit("a", lambda: (time.sleep(0.3), order.append("a")))
    compiler.submit("b", lambda: 1 / 0)  # compiled at first use instead: not raised here
    compiler.submit("c", lambda: order.append("c"))
    assert compiler.wait("a", count=False) > 0.1
    assert compiler.stall_s == 0
    compiler.wait("c")
    assert compiler.ready("b") and order == ["a", "c"]
    assert compiler.wait("never-submitted") == 0.0
    compiler.close()


def test_background_compiler_releases_while_a_job_runs_only():
    calls, go = [], threading.Event()
    compiler = BackgroundCompiler(release=lambda: calls.append(time.perf_counter()),
                                  release_every_s=0.02)
    time.sleep(0.2)
    assert calls == []  # idle: nothing to release
    compiler.submit("a", lambda: go.wait(10))
    deadline = time.perf_counter() + 10
    while len(calls) < 3 and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 3  # released again and again while "a" runs
    go.set()
    compiler.wait("a")
    time.sleep(0.2)  # an iteration under way when "a" ended may still call once
    settled = len(calls)
    time.sleep(0.3)
    assert len(calls) == settled  # idle again
    compiler.close()


def _rows(run_dir):
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: (r["train/input_height"], r["train/input_width"]) for r in rows
            if "train/input_height" in r}


SMALL = ["model.name=yolox-tiny", "model.width=0.125", "data.synthetic_train_images=24",
         "data.synthetic_val_images=4", "data.synthetic_image_size=(64,64)",
         "data.input_size=(64,64)", "data.test_size=(64,64)", "data.random_size=(1,2)",
         "data.multiscale_interval=2", "data.multiscale_admit_steps=4", "data.batch_size=4",
         "data.max_labels=8", "data.mosaic_prob=0.0", "train.max_epoch=4", "train.warmup_epochs=1",
         # No no-aug phase: its L1 term would double the train-step programs to compile.
         "train.no_aug_epochs=0", "train.steps_per_epoch=3", "train.print_interval=1",
         "eval.interval=2", "eval.batch_size=4", "run.tensorboard=false",
         "run.checkpoint_every_epochs=1"]


@pytest.mark.slow
def test_first_step_after_one_compile_and_sizes_independent_of_compile_time(tmp_path,
                                                                             monkeypatch):
    """A 12-step multiscale run: every train-step and evaluation program is compiled by the
    background thread (the loop compiles none itself), in the order the run needs them, and
    the state is initialised in a thread of its own while the first program compiles; with
    every background compile slowed down, the sizes of every step are the same (the loop
    waits, and reports the wait as a stall); a run resumed half-way sees the same sizes (and
    makes no initial state)."""
    from yolox_jax.train.loop import train

    compiles = []

    def listen(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append((kw.get("fun_name", ""), threading.current_thread().name))

    jax.monitoring.register_event_duration_secs_listener(listen)

    def run(name, *extra):
        cfg = load_config(None)
        apply_overrides(cfg, [*SMALL, f"run.output_dir={tmp_path}", f"run.experiment={name}",
                              *extra])
        return train(cfg)

    from yolox_jax.train import loop

    released = []
    release = loop.release_between_programs
    monkeypatch.setattr(loop, "release_between_programs",
                        lambda outputs: (released.append(1), release(outputs)))
    # The initialiser waits until the first program has started compiling: a loop that
    # initialised before submitting it would wait here in vain.
    compiling = threading.Event()
    submit0, initial_state = BackgroundCompiler.submit, loop.initial_state
    monkeypatch.setattr(BackgroundCompiler, "submit", lambda self, key, fn: submit0(
        self, key, lambda: (compiling.set(), fn())))
    init_seen, init_calls = {}, []

    def initial_state_once_compiling(*args, **kwargs):
        init_calls.append(1)
        if not init_seen:
            init_seen.update(overlap=compiling.wait(120),
                             thread=threading.current_thread().name)
        return initial_state(*args, **kwargs)

    monkeypatch.setattr(loop, "initial_state", initial_state_once_compiling)
    try:
        fast = run("fast")
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    ours = [(f, t) for f, t in compiles if f in ("jit(step)", "jit(predict_batch)")]
    assert {f for f, _ in ours} == {"jit(step)", "jit(predict_batch)"}, compiles
    assert {t for _, t in ours} == {"yolox_jax-compile"}, ours
    sizes = _rows(fast["run_dir"])
    cfg = load_config(None)
    apply_overrides(cfg, SMALL)
    assert sizes == {s + 1: multiscale_size(cfg, s) for s in range(12)}
    assert len(set(sizes.values())) >= 2
    # The free heap is handed back before each change of program: every size switch and
    # every evaluation (and the step after it).
    switches = sum(sizes[s] != sizes[s - 1] for s in range(2, 13))
    assert len(released) >= switches + 2, (released, sizes)
    assert fast["time_to_first_step_s"] > 0
    assert init_seen["overlap"] and init_seen["thread"].startswith("yolox_jax-init"), init_seen

    # Make every background compile as late as it can be: it starts only once the loop waits
    # for it (however fast this machine), then takes 2 s more. The loop stalls; the schedule
    # does not change.
    submit, wait = BackgroundCompiler.submit, BackgroundCompiler.wait
    asked: dict[str, threading.Event] = {}

    def slow_submit(self, key, fn):
        asked.setdefault(key, threading.Event())
        submit(self, key, lambda: (asked[key].wait(60), time.sleep(2.0), fn()))

    def asking_wait(self, key, count=True):
        asked.setdefault(key, threading.Event()).set()
        return wait(self, key, count)

    monkeypatch.setattr(BackgroundCompiler, "wait", asking_wait)
    monkeypatch.setattr(BackgroundCompiler, "submit", slow_submit)
    slow = run("slow", "run.max_steps=6")
    assert slow["stall_s"] > 0
    # Resume it to the end (from the checkpoint at step 6) with compiles still slow.
    assert len(init_calls) == 2  # the two new runs
    init_calls.clear()
    resumed = run("slow", "run.resume=true")
    assert not init_calls  # a resumed run restores its state and initialises nothing
    assert resumed["step"] == 12
    assert _rows(slow["run_dir"]) == sizes

    # `yolox-jax compile` builds the trainer's own programs: compiling this config's step for
    # the sizes the run used finds every one in the persistent cache the run filled (a program
    # that differed in any way, the batch's shapes, dtypes or shardings included, would compile).
    from yolox_jax.train import aot

    cfg = load_config(None)
    apply_overrides(cfg, SMALL)
    used = sorted({tuple(int(v) for v in size) for size in sizes.values()})
    messages = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: messages.append(record.getMessage())
    compiler_log = logging.getLogger("jax._src.compiler")
    level = compiler_log.level
    compiler_log.addHandler(handler)
    compiler_log.setLevel(logging.DEBUG)
    try:
        reports = aot.compile_train_programs(cfg, sizes=used)
    finally:
        compiler_log.removeHandler(handler)
        compiler_log.setLevel(level)
    step_log = [m.split(" with key")[0] for m in messages if "'jit_step'" in m]
    assert step_log == ["Persistent compilation cache hit for 'jit_step'"] * len(used), step_log
    assert [r.program for r in reports] == [f"train:{h}x{w}" for h, w in used]
    for r in reports:
        assert r.devices == 1 and r.global_batch == cfg.data.batch_size
        assert r.flops > 0 and r.temp_mib > 0 and r.argument_mib > 0
        assert r.fits is None and r.peak_mib is None  # a CPU: no capacity, no XLA peak
    # More pixels, more temporaries and FLOPs.
    by_area = sorted(reports, key=lambda r: np.prod([int(v) for v in r.program[6:].split("x")]))
    assert by_area[0].flops < by_area[-1].flops and by_area[0].temp_mib < by_area[-1].temp_mib


@pytest.mark.slow
def test_a_tuned_heap_runs_one_step_at_a_time_and_is_released_while_compiling(tmp_path,
                                                                             monkeypatch):
    """Where the heap is tuned (here: ``heap_release`` says so), the loop dispatches a step
    only once the one before it has finished (two in flight would hold two blocks of
    temporaries), and the background compiler releases the heap while it works. The programs
    are those of the test above, from the cache it filled."""
    from yolox_jax.train import loop

    releases = []
    monkeypatch.setattr(loop, "heap_release", lambda: lambda: releases.append(1))
    make_step, ready_at_dispatch = loop.train_step_fn, []

    class Recording:
        def __init__(self, fn):
            self.fn, self.last = fn, None

        def __call__(self, *args):
            if self.last is not None:
                ready_at_dispatch.append(all(x.is_ready() for x in jax.tree.leaves(self.last)))
            out = self.fn(*args)
            self.last = out[1]  # the metrics
            return out

        def __getattr__(self, name):  # lower(), as the background compiler calls it
            return getattr(self.fn, name)

    monkeypatch.setattr(loop, "train_step_fn", lambda *a, **k: Recording(make_step(*a, **k)))
    cfg = load_config(None)
    apply_overrides(cfg, [*SMALL, f"run.output_dir={tmp_path}", "train.print_interval=4",
                          "run.max_steps=6"])
    loop.train(cfg)
    assert ready_at_dispatch == [True] * 5
    assert releases  # at least once after each program prepared in the background

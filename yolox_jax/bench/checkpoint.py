"""Checkpoint save and restore of a whole train state:
``python scripts/benchmark.py checkpoint [--models yolox-tiny:0.125 yolox-s] [--repeat 5]``.

Rows per model: the trainer's ``Checkpointer`` (the state packed into one buffer per dtype) and,
for comparison, Orbax's own way of saving a pytree (``StandardSave`` of the state: one array per
leaf), each timed as the trainer uses it: a save until it is on disk (``wait``), a restore into
the state's structure and shardings until the arrays are ready. Medians of ``--repeat`` rounds.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _state(name: str, width: float | None):
    import jax
    import jax.numpy as jnp

    import yolox_jax
    from yolox_jax.train.state import create_train_state, make_optimizer

    model = yolox_jax.build_model(name, **({"width": width} if width else {}))
    variables = jax.jit(lambda r: model.init(r, jnp.zeros((1, 64, 64, 3)), train=False))(
        jax.random.key(0))
    return jax.block_until_ready(create_train_state(variables, make_optimizer()))


def _time_packed(state, folder: Path, repeat: int):
    import jax

    from yolox_jax.train.checkpoint import Checkpointer, abstract_like

    ck = Checkpointer(folder, keep=2)
    saves, restores = [], []
    try:
        for step in range(1, repeat + 1):
            t0 = time.perf_counter()
            ck.save(step, state, None, {}, {"step": step})
            ck.wait()
            saves.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            jax.block_until_ready(ck.restore(abstract_like(state))["state"])
            restores.append(time.perf_counter() - t0)
    finally:
        ck.close()
    return statistics.median(saves), statistics.median(restores)


def _time_per_leaf(state, folder: Path, repeat: int):
    import jax
    import orbax.checkpoint as ocp

    from yolox_jax.train.checkpoint import abstract_like

    manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(
        create=True, max_to_keep=2))
    saves, restores = [], []
    try:
        for step in range(1, repeat + 1):
            t0 = time.perf_counter()
            manager.save(step, args=ocp.args.StandardSave(state))
            manager.wait_until_finished()
            saves.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            jax.block_until_ready(manager.restore(
                step, args=ocp.args.StandardRestore(abstract_like(state))))
            restores.append(time.perf_counter() - t0)
    finally:
        manager.close()
    return statistics.median(saves), statistics.median(restores)


def main(argv=None) -> int:
    import jax

    from yolox_jax.bench.common import machine

    parser = argparse.ArgumentParser(prog="benchmark.py checkpoint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["yolox-tiny:0.125", "yolox-s"],
                        help="NAME or NAME:WIDTH")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(machine())
    print("| model | arrays | MiB | packed save | packed restore | per-leaf save | "
          "per-leaf restore | save speed-up | restore speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in args.models:
        name, _, width = spec.partition(":")
        state = _state(name, float(width) if width else None)
        leaves = jax.tree_util.tree_leaves(state)
        mib = sum(x.size * x.dtype.itemsize for x in leaves) / 2**20
        root = Path(tempfile.mkdtemp(prefix="yolox_jax_ckpt_bench_"))
        try:
            ps, pr = _time_packed(state, root / "packed", args.repeat)
            ls, lr = _time_per_leaf(state, root / "per_leaf", args.repeat)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"| {spec} | {len(leaves)} | {mib:.1f} | {ps:.2f} s | {pr:.2f} s | {ls:.2f} s | "
              f"{lr:.2f} s | {ls / ps:.1f}x | {lr / pr:.1f}x |", flush=True)
    return 0

"""Orbax checkpoints: train state + EMA, data-iterator state and config, saved together.

Two managers under ``<run dir>/checkpoints``: ``latest/`` keeps the newest N steps, ``best/``
keeps the single best step by COCO AP50:95 of the EMA weights. Orbax writes each step into a
temporary folder and renames it when complete, so a process killed in the middle of a save
leaves the previous checkpoint as the latest usable one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        # Each manager gets its own barrier-key prefix. Orbax names the barriers of an async save
        # after the step folder ("async_write_complete.3.orbax-checkpoint-tmp"), so without
        # prefixes the two managers saving the same step at once share barrier keys across the
        # processes of a multi-host run, and a save can hang (seen: latest/3 never committed).
        def manager(name, **options):
            return ocp.CheckpointManager(self.directory / name, options=ocp.CheckpointManagerOptions(
                create=True, enable_async_checkpointing=async_save,
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    barrier_sync_key_prefix=f"yolox_jax_{name}"), **options))

        self.latest = manager("latest", max_to_keep=keep)
        self.best = manager("best", max_to_keep=1, best_fn=lambda m: m["ap"], best_mode="max")
        self._best_ap: float | None = None

    @staticmethod
    def _save_args(state, data_iterator, config: dict, meta: dict):
        items = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config),
                     meta=ocp.args.JsonSave(meta))
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return ocp.args.Composite(**items)

    def save(self, step: int, state, data_iterator, config: dict, meta: dict, *, force=False) -> bool:
        return self.latest.save(step, args=self._save_args(state, data_iterator, config, meta),
                                force=force)

    def best_ap(self) -> float:
        """AP of the checkpoint under ``best/`` (-inf if none), read from disk once per Checkpointer.

        Read once, when no save is in flight, and then kept in memory: every process of a
        multi-host run then takes the same decision in :meth:`save_best`, whose save is collective.
        """
        if self._best_ap is None:
            step = self.best.best_step()
            self._best_ap = float("-inf") if step is None else float(self.best.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"].get("ap", float("-inf")))
        return self._best_ap

    def save_best(self, step: int, state, config: dict, meta: dict, ap: float) -> bool:
        """Keep ``state`` under ``best/`` if ``ap`` beats the best so far (collective: call it on
        every process with the same ``ap``)."""
        if not ap > self.best_ap():
            return False
        self._best_ap = float(ap)
        return self.best.save(step, args=self._save_args(state, None, config, dict(meta, ap=ap)),
                              metrics={"ap": float(ap)}, force=True)

    def read_meta(self, step: int | None = None) -> dict:
        """The small JSON ``meta`` item (step, epoch, phase, best AP) of a latest/ step."""
        step = self.latest.latest_step() if step is None else step
        return self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, abstract_state, data_iterator=None, step: int | None = None, which="latest"):
        """Restore ``{"state", "config", "meta"}`` (and the iterator in place) from a step."""
        manager = self.latest if which == "latest" else self.best
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint under {manager.directory}")
        items = dict(state=ocp.args.StandardRestore(abstract_state), config=ocp.args.JsonRestore(),
                     meta=ocp.args.JsonRestore())
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = manager.restore(step, args=ocp.args.Composite(**items))
        return {"state": restored["state"], "config": restored["config"], "meta": restored["meta"],
                "step": step}

    def wait(self):
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self):
        self.latest.close()
        self.best.close()


def abstract_like(tree: Any, sharding=None):
    """ShapeDtypeStructs of ``tree`` (with ``sharding``) for a restore target."""
    def leaf(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding if sharding is not None
                                    else getattr(x, "sharding", None))
    return jax.tree_util.tree_map(leaf, tree)


def _local_target(state_dir: Path):
    """Restore target for a saved state on this process's first device, whatever the topology
    it was saved from (e.g. a checkpoint written by a multi-host run, read on one machine)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    tree = ocp.StandardCheckpointHandler().metadata(Path(state_dir))

    def leaf(m):
        if hasattr(m, "shape") and hasattr(m, "dtype"):
            return jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device)
        return m
    return jax.tree_util.tree_map(leaf, tree)


def read_variables(checkpoint_dir: str | os.PathLike, use_ema: bool = True, step: int | None = None):
    """Model variables ``{"params", "batch_stats"}`` from one of our run or checkpoint folders.

    Accepts a run output folder, its ``checkpoints`` folder, a ``latest``/``best`` manager folder or
    a step folder. Restores onto this process's first device, with shapes and dtypes from the
    saved metadata (whatever topology saved it), so no model needs building first.
    """
    path = Path(checkpoint_dir).absolute()
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / "best").is_dir() and step is None and any((path / "best").iterdir()):
        path = path / "best"
    elif (path / "latest").is_dir():
        path = path / "latest"
    if (path / "state").is_dir():  # a step folder
        step, path = int(path.name), path.parent
    manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(create=False))
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no complete checkpoint under {path}")
    target = _local_target(path / str(step) / "state")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), config=ocp.args.JsonRestore()))
    state = restored["state"]
    prefix = "ema_" if use_ema else ""
    variables = {"params": state[prefix + "params"], "batch_stats": state[prefix + "batch_stats"]}
    manager.close()
    return variables, restored["config"]

"""Data parallelism over a named mesh, and multi-host start-up.

The batch is sharded over the ``data`` axis, the train state is replicated, and the step is one
``jax.jit`` with explicit in/out shardings and a donated state (pjit semantics).

BatchNorm across devices: the step computes batch statistics of the *global* batch (the mean over
the sharded batch axis is a cross-device reduction), i.e. synchronised BN. The official trainer
uses per-GPU BN statistics and normalises the loss by each GPU's own foreground count; here the
loss is normalised by the foreground count of the global batch. With one device both agree.
"""
from __future__ import annotations

import itertools
import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from yolox_jax.errors import UserError

log = logging.getLogger(__name__)

DATA_AXIS = "data"
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_JOB_ID",
                "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE")


def maybe_initialize_distributed(mode: str = "auto", coordinator_address: str = "",
                                 num_processes: int = 0, process_id: int = -1) -> None:
    """Call ``jax.distributed.initialize`` for multi-host runs.

    mode "off": never; "on": always (arguments from the config, else auto-detected by JAX from the
    cluster environment: SLURM, Open MPI, Cloud TPU, ...); "auto": only when a cluster environment
    variable or an explicit coordinator address is present. A no-op once initialised.
    """
    if mode == "off" or jax.distributed.is_initialized():
        return
    explicit = bool(coordinator_address) or num_processes > 0
    if mode == "auto" and not explicit and not any(k in os.environ for k in _CLUSTER_ENV):
        return
    kwargs = {}
    if coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        kwargs["coordinator_address"] = coordinator_address or os.environ["JAX_COORDINATOR_ADDRESS"]
    if num_processes > 0:
        kwargs["num_processes"] = num_processes
    if process_id >= 0:
        kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


_barrier_count = itertools.count()


def wait_for_processes(name: str, timeout_s: float = 3600.0) -> None:
    """Block until every process has called this (in the same order), through the coordination
    service of ``jax.distributed``, not a device collective.

    CPU collectives (gloo) give up when the processes reach one more than about 30 s apart, as
    they do when one host finishes compiling a program well before another; a barrier here first
    makes the collective start together. A no-op with one process."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    client = distributed.global_state.client
    client.wait_at_barrier(f"yolox_jax:{name}:{next(_barrier_count)}", int(timeout_s * 1000))


class _StartTogether:
    """A jitted step whose first call at each input signature compiles, waits for every process
    to have compiled it (``wait_for_processes``), then runs: the processes enter the step's
    collectives together however long each one's compilation took."""

    def __init__(self, jitted, static_argnums: tuple[int, ...]):
        self.jitted, self.static_argnums, self.ready = jitted, static_argnums, set()

    def _signature(self, args) -> tuple:
        shapes = tuple((np.shape(x), str(getattr(x, "dtype", type(x))))
                       for x in jax.tree_util.tree_leaves(args))
        return shapes + tuple(args[i] for i in self.static_argnums)

    def __call__(self, *args):
        key = self._signature(args)
        if key not in self.ready:
            self.jitted.lower(*args).compile()  # fills the cache the call below uses
            wait_for_processes("compiled")
            self.ready.add(key)
        return self.jitted(*args)

    def lower(self, *args):
        return self.jitted.lower(*args)


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all (global) devices with the axis name ``data``."""
    devices = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Per-process numpy batch -> global jax arrays sharded on the leading axis.

    Each process passes its own slice (``per_process_batch`` rows); the global batch is the
    concatenation over processes in process order.
    """
    sharding = batch_sharded(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def per_process_batch(global_batch: int, mesh: Mesh) -> int:
    n_dev = mesh.devices.size
    if global_batch % n_dev:
        raise UserError(f"data.batch_size={global_batch} must be divisible by the number of devices "
                         f"({n_dev})")
    return global_batch // jax.process_count()


def jit_train_step(step_fn, mesh: Mesh, state_sharding=None, runtime_lr: bool = False):
    """Jit ``step_fn(state, batch, size, use_l1)`` (``runtime_lr``: ``(state, batch, size,
    use_l1, lr)``) with explicit shardings and donated state.

    ``size`` is static (one compilation per multiscale size); ``use_l1`` is a traced bool, so both
    training phases share one compilation; so is ``lr``, so no schedule is compiled in.
    With several processes, each new program starts only once every process has compiled it.
    """
    state_sharding = state_sharding if state_sharding is not None else replicated(mesh)
    scalars = (replicated(mesh),) * (2 if runtime_lr else 1)
    jitted = jax.jit(
        step_fn,
        in_shardings=(state_sharding, batch_sharded(mesh), *scalars),  # static size excluded
        out_shardings=(state_sharding, replicated(mesh)),
        static_argnums=(2,),
        donate_argnums=(0,),
    )
    return jitted if jax.process_count() == 1 else _StartTogether(jitted, (2,))

"""Orbax checkpoints: train state + EMA, data-iterator state and config, saved together.

Two managers under ``<run dir>/checkpoints``: ``latest/`` keeps the newest N steps, ``best/``
keeps the single best step by COCO AP50:95 of the EMA weights. Orbax writes each step into a
temporary folder and renames it when complete, so a process killed in the middle of a save
leaves the previous checkpoint as the latest usable one.

Packed: the train state is saved as one flat buffer per dtype (``state``) and a ``layout`` record
(the path, shape and dtype of every array, in tree order), not as one Orbax array per leaf. Orbax
spends a few milliseconds of Python per array, so a train state of ~1,000 arrays (any YOLOX variant
with its EMA copy and momentum) took seconds to save and to restore; packed, the cost is that of
the bytes. The state is replicated (data parallelism), so every process holds the same values and
Orbax writes the buffers from the first process. :func:`read_state` reads a step back as nested
dicts without a model; :meth:`Checkpointer.restore` into the structure and shardings of a target.
Steps written one array per leaf still restore.

Verified: every step also holds ``checksums`` (CRC32 of every state array, of the layout, of the
config and of the meta record, computed from the values being saved). Restoring checks them; a
step that fails (a flipped bit, a truncated or unreadable file) is named in a warning and the next
older step is used (:meth:`Checkpointer.restore`, :func:`read_variables`); :func:`verify` reports
every step. Before Orbax reads a step, :func:`preflight` reads its state store synchronously.

Disk problems stop the run at the save they hit, with one message naming the last complete
checkpoint: :meth:`Checkpointer.check_space` (free space against the size of a checkpoint, at start
and before every save) and :meth:`Checkpointer.raise_if_failed` (a background write that failed).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from yolox_jax.errors import UserError
from yolox_jax.train.sharding import wait_for_processes

log = logging.getLogger("yolox_jax.train")


class CheckpointError(RuntimeError):
    """A checkpoint step that cannot be read or does not match its checksums."""


class CheckpointSaveError(UserError):
    """A checkpoint that could not be written (no space, a write error); names the step and the
    last complete checkpoint."""


def tree_nbytes(tree) -> int:
    """Bytes of the array leaves of ``tree`` (global shapes)."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "shape"))


def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def array_checksums(tree) -> dict[str, str]:
    """``{"params/backbone/.../kernel": "<dtype><shape>:<crc32>"}`` for every array leaf of
    ``tree`` (a TrainState or the same tree as nested dicts: the names agree). Arrays spread over
    several processes must be replicated (the train state is). The format of steps written one
    array per leaf, where a 0-d array's shape reads ``[1]``."""
    return {"/".join(_key_name(e) for e in path): _array_checksum(np.ascontiguousarray(leaf))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
            if hasattr(leaf, "shape")}


def record_checksum(record) -> str:
    """CRC32 of a JSON record (config, meta) in a canonical form."""
    text = json.dumps(record, sort_keys=True, default=str)
    return f"{zlib.crc32(text.encode()):08x}"


def _array_checksum(host: np.ndarray) -> str:
    """``"<dtype><shape>:<crc32>"`` of a host array (C order)."""
    data = np.asarray(host, order="C").tobytes()
    return f"{host.dtype}{list(host.shape)}:{zlib.crc32(data):08x}"


def pack(tree) -> tuple[dict[str, np.ndarray], list[dict], dict[str, str]]:
    """Host copy of the array leaves of ``tree``, packed: ``(buffers, layout, checksums)``.

    ``buffers``: one flat array per dtype (``{"float32": [N]}``), the leaves raveled and joined in
    tree order; ``layout``: ``[{"path", "shape", "dtype"}]`` of every leaf in that order;
    ``checksums``: ``{path: "<dtype><shape>:<crc32>"}`` of the leaves. Arrays spread over several
    processes must be replicated (the train state is): each process packs its own copy."""
    parts: dict[str, list[np.ndarray]] = {}
    layout, sums = [], {}
    named = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0] if hasattr(x, "shape")]
    hosts = jax.device_get([x for _, x in named])   # the transfers of all leaves overlap
    for (path, _), host in zip(named, hosts):
        host = np.asarray(host, order="C")
        name = "/".join(_key_name(e) for e in path)
        layout.append({"path": name, "shape": list(host.shape), "dtype": str(host.dtype)})
        sums[name] = _array_checksum(host)
        parts.setdefault(str(host.dtype), []).append(host.reshape(-1))
    buffers = {dtype: np.concatenate(p) for dtype, p in parts.items()}
    return buffers, layout, sums


def unpack(buffers: dict, layout: list[dict], expected: dict | None, where) -> dict[str, np.ndarray]:
    """``{path: array}`` from packed ``buffers`` and their ``layout``, each array checked against
    the saved ``expected`` checksums (of the layout record and of every array); CheckpointError
    naming what does not match."""
    if expected is None:
        raise CheckpointError(f"no checksums saved ({where})")
    if record_checksum(layout) != expected.get("layout"):
        raise CheckpointError(f"the layout record differs from its checksum ({where})")
    flats = {dtype: np.asarray(b).reshape(-1) for dtype, b in buffers.items()}
    offsets = dict.fromkeys(flats, 0)
    arrays = {}
    for entry in layout:
        name, shape, dtype = entry["path"], tuple(entry["shape"]), entry["dtype"]
        if dtype not in flats:
            raise CheckpointError(f"no {dtype} buffer for {name} ({where})")
        size = int(np.prod(shape, dtype=np.int64))
        start = offsets[dtype]
        flat = flats[dtype]
        if start + size > flat.size:
            raise CheckpointError(f"the {dtype} buffer ends before {name} ({where})")
        arrays[name] = flat[start:start + size].reshape(shape)
        offsets[dtype] = start + size
    short = [d for d, o in offsets.items() if o != flats[d].size]
    if short:
        raise CheckpointError(f"the {short[0]} buffer holds more than its layout ({where})")
    want = expected["state"]
    missing = sorted(set(want) - set(arrays))
    if missing or len(want) != len(arrays):
        raise CheckpointError(f"the layout and the checksums name different arrays, e.g. "
                              f"{(missing or sorted(set(arrays) - set(want)))[0]} ({where})")
    got = {k: _array_checksum(a) for k, a in arrays.items()}
    bad = [k for k in want if got[k] != want[k]]
    if bad:
        raise CheckpointError(f"{len(bad)} arrays differ from their checksums, e.g. {bad[0]} "
                              f"({where})")
    return arrays


def place(arrays: dict[str, np.ndarray], abstract, where):
    """The tree of ``abstract`` (ShapeDtypeStructs, with shardings where they have one) filled
    from ``{path: array}``: CheckpointError naming the first missing, extra or mis-shaped array."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    names = ["/".join(_key_name(e) for e in p) for p, _ in paths]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise CheckpointError(f"{len(missing)} arrays missing, e.g. {missing[0]} ({where})")
    extra = sorted(set(arrays) - set(names))
    if extra:
        raise CheckpointError(f"{len(extra)} arrays the target lacks, e.g. {extra[0]} ({where})")
    leaves = []
    for name, (_, want) in zip(names, paths):
        host = arrays[name]
        if tuple(host.shape) != tuple(want.shape) or host.dtype != np.dtype(want.dtype):
            raise CheckpointError(f"{name} is {host.dtype}{list(host.shape)} in the checkpoint, "
                                  f"{np.dtype(want.dtype)}{list(want.shape)} in the target ({where})")
        sharding = getattr(want, "sharding", None)
        if sharding is None:
            leaves.append(jax.numpy.asarray(host))
        else:
            leaves.append(jax.make_array_from_callback(host.shape, sharding,
                                                       lambda index, h=host: h[index]))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def nest(arrays: dict[str, np.ndarray]) -> dict:
    """``{"a/b/c": x}`` -> ``{"a": {"b": {"c": x}}}``."""
    out: dict = {}
    for name, value in arrays.items():
        node = out
        *parents, last = name.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def check(restored: dict, expected: dict | None, where) -> None:
    """Raise CheckpointError naming the first difference between ``restored`` (``state`` and,
    when present, ``config`` / ``meta``) and the saved ``expected`` checksums."""
    if expected is None:
        raise CheckpointError(f"no checksums saved ({where})")
    if "state" in restored:
        got = array_checksums(restored["state"])
        want = expected["state"]
        names = [k for k in want if k in got]
        if len(names) != len(want):
            missing = sorted(set(want) - set(got))
            raise CheckpointError(f"{len(missing)} arrays missing, e.g. {missing[0]} ({where})")
        bad = [k for k in names if got[k] != want[k]]
        if bad:
            raise CheckpointError(f"{len(bad)} arrays differ from their checksums, e.g. {bad[0]} "
                                  f"({where})")
    for record in ("config", "meta"):
        if record in restored and record_checksum(restored[record]) != expected[record]:
            raise CheckpointError(f"the {record} record differs from its checksum ({where})")


def is_packed(step_dir: Path) -> bool:
    """Whether a step folder holds a packed state (a ``layout`` item)."""
    return (Path(step_dir) / "layout").exists()


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

        # Creating a manager is a device collective across processes (Orbax's first barrier). On
        # CPU hosts that is gloo's first connection, which fails when the processes arrive more
        # than about 30 s apart (one host slower to import, build its data or compile): wait for
        # every process through the coordination service first.
        wait_for_processes("checkpointer")
        self.latest = manager("latest", max_to_keep=keep)
        self.best = manager("best", max_to_keep=1, best_fn=lambda m: m["ap"], best_mode="max")
        self._best_ap: float | None = None
        self._in_flight: dict[str, int] = {}  # manager name -> step of its last save issued

    def _last_complete(self) -> str:
        step = self.latest.latest_step()
        if step is None:
            return "no checkpoint of this run is complete yet"
        return f"the last complete checkpoint is {self.latest.directory / str(step)}"

    def check_space(self, state, step: int | None = None) -> None:
        """Raise CheckpointSaveError unless the disk has room for one more checkpoint of
        ``state`` (its array bytes plus 10 % and 1 MiB)."""
        need = int(tree_nbytes(state) * 1.1) + (1 << 20)
        free = shutil.disk_usage(self.directory).free
        if free < need:
            what = f"checkpoint step {step}" if step is not None else "a checkpoint"
            raise CheckpointSaveError(
                f"no room for {what}: it needs about {need / 2**20:.1f} MiB and "
                f"{free / 2**20:.1f} MiB are free; {self._last_complete()}", self.directory)

    def _failed(self, name: str, step: int, err: BaseException) -> CheckpointSaveError:
        self._in_flight.pop(name, None)
        return CheckpointSaveError(f"checkpoint step {step} could not be written ({_short(err)}); "
                                   f"{self._last_complete()}", self.directory / name)

    def raise_if_failed(self) -> None:
        """Raise CheckpointSaveError if a background save has failed (never waits for one that
        is still writing)."""
        for name, manager in (("latest", self.latest), ("best", self.best)):
            if name not in self._in_flight or manager.is_saving_in_progress():
                continue
            try:
                manager.wait_until_finished()  # finished: returns at once, raising its error
                manager.check_for_errors()
            except Exception as err:  # noqa: BLE001 - whatever the writer raised, said once
                raise self._failed(name, self._in_flight[name], err) from None
            del self._in_flight[name]

    def _save(self, name: str, manager, step: int, state, **kwargs) -> bool:
        # Orbax waits for the previous save before starting one: wait here, so that a failure
        # of that one is reported with its own step.
        if name in self._in_flight:
            try:
                manager.wait_until_finished()
                manager.check_for_errors()
            except Exception as err:  # noqa: BLE001
                raise self._failed(name, self._in_flight[name], err) from None
        self.check_space(state, step)
        try:
            saved = manager.save(step, **kwargs)
        except Exception as err:  # noqa: BLE001
            raise self._failed(name, step, err) from None
        self._in_flight[name] = step
        return saved

    @staticmethod
    def _save_args(state, data_iterator, config: dict, meta: dict):
        buffers, layout, sums = pack(state)
        checksums = {"state": sums, "layout": record_checksum(layout),
                     "config": record_checksum(config), "meta": record_checksum(meta)}
        items = dict(state=ocp.args.StandardSave(buffers), layout=ocp.args.JsonSave(layout),
                     config=ocp.args.JsonSave(config), meta=ocp.args.JsonSave(meta),
                     checksums=ocp.args.JsonSave(checksums))
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return ocp.args.Composite(**items)

    def save(self, step: int, state, data_iterator, config: dict, meta: dict, *, force=False) -> bool:
        return self._save("latest", self.latest, step, state,
                          args=self._save_args(state, data_iterator, config, meta), force=force)

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
        return self._save("best", self.best, step, state,
                          args=self._save_args(state, None, config, dict(meta, ap=ap)),
                          metrics={"ap": float(ap)}, force=True)

    def read_meta(self, step: int | None = None) -> dict:
        """The small JSON ``meta`` item (step, epoch, phase, best AP) of a latest/ step."""
        step = self.latest.latest_step() if step is None else step
        return self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, abstract_state, data_iterator=None, step: int | None = None, which="latest"):
        """Restore ``{"state", "config", "meta", "step"}`` (and the iterator in place) from the
        newest step that reads and matches its checksums (or exactly ``step``); a step that fails
        is named in a warning and skipped."""
        manager = self.latest if which == "latest" else self.best
        steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint under {manager.directory}")
        failures = []
        for s in steps:
            where = manager.directory / str(s)
            packed = is_packed(where)
            items = dict(state=ocp.args.StandardRestore(None if packed else abstract_state),
                         config=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore(),
                         checksums=ocp.args.JsonRestore())
            if packed:
                items["layout"] = ocp.args.JsonRestore()
            if data_iterator is not None:
                items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
            try:
                preflight(where)
                restored = dict(manager.restore(s, args=ocp.args.Composite(**items)))
                if packed:
                    arrays = unpack(restored["state"], restored["layout"],
                                    restored.get("checksums"), where)
                    restored["state"] = place(arrays, abstract_state, where)
                    check({k: restored[k] for k in ("config", "meta")},
                          restored.get("checksums"), where)
                else:
                    check(restored, restored.get("checksums"), where)
            except Exception as err:  # noqa: BLE001 - any unreadable step: say so, use an older one
                failures.append(f"{where}: {_short(err)}")
                log.warning("checkpoint %s is damaged (%s); trying an older one", where, _short(err))
                continue
            return {"state": restored["state"], "config": restored["config"],
                    "meta": restored["meta"], "step": s}
        raise CheckpointError("no usable checkpoint: " + "; ".join(failures))

    def wait(self):
        """Wait for the saves in flight; CheckpointSaveError if one failed."""
        for name, manager in (("latest", self.latest), ("best", self.best)):
            try:
                manager.wait_until_finished()
                manager.check_for_errors()
            except Exception as err:  # noqa: BLE001
                raise self._failed(name, self._in_flight.get(name, -1), err) from None

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


_STORED_ARRAYS = ("np.ndarray", "jax.Array", "scalar")   # what Orbax writes as zarr arrays
_ARRAY_RECORDS = (".zarray", "zarr.json")                 # an array's record, zarr v2 or v3


def _zarr_metadata_keys(tree_metadata: dict) -> list[str]:
    """The names (``a.b``, as Orbax names them in its store) of the arrays an Orbax ``_METADATA``
    file's ``tree_metadata`` lists (empty nodes and ``None`` leaves have none)."""
    paths = []
    for entry in tree_metadata.values():
        value = entry.get("value_metadata") or {}
        if value.get("value_type") in _STORED_ARRAYS and not value.get("skip_deserialize"):
            paths.append(".".join(str(k["key"]) for k in entry["key_metadata"]))
    return paths


def _read_last_byte(store, key: str) -> None:
    """Read the last byte of a stored value (its data file reaches that far); an empty value is
    read whole."""
    try:
        store.read(key, byte_range=slice(-1, None)).result()
    except ValueError:
        if store.read(key).result().value:   # not empty: the suffix read's error stands
            raise


def preflight(step_dir: Path) -> None:
    """Read the structure of a step's ``state`` item synchronously; CheckpointError naming what is
    damaged.

    An OCDBT store (what Orbax writes) is read with tensorstore's blocking calls: its manifest and
    b-tree (CRC-32C checked), the last byte of every stored value (a truncated or missing data
    file fails here; nothing of the size of the state is read or held), the array metadata
    records, and the array names of ``_METADATA`` against the store. Orbax
    reads the same files through asyncio and tensorstore futures, and a read that fails there
    while others are pending can hang the process (a lock-order wait between tensorstore and
    the Python interpreter when asyncio cancels the pending futures); damage found here never
    reaches that path. Array chunks are checked afterwards by their checksums."""
    state = Path(step_dir).absolute() / "state"
    if not (state / "manifest.ocdbt").exists():
        return      # an array-per-file layout (tensorstore's own files): Orbax reads and reports it
    import tensorstore as ts

    try:
        tree = json.loads((state / "_METADATA").read_text())["tree_metadata"]
        names = _zarr_metadata_keys(tree)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"state/_METADATA is unreadable ({_short(err)}) ({step_dir})") from None
    try:
        store = ts.KvStore.open({"driver": "ocdbt", "base": state.as_uri() + "/"}).result()
        keys = {k.decode() for k in store.list().result()}
        records = {key: store.read(key).result().value for key in sorted(keys)
                   if key.endswith(_ARRAY_RECORDS)}
        for key in sorted(keys - set(records)):
            _read_last_byte(store, key)
    except (ValueError, OSError) as err:
        raise CheckpointError(f"state store: {_short(err)} ({step_dir})") from None
    for name in names:
        record = next((f"{name}/{m}" for m in _ARRAY_RECORDS if f"{name}/{m}" in keys), None)
        if record is None:
            raise CheckpointError(f"array {name!r} of state/_METADATA is not in the state store "
                                  f"({step_dir})")
        try:
            meta = json.loads(records[record])
            meta["shape"]
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"state store record {record} is unreadable ({_short(err)}) "
                                  f"({step_dir})") from None


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def _manager_dir(checkpoint_dir, step):
    """(manager folder, step or None) for a run folder, its ``checkpoints`` folder, a
    ``latest``/``best`` folder or a step folder; ``best`` is preferred when it has a step."""
    path = Path(checkpoint_dir).absolute()
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / "best").is_dir() and step is None and any((path / "best").iterdir()):
        path = path / "best"
    elif (path / "latest").is_dir():
        path = path / "latest"
    if (path / "state").is_dir():  # a step folder
        step, path = int(path.name), path.parent
    return path, step


def _read_step(manager, path: Path, step: int):
    """Restore one step (state as nested dicts, config) onto this process's first device and
    check it; CheckpointError if the step cannot be read or does not match its checksums."""
    where = path / str(step)
    packed = is_packed(where)
    preflight(where)
    try:
        items = dict(config=ocp.args.JsonRestore())
        if packed:
            items.update(state=ocp.args.StandardRestore(), layout=ocp.args.JsonRestore())
        else:
            items["state"] = ocp.args.StandardRestore(_local_target(where / "state"))
        has_sums = (where / "checksums").exists()
        if has_sums:
            items["checksums"] = ocp.args.JsonRestore()
        restored = dict(manager.restore(step, args=ocp.args.Composite(**items)))
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{_short(err)} ({where})") from None
    if packed:
        arrays = unpack(restored["state"], restored["layout"], restored.get("checksums"), where)
        check({"config": restored["config"]}, restored["checksums"], where)
        device = jax.local_devices()[0]
        restored["state"] = nest(jax.device_put(arrays, device))   # one batched transfer
    elif has_sums:
        check(restored, restored["checksums"], where)
    else:
        log.warning("checkpoint %s has no checksums (written by an older version): not verified",
                    where)
    return restored


def read_state(checkpoint_dir: str | os.PathLike, step: int | None = None):
    """``(step, state, config)`` of one of our run or checkpoint folders, without a model: the
    whole train state as nested dicts of arrays (``state["params"]``, ``state["opt_state"]``...)
    on this process's first device, whatever topology saved it.

    Accepts a run output folder, its ``checkpoints`` folder, a ``latest``/``best`` manager folder or
    a step folder. The newest step that reads and matches its checksums is used (or exactly
    ``step``); damaged ones are named in a warning."""
    path, step = _manager_dir(checkpoint_dir, step)
    manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(create=False))
    try:
        steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint under {path}")
        failures = []
        for s in steps:
            try:
                restored = _read_step(manager, path, s)
            except CheckpointError as err:
                failures.append(str(err))
                log.warning("checkpoint step %d is damaged: %s; trying an older one", s, err)
                continue
            return s, restored["state"], restored["config"]
        raise UserError("no usable checkpoint: " + "; ".join(failures), path)
    finally:
        manager.close()


def read_variables(checkpoint_dir: str | os.PathLike, use_ema: bool = True, step: int | None = None):
    """Model variables ``{"params", "batch_stats"}`` and the config from one of our run or
    checkpoint folders (``read_state``'s folders): the EMA weights unless ``use_ema=False``."""
    _, state, config = read_state(checkpoint_dir, step)
    prefix = "ema_" if use_ema else ""
    return {"params": state[prefix + "params"], "batch_stats": state[prefix + "batch_stats"]}, config


def verify(checkpoint_dir: str | os.PathLike) -> list[tuple[str, int, str]]:
    """``[(manager, step, "ok" | what is wrong)]`` for every step under ``latest/`` and ``best/``
    of a run or checkpoints folder (or the steps of one manager folder)."""
    root = Path(checkpoint_dir).absolute()
    if (root / "checkpoints").is_dir():
        root = root / "checkpoints"
    folders = [root / n for n in ("latest", "best") if (root / n).is_dir()] or [root]
    report = []
    for folder in folders:
        manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(create=False))
        try:
            for s in sorted(manager.all_steps()):
                try:
                    _read_step(manager, folder, s)
                    report.append((folder.name, s, "ok"))
                except CheckpointError as err:
                    report.append((folder.name, s, str(err)))
        finally:
            manager.close()
    return report

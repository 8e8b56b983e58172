"""A run's train-step programs compiled ahead of time, for this machine's devices or for a TPU
slice this machine does not have, with each program's memory and FLOPs per device.

What ``yolox-jax compile`` reports: whether a config (model, input size, global batch, devices)
fits the accelerator's memory, before a run or a slice is paid for. The programs are the
trainer's own (:func:`yolox_jax.train.loop.train` builds the same step and lowers it the same
way), one per input size; with multiscale training the largest size is the one that needs the
most memory.

For a TPU topology (``"v5e:2x2"``, ``"v4:2x2x1"``, ...) the programs are compiled on this host
without TPUs (JAX's deviceless ahead-of-time compilation: ``jax.experimental.topologies``),
which needs the ``libtpu`` package of the installed JAX (``pip install "jax[tpu]==<jax
version>"``) but no TPU. Nothing runs; the figures are XLA's (``memory_analysis``,
``cost_analysis``) for one device of the mesh.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from yolox_jax.errors import UserError

MIB = 2 ** 20

# Memory of one TPU chip (GiB), by the start of ``device_kind``, lower case: the public figures
# of each generation. A device not listed here gets no "fits" verdict.
TPU_MEMORY_GIB = (("tpu v4", 32), ("tpu v5 lite", 16), ("tpu v5p", 95), ("tpu v5", 95),
                  ("tpu v6 lite", 32), ("tpu7x", 192))


def device_memory_bytes(device) -> int | None:
    """What one device can hold: the allocator's limit of a local GPU/TPU, the table above for
    a TPU of a topology, None for a CPU or a device not known."""
    if device.platform == "cpu":
        return None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - topology devices have no allocator
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    kind = str(getattr(device, "device_kind", "")).lower()
    for prefix, gib in TPU_MEMORY_GIB:
        if kind.startswith(prefix):
            return gib * 2 ** 30
    return None


def topology_devices(name: str) -> list:
    """The devices of TPU topology ``name`` (``"<generation>:<chips>"``, e.g. ``"v5e:2x2"``,
    ``"v4:2x2x1"``, ``"v5e:1x1"``), for compiling without them. Needs ``libtpu``."""
    from importlib.util import find_spec

    if ":" not in name:
        raise UserError(f"{name!r} is not a TPU topology such as v5e:2x2 or v4:2x2x1",
                        "--topology")
    if find_spec("libtpu") is None:
        raise UserError("compiling for a TPU topology needs libtpu: pip install "
                        f"\"jax[tpu]=={jax.__version__}\" (no TPU needed)", "--topology")
    from jax.experimental import topologies

    chips = name.partition(":")[2].split("x")
    kwargs = {}
    if all(c == "1" for c in chips):  # one chip: the default host bounds (2x2) do not divide it
        kwargs["chips_per_host_bounds"] = (1, 1, 1)
    try:
        return list(topologies.get_topology_desc(topology_name=name, platform="tpu",
                                                 **kwargs).devices)
    except Exception as e:  # noqa: BLE001 - libtpu's message names what is wrong
        raise UserError(f"libtpu could not make this topology: {str(e).splitlines()[0]}",
                        "--topology") from e


def train_sizes(cfg, which: str = "largest") -> list[tuple[int, int]]:
    """Input sizes of the run's train-step programs: ``"largest"`` (by area: the one that needs
    the most memory), ``"base"`` (``data.input_size``) or ``"all"`` (the base size and every
    multiscale size)."""
    from yolox_jax.train import inputs

    base = tuple(int(v) for v in cfg.data.input_size)
    sizes = list(dict.fromkeys([base, *(tuple(int(v) for v in s)
                                        for s in inputs.multiscale_choices(cfg.data))]))
    if which == "base":
        return [base]
    if which == "all":
        return sizes
    if which == "largest":
        return [max(sizes, key=lambda s: (s[0] * s[1], s))]
    raise ValueError(f"which must be largest, base or all, got {which!r}")


@dataclasses.dataclass
class ProgramReport:
    """One compiled program, per device of its mesh (MiB, FLOPs)."""
    program: str
    devices: int
    device_kind: str
    global_batch: int
    compile_s: float
    flops: float | None
    argument_mib: float
    output_mib: float
    alias_mib: float
    temp_mib: float
    code_mib: float
    total_mib: float             # argument + output - alias + temp + code
    peak_mib: float | None       # XLA's own peak estimate, where the backend gives one
    device_mib: float | None     # what one device holds, where known
    fits: bool | None

    def row(self) -> dict:
        return dataclasses.asdict(self)


def compile_train_programs(cfg, devices=None, sizes="largest") -> list[ProgramReport]:
    """Compile the trainer's step of ``cfg`` (:func:`yolox_jax.train.loop.train_step_fn`, for
    :func:`yolox_jax.train.loop.abstract_train_batch`) for each input size on a 1-D data mesh
    over ``devices`` (default: every device of this process; or :func:`topology_devices`), and
    report each program. ``sizes``: a :func:`train_sizes` choice or a list of ``(h, w)``."""
    import copy

    from yolox_jax.train import loop
    from yolox_jax.train.sharding import make_mesh
    from yolox_jax.train.state import make_optimizer

    devices = list(devices) if devices is not None else jax.devices()
    cfg = copy.deepcopy(cfg)
    if cfg.model.conv == "auto":
        cfg.model.conv = "cpu" if devices[0].platform == "cpu" else "xla"
    if cfg.data.batch_size % len(devices):
        raise UserError(f"{cfg.data.batch_size} does not split over {len(devices)} devices",
                        "data.batch_size")
    mesh = make_mesh(devices)
    model = loop.model_from_config(cfg)
    tx = make_optimizer(momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay)
    state = loop._abstract(loop.abstract_state(cfg, model, tx, mesh))
    batch = loop.abstract_train_batch(cfg, mesh)
    step = loop.train_step_fn(cfg, model, tx, mesh)
    capacity = device_memory_bytes(devices[0])
    reports = []
    for h, w in (train_sizes(cfg, sizes) if isinstance(sizes, str) else sizes):
        h, w = int(h), int(w)
        t0 = time.perf_counter()
        compiled = step.lower(state, batch, (h, w), np.bool_(False), np.float32(0)).compile()
        reports.append(_report(f"train:{h}x{w}", compiled, devices, cfg.data.batch_size,
                               time.perf_counter() - t0, capacity))
    return reports


def _report(name, compiled, devices, global_batch, seconds, capacity) -> ProgramReport:
    from yolox_jax.bench.common import memory_analysis, program_stats

    stats = program_stats(compiled)
    mem = stats["program_mib"] or {}
    peak = None
    if devices[0].platform != "cpu":  # XLA:CPU's figure leaves out its temporaries
        peak_bytes = getattr(memory_analysis(compiled), "peak_memory_in_bytes", None)
        peak = None if peak_bytes is None else round(peak_bytes / MIB, 1)
    device_mib = round(capacity / MIB, 1) if capacity else None
    total = mem.get("total", 0.0)
    return ProgramReport(
        program=name, devices=len(devices), device_kind=str(devices[0].device_kind),
        global_batch=global_batch, compile_s=round(seconds, 1), flops=stats["flops"],
        **{f"{k}_mib": round(mem.get(k, 0.0), 1) for k in ("argument", "output", "alias", "temp")},
        code_mib=round(mem.get("generated_code", 0.0), 1), total_mib=round(total, 1),
        peak_mib=peak, device_mib=device_mib,
        fits=None if device_mib is None else bool(total <= device_mib))


def table(reports: list[ProgramReport]) -> str:
    """The reports as a Markdown table."""
    lines = ["| program | devices | global batch | per device: arguments | temporaries | total "
             "| XLA peak | device holds | fits | GFLOPs per device | compile |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        holds = f"{r.device_mib / 1024:.1f} GiB" if r.device_mib else "-"
        fits = "-" if r.fits is None else ("yes" if r.fits else "NO")
        gflops = f"{r.flops / 1e9:.0f}" if r.flops else "-"
        peak = f"{r.peak_mib / 1024:.2f} GiB" if r.peak_mib is not None else "-"
        lines.append(f"| {r.program} | {r.devices} x {r.device_kind} | {r.global_batch} | "
                     f"{r.argument_mib:.0f} MiB | {r.temp_mib:.0f} MiB | "
                     f"{r.total_mib / 1024:.2f} GiB | {peak} | {holds} | {fits} | {gflops} | "
                     f"{r.compile_s:.0f} s |")
    return "\n".join(lines)

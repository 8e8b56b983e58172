"""``yolox-jax bench``: every workload in one run, written as a table, a JSON file and plots.

A result is a dict: ``machine`` (device, CPU, versions, process tuning, date), ``settings``,
``reference`` (where the PyTorch side ran, or why not), ``workloads`` (one entry per workload,
below), ``wall_s`` and ``workload_wall_s`` (per group). An entry holds ``jit``, ``eager`` and
``torch``, each either figures or ``{"skipped": reason}``:

* ``jit``: ``lower_s`` (trace + lower) and ``compile_s`` (XLA), apart from the steady state:
  ``median_s``, ``min_s``, ``max_s`` over ``repeats`` calls after the warm-up, ``times_s``,
  ``images_per_s``, ``flops`` (``cost_analysis``), ``mfu`` (None on CPU), ``program_mib``
  (``memory_analysis``), ``peak_rss_mib`` (getrusage max RSS while it ran) and
  ``peak_memory_mib`` (max RSS on CPU, the program's memory on an accelerator);
* ``eager``: the same function under ``jax.disable_jit()``: ``first_call_s`` (it compiles every
  primitive once, op by op), then ``median_s`` etc. over ``eager_repeats`` calls;
* ``torch``: the official PyTorch YOLOX (or, for SimOTA and NMS, the official control flow in
  PyTorch) in the interpreter of ``--torch-python``;
* ``speedup``: ``eager_over_jit`` and ``torch_over_jit`` (ratios of medians; above 1, jit is
  faster).

Data-pipeline entries have ``host`` (``images_per_s``) instead: no JAX program runs there.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

# Workload groups in the order they run; "train" and "startup" share one compilation.
GROUPS = ("train", "startup", "forward", "assign", "nms", "data")
EAGER_GROUPS = ("train", "forward", "assign", "nms")


@dataclasses.dataclass
class Settings:
    model: str = "yolox-s"
    hw: tuple = (640, 640)
    batch: int = 8
    forward_batches: tuple = (1, 32)
    width: float | None = None
    dtype: str = "float32"
    conv: str = "auto"
    repeats: int = 10
    warmup: int = 2
    eager: frozenset = frozenset(EAGER_GROUPS)
    eager_repeats: int = 2
    assigners: tuple = ()           # () = every name of the registry
    gts: int = 30                   # ground truths per image in the assign workloads
    data_workers: int = 0
    quick: bool = False
    reference: object = None        # a common.Reference
    # What one workload leaves for the next (the train step's initial weights for the forward).
    shared: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def pad(self) -> int:
        return 4 * self.gts

    @property
    def model_overrides(self) -> dict:
        return {"width": self.width} if self.width else {}

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in ("reference", "shared")}
        d.update(size=list(self.hw), forward_batches=list(self.forward_batches),
                 eager=sorted(self.eager), assigners=list(self.assigners), pad=self.pad)
        del d["hw"]
        return d


def run(s: Settings, groups=GROUPS, log=print) -> dict:
    """Run the workload ``groups`` (a subset of :data:`GROUPS`) for settings ``s``."""
    import jax

    from yolox_jax.bench import assign, common, data, forward, nms, train

    if s.conv == "auto":
        s = dataclasses.replace(s, conv="cpu" if jax.default_backend() == "cpu" else "xla")
    if s.reference is None:
        s = dataclasses.replace(s, reference=common.Reference.probe(None, None))
    result = {"machine": common.machine_info(), "settings": s.as_dict(),
              "reference": {"python": s.reference.python, "yolox_src": s.reference.root,
                            "skipped": s.reference.reason or None},
              "workloads": {}, "workload_wall_s": {}}
    first = [g for g in ("train", "startup") if g in groups]
    steps = [("/".join(first), lambda: train.workload(s, first)),
             ("forward", lambda: forward.workload(s)), ("assign", lambda: assign.workload(s)),
             ("nms", lambda: nms.workload(s)), ("data", lambda: data.workload(s))]
    t_all = time.perf_counter()
    for name, fn in steps:
        if not name or (name in GROUPS and name not in groups):
            continue
        log(f"bench: {name} ...")
        t0 = time.perf_counter()
        entries = fn()
        result["workload_wall_s"][name] = time.perf_counter() - t0
        result["workloads"].update(entries)
        for key, entry in entries.items():
            log("  " + one_line(key, entry))
    result["wall_s"] = time.perf_counter() - t_all
    return result


# ----------------------------------------------------------------------------------- reporting


def fmt_s(x) -> str:
    if x is None:
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.0f} us"
    if x < 1:
        return f"{x * 1e3:.3g} ms"
    return f"{x:.3g} s" if x < 100 else f"{x:.0f} s"


def _side(entry, key):
    side = entry.get(key)
    return side if isinstance(side, dict) and "skipped" not in side else {}


def one_line(key, entry) -> str:
    jit, eager, ref = (_side(entry, k) for k in ("jit", "eager", "torch"))
    if "host" in entry:
        return f"{key}: {entry['host']['images_per_s']:.1f} images/s"
    parts = [f"{key}: jit {fmt_s(jit.get('median_s'))}"]
    if "compile_s" in jit:
        parts.append(f"compile {fmt_s(jit['compile_s'])}")
    parts.append(f"eager {fmt_s(eager.get('median_s'))}")
    parts.append(f"torch {fmt_s(ref.get('median_s'))}")
    return ", ".join(parts)


def markdown_table(result) -> str:
    """The result as a Markdown table (the terminal output and ``bench.md``), with the reasons
    for skipped references below it."""
    head = ("| workload | batch | jit | trace+lower / compile | eager (disable_jit) | eager / jit "
            "| PyTorch | PyTorch / jit | images/s | peak MiB (jit / eager) | XLA program MiB "
            "| MFU |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    notes = {}
    for key, e in result["workloads"].items():
        jit, eager, ref = (_side(e, k) for k in ("jit", "eager", "torch"))
        sp = e.get("speedup", {})
        if key == "startup":
            comp = f"{fmt_s(jit.get('lower_s'))} / {fmt_s(jit.get('compile_s'))}"
        elif "compile_s" in jit:
            comp = f"{fmt_s(jit['lower_s'])} / {fmt_s(jit['compile_s'])}"
        else:
            comp = "-"
        ips = jit.get("images_per_s") or (e.get("host") or {}).get("images_per_s")
        mem = "-"
        if jit.get("peak_memory_mib") or eager.get("peak_memory_mib"):
            f = lambda v: f"{v:.0f}" if v else "-"  # noqa: E731
            mem = f"{f(jit.get('peak_memory_mib'))} / {f(eager.get('peak_memory_mib'))}"
        program = (jit.get("program_mib") or {}).get("total")
        mfu = jit.get("mfu")
        ratio = lambda k: f"{sp[k]:.3g}x" if k in sp else "-"  # noqa: E731
        label = e.get("label", key)
        if "torch" in e and "skipped" in (e["torch"] or {}):
            reason = e["torch"]["skipped"]
            mark = notes.setdefault(reason, "*" * (len(notes) + 1))
            ref_cell = f"-{mark}"
        else:
            ref_cell = fmt_s(ref.get("median_s"))
        lines.append(
            f"| {label} | {e.get('batch', '-')} | {fmt_s(jit.get('median_s'))} | {comp} | "
            f"{fmt_s(eager.get('median_s'))} | {ratio('eager_over_jit')} | {ref_cell} | "
            f"{ratio('torch_over_jit')} | {f'{ips:.3g}' if ips else '-'} | {mem} | "
            f"{f'{program:.1f}' if program else '-'} | "
            f"{'-' if not jit else 'n/a' if mfu is None else f'{mfu * 100:.1f}%'} |")
    for reason, mark in notes.items():
        lines.append(f"\n{mark} PyTorch: {reason}")
    precisions = sorted({(e.get("torch") or {}).get("dtype")
                         for e in result["workloads"].values()} - {None})
    if precisions and precisions != ["float32"]:
        lines.append(f"\nPyTorch precision: {', '.join(precisions)} (the official --fp16)")
    return "\n".join(lines) + "\n"


def header(result) -> str:
    m, st = result["machine"], result["settings"]
    tuned = ", ".join(k for k, v in m["tuned"].items() if v) or "none"
    return (f"yolox-jax bench: {st['model']}"
            + (f" (width {st['width']})" if st.get("width") else "")
            + f" {st['size'][0]}x{st['size'][1]}, batch {st['batch']}, {st['dtype']}, "
            f"conv={st['conv']}; jit median of {st['repeats']} after {st['warmup']} warm-up, "
            f"eager median of {st['eager_repeats']} after its first call\n"
            f"{m['platform']} {m['device_kind']} x{m['devices']} | {m['cpu']} x{m['cpu_count']} | "
            f"jax {m['jax']} | process tuning: {tuned} | {m['date']} | wall {result['wall_s']:.0f} s\n")


def write(result, out_dir) -> dict:
    """``bench.json``, ``bench.md`` and the PNG plots into ``out_dir``; returns the paths
    (``plots`` empty and ``plots_error`` set when matplotlib is missing)."""
    from yolox_jax.bench.plots import bench_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "plots": []}
    paths["json"].write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    paths["markdown"].write_text(header(result) + "\n" + markdown_table(result))
    try:
        paths["plots"] = bench_plots(result, out)
    except ImportError as err:
        paths["plots_error"] = f"no plots: {err.name or 'matplotlib'} is not installed (pip install matplotlib)"
    return paths


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)

"""What the benchmarks share: the machine, timing, compile and memory figures, MFU, and running
the PyTorch reference side in another interpreter."""
from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Peak dense FLOP/s per device (bf16, fp32) by a lower-case substring of ``device_kind``.
# fp32 on NVIDIA is the non-tensor-core figure; XLA may run fp32 convs/matmuls as TF32 on
# Ampere+ (then the fp32 MFU reads high). TPUs have no separate fp32 peak: bf16 is used.
PEAK_FLOPS = (
    ("h200", 989e12, 67e12),
    ("h100", 989e12, 67e12),
    ("a100", 312e12, 19.5e12),
    ("v5p", 459e12, 459e12),
    ("v5 lite", 197e12, 197e12),
    ("v5e", 197e12, 197e12),
    ("v4", 275e12, 275e12),
)

MIB = 2 ** 20
OFFICIAL_SCRIPT = Path(__file__).with_name("official.py")


def peak_flops(device_kind: str, platform: str, dtype: str):
    """Peak FLOP/s of one device for ``dtype``, or None (CPU, or a device not in the table)."""
    if platform == "cpu":
        return None
    kind = (device_kind or "").lower()
    for key, bf16, fp32 in PEAK_FLOPS:
        if key in kind:
            return bf16 if dtype == "bfloat16" else fp32
    return None


def cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def machine_info() -> dict:
    """The device, host CPU, versions and process tuning, as a dict."""
    import jax
    import jaxlib

    from yolox_jax.cpu import tuned

    dev = jax.devices()[0]
    return {"platform": dev.platform, "device_kind": getattr(dev, "device_kind", ""),
            "devices": jax.device_count(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "python": platform.python_version(), "tuned": tuned(),
            "compilation_cache": jax.config.jax_compilation_cache_dir or None,
            "date": datetime.date.today().isoformat()}


def machine() -> str:
    """One line: device, CPU, jax, process tuning, date."""
    m = machine_info()
    malloc = "glibc malloc tuned for XLA" if m["tuned"]["malloc"] else "default malloc"
    if m["tuned"]["xla_flags"]:
        malloc += ", Eigen convolutions"
    return (f"{m['platform']}:{m['device_kind']} | {m['cpu']} x{m['cpu_count']} | "
            f"jax {m['jax']} | {malloc} | {m['date']}")


# ------------------------------------------------------------------------------------- timing


def time_calls(fn, *, warmup: int = 1, repeat: int = 5) -> list[float]:
    """Wall seconds of each of ``repeat`` calls of ``fn()`` (which must block until its result
    is ready), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def time_fn(fn, *, warmup: int = 1, repeat: int = 5) -> float:
    """Median wall seconds of ``fn()`` (which must block until its result is ready)."""
    times = sorted(time_calls(fn, warmup=warmup, repeat=repeat))
    return times[len(times) // 2]


def summary(times: list[float], batch: int | None = None) -> dict:
    """Median, min and max seconds of ``times`` (and images/s at the median for ``batch``)."""
    s = sorted(times)
    out = {"median_s": s[len(s) // 2], "min_s": s[0], "max_s": s[-1], "repeats": len(s),
           "times_s": list(times)}
    if batch:
        out["images_per_s"] = batch / out["median_s"]
    return out


# ------------------------------------------------------------------------------------- memory


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size to its current size (Linux: writing 5 to
    /proc/self/clear_refs resets both VmHWM and getrusage's ru_maxrss). False where it cannot:
    then :func:`peak_rss_mib` is the process's peak so far."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """``resource.getrusage`` max RSS of this process, MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MIB if sys.platform == "darwin" else rss / 1024   # bytes on macOS, KiB elsewhere


def device_peak_mib():
    """Peak bytes in use on the first device so far (GPU/TPU allocators), MiB, or None."""
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - not every backend has allocator statistics
        return None
    peak = stats.get("peak_bytes_in_use")
    return peak / MIB if peak else None


def on_cpu() -> bool:
    import jax

    return jax.default_backend() == "cpu"


# ---------------------------------------------------------------------------- compiled programs


def compile_timed(jitted, *args, **kwargs):
    """``(compiled, lower_s, compile_s)``: ``jitted.lower(*args, **kwargs)`` (tracing and
    lowering to StableHLO) and ``.compile()`` (XLA) timed apart."""
    t0 = time.perf_counter()
    lowered = jitted.lower(*args, **kwargs)
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    return compiled, lower_s, time.perf_counter() - t0


def memory_analysis(compiled):
    """The compiled program's ``memory_analysis()``, or None where the backend has none."""
    try:
        return compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - optional figure
        return None


def program_stats(compiled) -> dict:
    """FLOPs (``cost_analysis``) and memory (``memory_analysis``, MiB) of a compiled program;
    None where the backend does not say."""
    flops = None
    try:
        ca = compiled.cost_analysis()
        if isinstance(ca, (list, tuple)):  # older jax: one dict per computation
            ca = ca[0] if ca else None
        if ca:
            flops = float(ca.get("flops", 0.0)) or None
    except Exception:  # noqa: BLE001 - optional figure
        pass
    memory = None
    mem = memory_analysis(compiled)
    if mem is not None:
        fields = ("argument", "output", "alias", "temp", "generated_code")
        memory = {k: getattr(mem, f"{k}_size_in_bytes", 0) / MIB for k in fields}
        # What the program needs resident while it runs: inputs, outputs not aliased to
        # (donated) inputs, temporaries and its code.
        memory["total"] = (memory["argument"] + memory["output"] - memory["alias"]
                           + memory["temp"] + memory["generated_code"])
    return {"flops": flops, "program_mib": memory}


def mfu(flops, seconds, dtype: str = "float32"):
    """Model FLOPs utilisation of one device: ``flops`` per ``seconds`` over its peak; None on
    CPU or a device without a peak in :data:`PEAK_FLOPS`."""
    import jax

    dev = jax.devices()[0]
    peak = peak_flops(getattr(dev, "device_kind", ""), dev.platform, dtype)
    if not (flops and peak and seconds):
        return None
    return flops / seconds / peak


def measure_jit(fn, args, *, batch: int, warmup: int, repeats: int,
                dtype: str = "float32") -> tuple[dict, object]:
    """Compile ``jax.jit(fn)`` for ``args`` (timed apart), then the median of ``repeats`` calls
    after ``warmup``. Returns ``(figures, output of the last call)``."""
    import jax

    compiled, lower_s, compile_s = compile_timed(jax.jit(fn), *args)
    box = {}

    def call():
        box["out"] = jax.block_until_ready(compiled(*args))

    reset_peak_rss()
    times = time_calls(call, warmup=warmup, repeat=repeats)
    fig = {"lower_s": lower_s, "compile_s": compile_s, **summary(times, batch),
           **program_stats(compiled)}
    fig.update(memory_figures(fig["program_mib"]))
    fig["mfu"] = mfu(fig["flops"], fig["median_s"], dtype)
    return fig, box["out"]


def memory_figures(program_mib=None, eager: bool = False) -> dict:
    """``peak_rss_mib`` (getrusage max RSS since the last :func:`reset_peak_rss`) and
    ``peak_memory_mib``: that on CPU; on an accelerator the compiled program's memory
    (``memory_analysis``) or, for eager runs, the allocator's peak."""
    out = {"peak_rss_mib": peak_rss_mib()}
    if on_cpu():
        out.update(peak_memory_mib=out["peak_rss_mib"], memory_source="max RSS (getrusage)")
    elif not eager and program_mib:
        out.update(peak_memory_mib=program_mib["total"], memory_source="memory_analysis")
    else:
        out.update(peak_memory_mib=device_peak_mib(), memory_source="device peak bytes in use")
    return out


def measure_eager(fn, *, batch: int, repeats: int) -> dict:
    """``fn()`` under ``jax.disable_jit()``: the first call apart (it compiles every primitive
    once, op by op), then the median of ``repeats`` calls."""
    import jax

    with jax.disable_jit():
        reset_peak_rss()
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        first = time.perf_counter() - t0
        times = time_calls(lambda: jax.block_until_ready(fn()), warmup=0, repeat=repeats)
    return {"first_call_s": first, **summary(times, batch), **memory_figures(eager=True)}


def speedups(entry: dict) -> dict:
    """eager / jit and reference / jit ratios of an entry's medians (above 1: jit faster)."""
    jit = entry.get("jit") or {}
    out = {}
    for key in ("eager", "torch"):
        other = entry.get(key) or {}
        if jit.get("median_s") and other.get("median_s"):
            out[f"{key}_over_jit"] = other["median_s"] / jit["median_s"]
    return out


def skipped(reason: str) -> dict:
    return {"skipped": reason}


# ------------------------------------------------------------------------------ the torch side


def find_torch_python(explicit: str | None):
    """The interpreter for the PyTorch side: ``explicit`` ('none' for none), else this one when
    it has torch (looked up, not imported), else None."""
    import importlib.util

    if explicit:
        return None if explicit == "none" else explicit
    return sys.executable if importlib.util.find_spec("torch") is not None else None


class Reference:
    """Where the PyTorch reference runs: ``python`` (an interpreter with torch or None) and
    ``root`` (a folder holding the official ``yolox/`` source, or None)."""

    def __init__(self, python=None, root=None, reason=""):
        self.python, self.root, self.reason = python, root, reason

    @classmethod
    def probe(cls, torch_python: str | None, yolox_src: str | None) -> "Reference":
        """``torch_python`` as :func:`find_torch_python` takes it; the official source from
        ``yolox_src`` or an installed ``yolox`` package in that interpreter."""
        from yolox_jax.bench.official import PROBE, has_official_source

        python = find_torch_python(torch_python)
        if python is None:
            return cls(reason="torch not importable (--torch-python)"
                       if torch_python != "none" else "--torch-python none")
        try:
            proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True,
                                  timeout=120)
            found = json.loads(proc.stdout.strip().splitlines()[-1])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as err:
            return cls(reason=f"cannot run {python}: {err}")
        if not found["torch"]:
            return cls(reason=f"torch not importable in {python}")
        root = None
        if yolox_src and has_official_source(yolox_src):
            root = str(Path(yolox_src).resolve())
        elif has_official_source(found["yolox_root"]):
            root = found["yolox_root"]
        reason = "" if root else ("official YOLOX not importable (pip install yolox, or "
                                  "--yolox-src DIR)")
        return cls(python, root, reason)

    def need(self, official: bool = True):
        """None when the reference can run, else why not (for :func:`skipped`)."""
        if self.python is None:
            return self.reason
        if official and self.root is None:
            return self.reason
        return None

    def need_model(self, model: str, overrides: dict):
        """:meth:`need` for the official model of ``model`` with ``overrides`` (of width or
        depth, which the official side does not take)."""
        from yolox_jax.bench.official import OFFICIAL_DEPTH_WIDTH

        why = self.need(official=True)
        if why is None and overrides:
            why = "the official model has no width/depth override"
        if why is None and model not in OFFICIAL_DEPTH_WIDTH:
            why = f"no official {model} in this comparison"
        return why

    def official(self, mode: str, cfg: dict) -> dict:
        """Run ``official.py --<mode> cfg`` in the torch interpreter; its result dict, or
        ``{"error": ...}``."""
        return run_official(self.python, mode, {"yolox_src": self.root, **cfg})

    def script(self, source: str, arrays: dict, *args) -> dict:
        """Run ``source`` as ``python script.py arrays.npz *args`` in the torch interpreter;
        returns its last stdout line as JSON, with ``fg`` when the script saved
        ``arrays.npz.fg.npy``."""
        return run_script(self.python, source, arrays, *args)


def run_official(python, mode: str, cfg: dict) -> dict:
    """Run ``official.py --<mode> cfg`` in the interpreter ``python``; its ``RESULT`` dict, or
    ``{"error": ...}`` with the end of its output."""
    proc = subprocess.run([python, str(OFFICIAL_SCRIPT), f"--{mode}", json.dumps(cfg)],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": "torch run failed: " + " | ".join(tail)}
    return json.loads(lines[-1][len("RESULT "):])


def run_script(python, source, arrays, *args) -> dict:
    """Run ``source`` as ``python script arrays.npz *args`` in a subprocess; returns its last
    stdout line as JSON plus the foreground masks it saved (``fg``) if any."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "inputs.npz")
        np.savez(data, **arrays)
        script = os.path.join(tmp, "torch_script.py")
        with open(script, "w") as f:
            f.write(source)
        proc = subprocess.run([python, script, data, *map(str, args)], capture_output=True,
                              text=True)
        if proc.returncode:
            raise RuntimeError(f"torch benchmark script failed:\n{proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if os.path.exists(data + ".fg.npy"):
            result["fg"] = np.load(data + ".fg.npy")
        return result

"""Benchmark plots (matplotlib, Agg backend; matplotlib is not a dependency of yolox_jax:
``pip install matplotlib``).

Two kinds of chart, drawn from plain dicts (the entries of docs/benchmarks.json use them too):

* ``compare``: one row per measurement, one marker per series on a log axis (by default
  ``ours`` against ``reference``). A value is a number, ``{"runs": [...]}`` (a dot per run, a
  line over their span), ``{"range": [lo, hi]}`` or ``{"median": m, "range": [lo, hi]}``; the
  row's ``ratio`` text is printed at the right.
* ``bars``: grouped bars, ``groups`` on the x axis and one bar per entry of ``series``.

:func:`bench_plots` draws the charts of a ``yolox-jax bench`` result.
"""
from __future__ import annotations

from pathlib import Path

OURS_COLOR, REF_COLOR, EAGER_COLOR = "#1f77b4", "#d62728", "#ff7f0e"


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend; ImportError when matplotlib is missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _span(value):
    """(points to mark, (lo, hi) or None) of one value of a ``compare`` row."""
    if isinstance(value, (int, float)):
        return [value], None
    if "runs" in value:
        runs = value["runs"]
        return runs, (min(runs), max(runs))
    lo, hi = value["range"]
    return ([value["median"]] if "median" in value else []), (lo, hi)


def plot_compare(ax, spec):
    from matplotlib import ticker

    rows = spec["rows"]
    series = spec.get("series") or [("ours", spec["ours"], OURS_COLOR, "o"),
                                     ("reference", spec["reference"], REF_COLOR, "s")]
    n = len(series)
    offsets = [0.12 * (n - 1) - 0.24 * k for k in range(n)] if n > 1 else [0.0]
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        for (key, _, color, marker), dy in zip(series, offsets):
            if row.get(key) is None:
                continue
            points, span = _span(row[key])
            if span is not None:
                ax.plot(span, [y + dy] * 2, color=color, lw=2.5, alpha=0.45,
                        solid_capstyle="butt")
                ax.plot(span, [y + dy] * 2, "|", color=color, ms=9)
            ax.plot(points, [y + dy] * len(points), marker, color=color, ms=6, ls="none")
        ax.annotate(row.get("ratio", ""), xy=(1.01, y), xycoords=("axes fraction", "data"),
                    va="center", fontsize=10, fontweight="bold")
    ax.set_xscale("log")
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    if spec.get("minor_labels", True):
        ax.xaxis.set_minor_formatter(ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    else:
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["label"] for r in reversed(rows)], fontsize=9)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(spec["unit"])
    ax.grid(axis="x", which="both", alpha=0.3)
    for _, label, color, marker in series:
        ax.plot([], [], marker, color=color, label=label)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=n, fontsize=9,
              frameon=False)
    ax.annotate(spec.get("ratio_title", "speed-up"), xy=(1.01, 1.0), xycoords="axes fraction",
                va="bottom", fontsize=9)


def plot_bars(ax, spec):
    """Grouped bars; a value of None leaves its bar out. ``log``: a log value axis; ``fmt``: the
    bar labels' format (default ``{:g}``)."""
    groups, series = spec["groups"], spec["series"]
    width = 0.8 / len(series)
    fmt = spec.get("fmt", "{:g}")
    for j, (name, values) in enumerate(series.items()):
        xs = [g + (j - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [float("nan") if v is None else v for v in values]
        bars = ax.bar(xs, heights, width * 0.95, label=name)
        ax.bar_label(bars, labels=["" if v is None else fmt.format(v) for v in values],
                     fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=9, rotation=spec.get("rotation", 0),
                       ha="right" if spec.get("rotation") else "center")
    ax.set_ylabel(spec["unit"])
    if spec.get("log"):
        ax.set_yscale("log")
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(title=spec.get("series_label") or None, fontsize=9)


def draw(spec, path, plt=None) -> Path:
    """One chart (``spec["kind"]``: compare or bars) with its title into ``path`` (PNG)."""
    plt = plt or pyplot()
    if spec["kind"] == "compare":
        fig, ax = plt.subplots(figsize=(9, 0.75 * len(spec["rows"]) + 1.6))
        plot_compare(ax, spec)
    else:
        fig, ax = plt.subplots(figsize=spec.get("figsize", (9, 4.5)))
        plot_bars(ax, spec)
    ax.set_title(spec["title"], fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -------------------------------------------------------------------------- yolox-jax bench


def _median(side):
    return side.get("median_s") if isinstance(side, dict) else None


def _ratio(num, den):
    return f"{num / den:.3g}x" if (num and den) else "-"


def bench_specs(result: dict) -> dict:
    """The charts of a ``yolox-jax bench`` result, by file stem: ``times`` (jit, eager and
    PyTorch per workload), ``compile`` (trace + lower and compile against one steady-state call)
    and ``throughput`` (images/s)."""
    m, st = result["machine"], result["settings"]
    device = m["platform"] if m["device_kind"] in ("", m["platform"]) else m["device_kind"]
    where = (f"{st['model']} {st['size'][0]}x{st['size'][1]}, {device}, jax {m['jax']}, "
             f"{m['date']}")
    work = result["workloads"]
    timed = [(k, e) for k, e in work.items() if _median(e.get("jit"))]
    rows = []
    for key, e in timed:
        jit, eager, ref = (_median(e.get(s)) for s in ("jit", "eager", "torch"))
        rows.append({"label": e.get("label", key), "jit": jit * 1e3,
                     "eager": eager * 1e3 if eager else None,
                     "torch": ref * 1e3 if ref else None,
                     "ratio": f"{_ratio(eager, jit)} / {_ratio(ref, jit)}"})
    values = [v for r in rows for v in (r["jit"], r["eager"], r["torch"]) if v]
    specs = {"times": {
        "kind": "compare", "rows": rows, "unit": "ms per call, median (log scale)",
        "minor_labels": bool(values) and max(values) / min(values) < 1e3,
        "title": f"jit vs eager vs PyTorch: {where}",
        "ratio_title": "eager/jit, PyTorch/jit",
        "series": [("jit", "jax.jit", OURS_COLOR, "o"),
                   ("eager", "eager (jax.disable_jit)", EAGER_COLOR, "^"),
                   ("torch", "PyTorch", REF_COLOR, "s")]}}
    compiled = [(k, e) for k, e in timed if "compile_s" in e["jit"] and k != "startup"]
    specs["compile"] = {
        "kind": "bars", "unit": "seconds (log scale)", "log": True, "fmt": "{:.3g}",
        "rotation": 30, "figsize": (max(9, 0.9 * len(compiled) + 2), 4.8),
        "title": f"compile time apart from one steady-state call: {where}",
        "groups": [e.get("label", k) for k, e in compiled],
        "series": {"trace + lower": [e["jit"].get("lower_s") for _, e in compiled],
                   "compile (XLA)": [e["jit"]["compile_s"] for _, e in compiled],
                   "one call (median)": [e["jit"]["median_s"] for _, e in compiled]}}
    fed = [(k, e) for k, e in work.items()
           if k.startswith(("train", "forward", "data"))
           and ((e.get("jit") or {}).get("images_per_s") or (e.get("host") or {}))]
    specs["throughput"] = {
        "kind": "bars", "unit": "images / s (log scale)", "log": True, "fmt": "{:.3g}",
        "rotation": 30, "figsize": (max(9, 1.2 * len(fed) + 2), 4.8),
        "title": f"images per second: {where}",
        "groups": [e.get("label", k) for k, e in fed],
        "series": {"jax.jit (data: host pipeline)": [
                       (e.get("jit") or {}).get("images_per_s")
                       or (e.get("host") or {}).get("images_per_s") for _, e in fed],
                   "eager (jax.disable_jit)": [(e.get("eager") or {}).get("images_per_s")
                                               for _, e in fed],
                   "PyTorch": [(e.get("torch") or {}).get("images_per_s") for _, e in fed]}}
    for spec in (specs["compile"], specs["throughput"]):   # no legend entry without a bar
        spec["series"] = {k: v for k, v in spec["series"].items()
                          if any(x is not None for x in v)} or spec["series"]
    return specs


def bench_plots(result: dict, out_dir) -> list[Path]:
    """Draw :func:`bench_specs` into ``out_dir/<stem>.png``; the paths written. Raises
    ImportError without matplotlib."""
    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, spec in bench_specs(result).items():
        if spec.get("rows") or spec.get("groups"):
            paths.append(draw(spec, out / f"{stem}.png", plt))
    return paths

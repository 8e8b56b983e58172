#!/usr/bin/env python
"""Draw the plots of docs/benchmarks.md: ``python scripts/plot_benchmarks.py [--only WORKLOAD]``.

Reads docs/benchmarks.json (one entry per workload) and writes docs/img/<workload>.png.
Two kinds of entry:

* ``compare``: one row per measurement, yolox_jax against a reference implementation on a log
  axis. A value is a number, ``{"runs": [...]}`` (a dot per run, a line over their span),
  ``{"range": [lo, hi]}`` or ``{"median": m, "range": [lo, hi]}``; the row's ratio (reference
  time over ours, as the table gives it) is printed at the right.
* ``bars``: grouped bars, ``groups`` on the x axis and one bar per entry of ``series``.

Needs matplotlib (not a dependency of yolox_jax): ``pip install matplotlib``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS_COLOR, REF_COLOR = "#1f77b4", "#d62728"


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
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        for key, color, dy, marker in (("ours", OURS_COLOR, 0.12, "o"),
                                       ("reference", REF_COLOR, -0.12, "s")):
            points, span = _span(row[key])
            if span is not None:
                ax.plot(span, [y + dy] * 2, color=color, lw=2.5, alpha=0.45,
                        solid_capstyle="butt")
                ax.plot(span, [y + dy] * 2, "|", color=color, ms=9)
            ax.plot(points, [y + dy] * len(points), marker, color=color, ms=6, ls="none")
        ax.annotate(row["ratio"], xy=(1.01, y), xycoords=("axes fraction", "data"),
                    va="center", fontsize=10, fontweight="bold")
    ax.set_xscale("log")
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["label"] for r in reversed(rows)], fontsize=9)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(spec["unit"])
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.plot([], [], "o", color=OURS_COLOR, label=spec["ours"])
    ax.plot([], [], "s", color=REF_COLOR, label=spec["reference"])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9,
              frameon=False)
    ax.annotate("speed-up", xy=(1.01, 1.0), xycoords="axes fraction", va="bottom", fontsize=9)


def plot_bars(ax, spec):
    groups, series = spec["groups"], spec["series"]
    width = 0.8 / len(series)
    for j, (name, values) in enumerate(series.items()):
        xs = [g + (j - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width * 0.95, label=name)
        ax.bar_label(bars, labels=[f"{v:g}" for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=9)
    ax.set_ylabel(spec["unit"])
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(title=spec.get("series_label") or None, fontsize=9)


def main(argv=None):
    p = argparse.ArgumentParser(prog="plot_benchmarks.py")
    p.add_argument("--data", default=str(ROOT / "docs" / "benchmarks.json"))
    p.add_argument("--out", default=str(ROOT / "docs" / "img"))
    p.add_argument("--only", default="", help="one workload (a key of the JSON file)")
    args = p.parse_args(argv)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_benchmarks.py needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 1

    data = json.loads(Path(args.data).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in data.items():
        if name.startswith("_") or (args.only and name != args.only):
            continue
        if spec["kind"] == "compare":
            fig, ax = plt.subplots(figsize=(9, 0.75 * len(spec["rows"]) + 1.6))
            plot_compare(ax, spec)
        else:
            fig, ax = plt.subplots(figsize=(9, 4.5))
            plot_bars(ax, spec)
        ax.set_title(spec["title"], fontsize=10)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

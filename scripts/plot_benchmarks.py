#!/usr/bin/env python
"""Draw the plots of docs/benchmarks.md: ``python scripts/plot_benchmarks.py [--only WORKLOAD]``.

Reads docs/benchmarks.json (one entry per workload) and writes docs/img/<workload>.png with the
charts of ``yolox_jax.bench.plots`` (its docstring describes the two kinds of entry: ``compare``
and ``bars``).

Needs matplotlib (not a dependency of yolox_jax): ``pip install matplotlib``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None):
    p = argparse.ArgumentParser(prog="plot_benchmarks.py")
    p.add_argument("--data", default=str(ROOT / "docs" / "benchmarks.json"))
    p.add_argument("--out", default=str(ROOT / "docs" / "img"))
    p.add_argument("--only", default="", help="one workload (a key of the JSON file)")
    args = p.parse_args(argv)
    from yolox_jax.bench.plots import draw, pyplot

    try:
        plt = pyplot()
    except ImportError:
        print("plot_benchmarks.py needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 1

    data = json.loads(Path(args.data).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in data.items():
        if name.startswith("_") or (args.only and name != args.only):
            continue
        path = draw(spec, out / f"{name}.png", plt)
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

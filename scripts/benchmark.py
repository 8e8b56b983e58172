#!/usr/bin/env python
"""Benchmark harness: ``python scripts/benchmark.py {assign,nms,data,train,model} [options]``.

Each topic lives in ``scripts/bench_<topic>.py`` with a ``main(argv)``; results print as Markdown
table rows with the machine and date, ready for docs/benchmarks.md. On a CPU host the process is
tuned first, as the ``yolox-jax`` command line does (``yolox_jax.cpu.tune_process``: glibc malloc
and XLA:CPU's Eigen convolutions; ``YOLOX_JAX_HOST_MALLOC=0`` / ``YOLOX_JAX_XLA_CPU_FLAGS=0``
measure without); the machine line says what was tuned.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

TOPICS = ("assign", "nms", "data", "train", "model")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TOPICS:
        print(__doc__)
        print("topics:", ", ".join(TOPICS))
        return 2
    sys.path.insert(0, str(Path(__file__).parent))
    # Before any JAX backend starts, as the command line does (a no-op off CPU).
    from yolox_jax.cpu import tune_process

    tune_process()

    module = importlib.import_module(f"bench_{argv[0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

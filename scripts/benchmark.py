#!/usr/bin/env python
"""Detailed benchmark harness:
``python scripts/benchmark.py {assign,nms,data,train,model,checkpoint} [options]``.

``yolox-jax bench`` runs every workload in one command (jit against eager and PyTorch, compile
time, memory, plots); this script runs one topic of ``yolox_jax.bench`` with all of its options
(``--help`` after the topic lists them), printing Markdown table rows with the machine and date,
ready for docs/benchmarks.md. On a CPU host the process is tuned first, as the ``yolox-jax``
command line does (``yolox_jax.cpu.tune_process``: glibc malloc and XLA:CPU's Eigen convolutions;
``YOLOX_JAX_HOST_MALLOC=0`` / ``YOLOX_JAX_XLA_CPU_FLAGS=0`` measure without); the machine line
says what was tuned.
"""
from __future__ import annotations

import importlib
import sys

# topic -> module of yolox_jax.bench
TOPICS = {"assign": "assign", "nms": "nms", "data": "data", "train": "train", "model": "forward",
          "checkpoint": "checkpoint"}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TOPICS:
        print(__doc__)
        print("topics:", ", ".join(TOPICS))
        return 2
    # Before any JAX backend starts, as the command line does (a no-op off CPU).
    from yolox_jax.cpu import tune_process

    tune_process()
    module = importlib.import_module(f"yolox_jax.bench.{TOPICS[argv[0]]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

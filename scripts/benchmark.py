#!/usr/bin/env python
"""Benchmark harness: ``python scripts/benchmark.py {assign,nms,data,train,model} [options]``.

Each topic lives in ``scripts/bench_<topic>.py`` with a ``main(argv)``; results print as Markdown
table rows with the machine and date, ready for docs/benchmarks.md. The machine line says
whether glibc malloc was tuned for XLA:CPU (``import yolox_jax`` does it on CPU hosts; set
``YOLOX_JAX_HOST_MALLOC=0`` to measure without).
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
    # Before any JAX backend starts: yolox_jax's import tunes glibc malloc for XLA:CPU
    # (yolox_jax/train/host_malloc.py; YOLOX_JAX_HOST_MALLOC=0 measures without it).
    import yolox_jax  # noqa: F401

    module = importlib.import_module(f"bench_{argv[0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks of yolox_jax: ``yolox-jax bench`` (:mod:`yolox_jax.bench.suite`) and one module per
workload (``train``, ``forward``, ``assign``, ``nms``, ``data``), each with the ``main(argv)`` of
``scripts/benchmark.py <topic>`` and the ``workload(settings)`` of the command; ``common`` holds
timing, compile, memory and MFU figures, ``official`` the PyTorch side (it runs in a separate
interpreter with torch), ``plots`` the charts. Importing this package changes nothing in the
process; the command tunes a CPU process first, as the other commands do.
"""

#!/usr/bin/env python
"""The one table of scripts/gpu_check.sh: the bench figures of both precisions and the training
run's first step, stalls and images/s, from what the script wrote to its output folder.

    python scripts/gpu_summary.py gpu_results > gpu_results/summary.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(v, unit="", scale=1.0, digits=3):
    return "-" if v is None else f"{v * scale:.{digits}g}{unit}"


def bench_rows(out: Path) -> list[str]:
    """One table row per workload of ``<out>/float32/bench.json`` and ``bfloat16/bench.json``."""
    rows = []
    for dtype in ("float32", "bfloat16"):
        path = out / dtype / "bench.json"
        if not path.is_file():
            rows.append(f"| {dtype} | (no bench.json) | | | | | | | |")
            continue
        for key, e in json.loads(path.read_text())["workloads"].items():
            jit, torch = e.get("jit") or {}, e.get("torch") or {}
            unit, scale = (" s", 1.0) if key == "startup" else (" ms", 1e3)
            ref = (f"{_fmt(torch['median_s'], unit, scale)} ({torch.get('dtype') or 'float32'})"
                   if "median_s" in torch else "-")
            ratio = (e.get("speedup") or {}).get("torch_over_jit")
            rows.append(
                f"| {dtype} | {e.get('label', key)} | {e.get('batch', '-')} | "
                f"{_fmt(jit.get('median_s'), unit, scale)} | {_fmt(jit.get('images_per_s'))} | "
                f"{_fmt(jit.get('mfu'), ' %', 100)} | {_fmt(jit.get('compile_s'), ' s')} | {ref} | "
                f"{_fmt(ratio, 'x')} |")
    return rows


def train_line(out: Path) -> str:
    """First step, stalls and images/s of the `yolox-jax train` run: its summary (the last JSON
    object of ``train.log``, which warnings at exit may follow) and ``train/metrics.jsonl``."""
    log = out / "train.log"
    text = log.read_text() if log.is_file() else ""
    start = text.rfind("\n{")
    summary = json.JSONDecoder().raw_decode(text[start + 1:])[0] if start >= 0 else {}
    metrics = out / "train" / "metrics.jsonl"
    ips = []
    if metrics.is_file():
        ips = [r["train/images_per_s"] for r in map(json.loads, metrics.read_text().splitlines())
               if "train/images_per_s" in r]
    return (f"yolox-jax train: first step {summary.get('time_to_first_step_s', '-')} s after the "
            f"start, stalls {summary.get('stall_s', '-')} s, images/s per logged interval "
            f"(pipeline included): {', '.join(f'{v:.0f}' for v in ips) or '-'}")


def summary(out: Path) -> str:
    devices = out / "devices.txt"
    head = ["| precision | workload | batch | jit | images/s | MFU | compile | PyTorch "
            "| PyTorch / jit |", "|---|---|---|---|---|---|---|---|---|"]
    where = devices.read_text().strip() if devices.is_file() else "?"
    return "\n".join([f"# yolox-jax on {where}", "", *head, *bench_rows(out), "",
                      train_line(out)]) + "\n"


if __name__ == "__main__":
    sys.stdout.write(summary(Path(sys.argv[1])))

"""The paired benchmark's summary (``python scripts/benchmark.py train --paired``,
yolox_jax/bench/train.py): per-round ratios of medians, their median and the rounds won, checked
against a hand computation."""
import statistics

import pytest

from yolox_jax.bench import train as bench_train


def test_paired_summary_ratios_per_round():
    ours = [[1.0, 3.0, 2.0], [4.0, 4.0, 5.0], [1.0, 1.0, 1.0]]
    official = [[2.2, 2.0, 2.4], [3.0, 2.0, 9.0], [1.5, 0.5, 1.5]]
    out = bench_train.paired_summary(ours, official, batch=8)
    # round medians: ours 2, 4, 1; official 2.2, 3, 1.5
    assert out["ratios"] == pytest.approx([1.1, 0.75, 1.5])
    assert out["ratio_median"] == pytest.approx(1.1)
    assert (out["wins"], out["rounds"]) == (2, 3)
    pooled = sorted(t for r in ours for t in r)
    assert out["ours"]["step_s"] == statistics.median(pooled)
    assert out["ours"]["img_s"] == pytest.approx(8 / statistics.median(pooled))
    assert (out["official"]["min_s"], out["official"]["max_s"]) == (0.5, 9.0)


def test_paired_summary_needs_matching_rounds():
    with pytest.raises(ValueError, match="same non-zero number of rounds"):
        bench_train.paired_summary([[1.0]], [], batch=8)

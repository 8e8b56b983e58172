"""yolox-jax study-assign: table helpers, and a tiny end-to-end study (2 assigners x 1 seed)."""
import json
import math

import pytest

from yolox_jax.train import study


def test_step_time_skips_the_first_interval():
    records = [{"step": 10, "train/images_per_s": 1.0}, {"step": 20, "train/images_per_s": 16.0},
               {"step": 30, "train/images_per_s": 8.0}, {"step": 30, "val/COCOAP50": 0.1}]
    seconds, with_compile = study.step_time(records, 16)
    assert seconds == pytest.approx(16 / 12.0) and not with_compile
    seconds, with_compile = study.step_time(records[:1], 16)
    assert seconds == pytest.approx(16.0) and with_compile


def test_summarise_and_table():
    runs = [{"assigner": a, "seed": s, "AP50": ap, "AP50_95": ap / 2, "fg_per_gt": 3.0 + s,
             "step_ms": 100.0, "wall_s": 10.0}
            for a, ap in (("simota", 0.4), ("tal", 0.6)) for s in (0, 1)]
    rows = study.summarise(runs, {"simota": {"assign_share": 0.25}})
    assert [r["assigner"] for r in rows] == ["simota", "tal"]
    assert rows[0]["fg_per_gt"]["mean"] == pytest.approx(3.5)
    assert rows[0]["fg_per_gt"]["std"] == pytest.approx(math.sqrt(0.5))
    table = study.markdown_table(rows)
    lines = table.strip().splitlines()
    assert len(lines) == 4 and lines[2].startswith("| simota | 2 | 0.400 ± 0.000")
    assert "25.0%" in lines[2] and "n/a" in lines[3]   # tal: share not measured


@pytest.mark.slow
def test_study_cli_end_to_end(tmp_path):
    from yolox_jax.cli import main

    out = tmp_path / "study"
    rc = main(["study-assign", "-f", "synthetic", "--assigners", "simota,tal", "--seeds", "1",
               "--out", str(out), "--no-share",
               "data.input_size=(96,128)", "data.synthetic_image_size=(96,128)",
               "data.test_size=(96,128)", "data.synthetic_train_images=16",
               "data.synthetic_val_images=8", "data.batch_size=4", "data.max_labels=16",
               "eval.batch_size=8",
               "model.width=0.125", "train.max_epoch=1", "train.steps_per_epoch=2",
               "train.warmup_epochs=0", "train.no_aug_epochs=0", "train.print_interval=1",
               "train.precompile_in_child=False", "run.tensorboard=False"])
    assert rc == 0
    for name in ("study.md", "study.json", "study.png"):
        assert (out / name).is_file()
    rows = [line for line in (out / "study.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| assigner")]
    assert [r.split("|")[1].strip() for r in rows] == ["simota", "tal"]
    data = json.loads((out / "study.json").read_text())
    assert len(data["runs"]) == 2
    for row in data["rows"]:
        for key in ("AP50", "AP50_95", "fg_per_gt", "step_ms", "wall_s"):
            assert math.isfinite(row[key]["mean"]), (row["assigner"], key)

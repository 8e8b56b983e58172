"""yolox-jax bench: its settings (defaults, --quick, each option), one-line errors, and one run of
every workload kind on the smallest settings (a width-0.125 yolox-tiny at 64 px, batch 2, one
timed call): the JSON's figures, the table and the PNG plots.

The run leaves out what costs most without adding a code path. Eager runs on the tiny case
only, one assigner: an eager call first compiles every primitive it meets, op by op (on a 2-core
CPU about 5 s for the forward pass or NMS, 75 s for the training step, whatever the model's
size); the other workloads' eager figures are checked as skipped with their reason. Likewise
one assigner and one forward batch (the same code for each), and no PyTorch side (torch may be
missing; each reference is skipped with its reason). Cold, the run is mostly the training
step's compilation (init ~10 s, compile ~25 s on the 2-core AMD EPYC VM)."""
import importlib.util
import json

import pytest

from yolox_jax.cli import build_parser, main


def _settings(*argv):
    from yolox_jax.cli.bench import settings

    args = build_parser().parse_args(["bench", *argv])
    args.overrides = []
    return settings(args)


def test_defaults_quick_and_options():
    from yolox_jax.bench.suite import EAGER_GROUPS, GROUPS

    s, groups = _settings()
    assert (s.model, s.hw, s.batch, s.forward_batches) == ("yolox-s", (640, 640), 8, (1, 32))
    assert groups == list(GROUPS) and s.eager == set(EAGER_GROUPS)
    assert s.assigners == () and (s.gts, s.pad) == (30, 120) and s.conv == "auto"
    q, _ = _settings("--quick")
    assert (q.model, q.hw, q.batch) == ("yolox-tiny", (160, 160), 4)
    assert q.repeats < s.repeats and q.eager_repeats <= s.eager_repeats and q.quick
    assert _settings("-n", "yolox-tiny")[0].hw == (416, 416)
    t, groups = _settings("--quick", "--size", "96x128", "--batch", "3", "--width", "0.25",
                          "--repeats", "2", "--warmup", "0", "--forward-batches", "1,4",
                          "--eager", "none", "--assigners", "tal,dsl", "--workloads",
                          "nms,train")
    assert (t.hw, t.batch, t.repeats, t.warmup, t.forward_batches) == ((96, 128), 3, 2, 0, (1, 4))
    assert t.model_overrides == {"width": 0.25} and t.eager == set()
    assert t.assigners == ("tal", "dsl") and groups == ["nms", "train"]
    assert _settings("--eager", "train,nms")[0].eager == {"train", "nms"}


@pytest.mark.parametrize("argv, flag", [
    (["--workloads", "train,bogus"], "--workloads"),
    (["--eager", "data"], "--eager"),
    (["--size", "100"], "--size"),
    (["--forward-batches", "1,x"], "--forward-batches"),
    (["--repeats", "0"], "--repeats"),
    (["--assigners", "simota,nope"], "assign"),
    (["-n", "yolox-q"], "-n"),
])
def test_bad_arguments_end_in_one_line(argv, flag, capsys, tmp_path):
    assert main(["bench", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("yolox-jax: ") and flag in err[0], err
    assert not any(tmp_path.iterdir())                      # nothing ran


@pytest.mark.slow
def test_bench_quick_writes_every_workload(tmp_path):
    out = tmp_path / "bench"
    rc = main(["bench", "--quick", "--width", "0.125", "--size", "64", "--batch", "2",
               "--forward-batches", "1", "--repeats", "1", "--warmup", "0", "--gts", "4",
               "--assigners", "tal", "--eager", "assign", "--torch-python", "none",
               "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "bench.json").read_text())
    work = result["workloads"]
    data = ["data_mosaic", "data_noaug", "data_eval"]
    programs = ["train", "forward_b1", "assign_tal", "nms"]
    assert sorted(work) == sorted(["startup", *programs, *data])
    assert result["settings"]["size"] == [64, 64] and result["settings"]["width"] == 0.125
    on_cpu = result["machine"]["platform"] == "cpu"
    for key in programs:
        jit = work[key]["jit"]
        # Compile time apart from the steady state.
        assert jit["lower_s"] > 0 and jit["compile_s"] > 0 and jit["median_s"] > 0, key
        assert jit["repeats"] == 1 and len(jit["times_s"]) == 1
        assert jit["images_per_s"] == pytest.approx(work[key]["batch"] / jit["median_s"])
        assert jit["peak_memory_mib"] > 0 and jit["program_mib"]["total"] > 0, key
        assert jit["flops"] > 0, key
        assert jit["mfu"] is None or not on_cpu                # no peak FLOP/s on a CPU
    eager = work["assign_tal"]["eager"]                         # --eager assign
    assert eager["first_call_s"] > 0 and eager["median_s"] > 0 and eager["repeats"] == 1
    assert eager["peak_rss_mib"] > 0 and (eager["peak_memory_mib"] > 0 or not on_cpu)
    assert work["assign_tal"]["speedup"]["eager_over_jit"] > 0
    for key in ("train", "forward_b1", "nms", "startup"):
        assert work[key]["eager"] == {"skipped": "not requested (--eager)"}, key
    start = work["startup"]["jit"]
    assert start["median_s"] >= start["init_s"] + start["compile_s"] + start["first_step_s"]
    for key in data:
        assert work[key]["host"]["images_per_s"] > 0
        assert "skipped" in work[key]["jit"] and "skipped" in work[key]["eager"]
    assert all(e["torch"]["skipped"] for e in work.values())   # --torch-python none
    assert work["assign_tal"]["jit"]["fg_per_gt"] > 0

    table = (out / "bench.md").read_text()
    for entry in work.values():
        assert f"| {entry['label']} |" in table

    pngs = sorted(p.name for p in out.glob("*.png"))
    if importlib.util.find_spec("matplotlib") is None:
        assert pngs == []
        return
    assert pngs == ["compile.png", "throughput.png", "times.png"]
    from PIL import Image

    for name in pngs:
        with Image.open(out / name) as img:
            assert img.format == "PNG" and min(img.size) > 100
            img.verify()

"""scripts/gpu_check.sh (the prepared GPU benchmark run) and the official side's loader it
relies on; nothing here compiles or needs a GPU."""
import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from yolox_jax.cli import build_parser, split_overrides
from yolox_jax.cli import bench as bench_cli
from yolox_jax.cli import common

ROOT = Path(__file__).resolve().parents[1]


def _commands(*flags):
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", *flags],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [shlex.split(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize("smoke", [False, True])
def test_every_command_parses_with_the_current_command_line(tmp_path, smoke):
    """Each printed command is valid for today's `yolox-jax`: the bench lines give bench
    settings, and the train line's config, overrides included, loads (an unknown flag or
    config key fails here, not on a lent GPU)."""
    flags = ["--out", str(tmp_path), "--yolox-src", "/src"] + (["--smoke"] if smoke else [])
    commands = _commands(*flags)
    assert [c[3] for c in commands] == ["bench", "bench", "train"]
    seen = {}
    for cmd in commands:
        assert cmd[1:3] == ["-m", "yolox_jax.cli"]
        rest, overrides = split_overrides(cmd[3:])
        args = build_parser().parse_args(rest)
        args.overrides = overrides
        if args.command == "bench":
            s, groups = bench_cli.settings(args)
            assert groups == ["train", "startup", "forward"]
            assert args.yolox_src == "/src" and args.out == f"{tmp_path}/{s.dtype}"
            seen[s.dtype] = s
        else:
            cfg = common.load(args)
            assert cfg.data.source == "synthetic" and cfg.data.synthetic_val_images == 0
            assert cfg.run.output_dir == str(tmp_path) and cfg.run.max_steps >= 3
            train_cfg = cfg
    assert set(seen) == {"float32", "bfloat16"}
    for s in seen.values():
        assert s.eager == set()
        if not smoke:
            assert (s.model, s.hw, s.batch, s.forward_batches) == ("yolox-s", (640, 640), 64,
                                                                    (1, 32))
    if not smoke:
        m = train_cfg.model
        assert (m.name, m.width, m.depth) == ("yolox-s", 0.5, 0.33)
        assert tuple(train_cfg.data.input_size) == (640, 640) and train_cfg.data.batch_size == 64


def test_unknown_argument_is_refused():
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--fast"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown argument --fast" in out.stderr


_FAKE = {
    "yolox/__init__.py": "__version__ = 'fake'\n",
    "yolox/utils/__init__.py": "raise ImportError('the heavy utils package must not load')\n",
    "yolox/utils/boxes.py": """
        def bboxes_iou(a, b):
            return "iou"

        def cxcywh2xyxy(b):
            return "xyxy"
        """,
    "yolox/utils/compat.py": """
        def meshgrid(*t):
            return "grid"
        """,
    "yolox/utils/demo_utils.py": """
        import cv2

        def visualize_assign(*a):
            return "vis"
        """,
    "yolox/models/__init__.py": """
        from yolox.utils import bboxes_iou, cxcywh2xyxy, meshgrid, visualize_assign
        YOLOX = (bboxes_iou(0, 0), cxcywh2xyxy(0), meshgrid(), visualize_assign.__name__)
        """,
    "yolox/models/yolox.py": "",
}

_LOAD = """
import json, sys
sys.modules["cv2"] = None if sys.argv[2] == "no-cv2" else type(sys)("cv2")
sys.path.insert(0, sys.argv[3])
import official
print(json.dumps(official.import_official(sys.argv[1]).YOLOX))
"""


@pytest.mark.parametrize("cv2", ["cv2", "no-cv2"])
def test_official_loader_takes_the_helpers_of_releases_after_0_3_0(tmp_path, cv2):
    """The loader gives `yolox.models` the helpers it imports from `yolox.utils`, from their
    files and without the utils package: the 0.3.0 release's two, and `cxcywh2xyxy` and
    `visualize_assign` of later sources (a stub of the latter without OpenCV)."""
    for rel, text in _FAKE.items():
        path = tmp_path / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    here = ROOT / "yolox_jax" / "bench"
    out = subprocess.run([sys.executable, "-c", _LOAD, str(tmp_path / "src"), cv2, str(here)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["iou", "xyxy", "grid", "visualize_assign"]


def test_table_names_the_official_precision():
    from yolox_jax.bench.suite import markdown_table

    entry = {"label": "train step", "batch": 64, "jit": {"median_s": 0.1},
             "torch": {"median_s": 0.2, "dtype": "float16 autocast"}}
    assert "PyTorch precision: float16 autocast (the official --fp16)" in markdown_table(
        {"workloads": {"train": entry}})
    entry["torch"]["dtype"] = "float32"
    assert "PyTorch precision" not in markdown_table({"workloads": {"train": entry}})


def test_summary_reads_the_outputs_with_warnings_after_the_run_summary(tmp_path):
    """scripts/gpu_summary.py: one row per workload and precision (the official side's
    precision beside its time, seconds for the start-up row), and the training run's first
    step, stalls and images/s, also when warnings follow the run's JSON summary in its log."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_summary
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    (tmp_path / "devices.txt").write_text("jax 0.11.2 [CudaDevice(id=0)]\n")
    (tmp_path / "float32").mkdir()
    train = {"label": "train step", "batch": 64,
             "jit": {"median_s": 0.25, "images_per_s": 256.0, "mfu": 0.31, "compile_s": 41.0},
             "torch": {"median_s": 0.5, "dtype": "float32"}, "speedup": {"torch_over_jit": 2.0}}
    startup = {"label": "time to first train step", "batch": 64, "jit": {"median_s": 55.0},
               "torch": {"skipped": "no source"}}
    (tmp_path / "float32" / "bench.json").write_text(
        json.dumps({"workloads": {"train": train, "startup": startup}}))
    (tmp_path / "train.log").write_text(
        "INFO first step done\n{\n  \"step\": 30,\n  \"time_to_first_step_s\": 61.5,\n"
        "  \"stall_s\": 0.0\n}\nUserWarning: resource_tracker: 3 leaked shared_memory objects\n")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "train/images_per_s": v})
                  for s, v in ((5, 120.4), (10, 950.6))) + "\n")
    text = gpu_summary.summary(tmp_path)
    assert text.startswith("# yolox-jax on jax 0.11.2 [CudaDevice(id=0)]")
    assert "| float32 | train step | 64 | 250 ms | 256 | 31 % | 41 s | 500 ms (float32) | 2x |" in text
    assert "| float32 | time to first train step | 64 | 55 s | - | - | - | - | - |" in text
    assert "| bfloat16 | (no bench.json) |" in text
    assert text.rstrip().endswith("first step 61.5 s after the start, stalls 0.0 s, images/s per "
                                  "logged interval (pipeline included): 120, 951")

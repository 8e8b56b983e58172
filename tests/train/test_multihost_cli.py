"""`yolox-jax train` as two processes on localhost (``jax.distributed`` over CPU collectives),
started by the launch scripts' local modes (scripts/launch/): both finish, together they train on
exactly the batches of a one-process run, Orbax checkpoints written together restore, and the EMA
model is evaluated."""
import json
import math
from pathlib import Path

import pytest
from tiny_step import run_launcher

LAUNCH = Path(__file__).resolve().parents[2] / "scripts" / "launch"


SMALL = ["model.name=yolox-tiny", "model.width=0.125", "data.synthetic_train_images=48",
         "data.synthetic_val_images=8", "data.synthetic_image_size=(96,128)",
         "data.input_size=(96,128)", "data.test_size=(96,128)", "data.batch_size=4",
         "data.max_labels=16", "train.max_epoch=2", "train.warmup_epochs=1",
         # No no-aug phase: its L1 term is one more train-step program for every process to
         # compile (test_resume.py covers the phase switch).
         "train.no_aug_epochs=0", "train.steps_per_epoch=3", "run.tensorboard=false",
         "run.log_batch_digests=true", "train.print_interval=1"]


def _rows(path):
    return {r["step"]: r["rows"] for r in map(json.loads, path.read_text().splitlines())}


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/total_loss"] for r in rows if "train/total_loss" in r}


def _one_process_rows(steps):
    """Row digests of the global batches a one-process run of ``SMALL`` trains on (its data
    pipeline, read here in this process: the batches do not depend on the model)."""
    from yolox_jax.config import load_config
    from yolox_jax.train import inputs
    from yolox_jax.train.loop import batch_digest, close_iterator

    cfg = load_config("synthetic", SMALL)
    source, _ = inputs.build_sources(cfg.data)
    iterator = inputs.train_iterator(cfg, source, "aug", cfg.data.batch_size, 0)
    try:
        return {step: batch_digest(next(iterator))[1] for step in range(1, steps + 1)}
    finally:
        close_iterator(iterator)


@pytest.mark.slow
def test_train_cli_on_two_processes(tmp_path):
    """`yolox-jax train` as two processes, started by the SLURM script's local mode (through the
    per-task script that srun runs): both finish; at every step, process 0's rows then process
    1's rows are exactly the global batch a one-process run with the same config trains on
    (images, boxes and every augmentation draw); the Orbax checkpoints written together by both
    are committed and restore, and the EMA model is evaluated. (That the step on a batch split
    over processes equals the step on one device is tests/train/test_multihost.py.)"""
    logs = tmp_path / "logs"
    out, _, (log0, log1) = run_launcher(
        ["bash", str(LAUNCH / "slurm.sbatch"), "--local", "--log-dir", str(logs), "--",
         "-f", "synthetic", *SMALL, f"run.output_dir={tmp_path}", "run.experiment=mp"],
        logs, "task-{}.log")
    run_dir = tmp_path / "mp"
    p0, p1 = _rows(run_dir / "batches.jsonl"), _rows(run_dir / "batches.p1.jsonl")
    one = _one_process_rows(6)
    assert sorted(p0) == sorted(p1) == list(range(1, 7))
    for step in one:
        assert len(p0[step]) == len(p1[step]) == 2
        assert p0[step] + p1[step] == one[step], step
    losses = _losses(run_dir)
    assert sorted(losses) == list(range(1, 7)) and all(map(math.isfinite, losses.values()))
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("AP50" in json.dumps(m) for m in metrics)

    from yolox_jax.train.checkpoint import Checkpointer, read_variables

    ck = Checkpointer(Path(run_dir) / "checkpoints", async_save=False)
    try:
        assert ck.latest_step() == 6
    finally:
        ck.close()
    # Read back on one device of this single process (what eval / predict / fine-tuning do).
    variables, config = read_variables(run_dir / "checkpoints" / "latest")
    assert config["run"]["num_processes"] == 2
    assert len(variables["params"]) > 0
    # Each process's output is in its log file; process 0's also on the launcher's output.
    assert "AP50" in log0 and "AP50" in out
    assert "process 1 of 2" in log1


@pytest.mark.slow
def test_tpu_launcher_local_mode(tmp_path):
    """The Cloud TPU launcher's local mode (the per-worker script every TPU worker runs, with the
    worker number and coordinator a TPU VM provides given instead): two processes train two steps
    together (each on its own half of every global batch), write worker-<i>.log where the
    launcher says, and commit a checkpoint in run.output_dir. The same small config as above, so
    the programs come from the compilation cache; no validation set, so no evaluation, and the
    data loaded in each training process (data.num_workers=0: the same batches)."""
    logs = tmp_path / "logs"
    out, err, (log0, log1) = run_launcher(
        ["bash", str(LAUNCH / "tpu_vm.sh"), "--local", "--log-dir", str(logs), "--",
         "-f", "synthetic", *SMALL, f"run.output_dir={tmp_path}", "run.experiment=tpu",
         "run.max_steps=2", "data.synthetic_val_images=0", "data.num_workers=0"],
        logs, "worker-{}.log", timeout=600)
    assert f"logs in {logs}/worker-<i>.log" in err
    assert log0.startswith("# ") and " process 0: yolox-jax train -f synthetic" in log0
    assert " process 1: " in log1 and "process 1 of 2" in log1
    run_dir = tmp_path / "tpu"
    p0, p1 = _rows(run_dir / "batches.jsonl"), _rows(run_dir / "batches.p1.jsonl")
    assert sorted(p0) == sorted(p1) == [1, 2]
    assert all(len(p0[s]) == len(p1[s]) == 2 and p0[s] != p1[s] for s in (1, 2))

    from yolox_jax.train.checkpoint import Checkpointer

    ck = Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        assert ck.latest_step() == 2
    finally:
        ck.close()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["num_processes"] == 2 and config["run"]["distributed"] == "on"

"""`yolox-jax train` as two processes on localhost (``jax.distributed`` over CPU collectives):
both finish, each reads its own data shard, Orbax checkpoints written together restore, and the
EMA model is evaluated."""
import json
import sys
from pathlib import Path

import pytest
from tiny_step import free_port, run_pair


SMALL = ["model.name=yolox-tiny", "model.width=0.125", "data.synthetic_train_images=48",
         "data.synthetic_val_images=8", "data.synthetic_image_size=(96,128)",
         "data.input_size=(96,128)", "data.test_size=(96,128)", "data.batch_size=4",
         "data.max_labels=16", "train.max_epoch=2", "train.warmup_epochs=1",
         "train.no_aug_epochs=1", "train.steps_per_epoch=3", "run.tensorboard=false",
         "run.log_batch_digests=true", "run.distributed=on", "run.num_processes=2"]


@pytest.mark.slow
def test_train_cli_on_two_processes(tmp_path):
    """`yolox-jax train` as two processes: both finish, each reads its own data shard, the
    Orbax checkpoints written together by both are committed and restore, and the EMA model is
    evaluated."""
    port = free_port()
    results = run_pair(lambda pid: [
        sys.executable, "-m", "yolox_jax.cli", "train", *SMALL, f"run.output_dir={tmp_path}",
        "run.experiment=mp", f"run.coordinator_address=127.0.0.1:{port}", f"run.process_id={pid}"])
    run_dir = tmp_path / "mp"
    digests = [[json.loads(line) for line in (run_dir / name).read_text().splitlines()]
               for name in ("batches.jsonl", "batches.p1.jsonl")]
    assert [r["step"] for r in digests[0]] == list(range(6)) == [r["step"] for r in digests[1]]
    # Different shards: no batch of process 1 equals the batch of process 0 at the same step.
    assert all(a["crc"] != b["crc"] for a, b in zip(*digests))
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
    assert "AP50" in results[0][1] + results[0][2]

"""The launch scripts (scripts/launch/) with stand-ins for the cluster tools (gcloud, scontrol,
srun, uv) and for Python: what each starts, with which arguments and environment, and where
its logs go. Seconds in all; the real training runs through these scripts are in
test_multihost_cli.py."""
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "scripts" / "launch"
SCRIPTS = ["tpu_vm.sh", "tpu_worker.sh", "slurm.sbatch", "slurm_task.sh"]

# Stands in for Python: prints its arguments and the environment the scripts set; `-c` code
# runs in the real Python when it picks a port (yj_free_port), and succeeds otherwise.
FAKE_PYTHON = r"""#!/usr/bin/env bash
if [[ $1 == -c ]]; then
  case $2 in *socket*) exec "$REAL_PYTHON" "$@" ;; *) echo ready; exit 0 ;; esac
fi
printf 'ARG %s\n' "$@"
echo "ENV CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>} SLURM_LOCALID=${SLURM_LOCALID-<unset>}"
"""

# gcloud: records its arguments (one call per line, fields tab-separated); `scp SRC TPU:DEST`
# copies SRC into the home folder of workers 0 and 1 ($FAKE_HOMES/w<i>); `ssh --command=C` runs
# C in bash in each worker's home folder, both at once, as on a TPU VM (the worker number comes
# from the environment instead of the metadata server).
FAKE_GCLOUD = r"""#!/usr/bin/env bash
(IFS=$'\t'; echo "$*") >> "$FAKE_HOMES/gcloud.log"
if [[ $4 == scp ]]; then
  for w in 0 1; do mkdir -p "$FAKE_HOMES/w$w"; cp "$5" "$FAKE_HOMES/w$w/${6#*:}"; done
  exit 0
fi
cmd=""
for a in "$@"; do case $a in --command=*) cmd=${a#--command=} ;; esac; done
pids=()
for w in 0 1; do
  mkdir -p "$FAKE_HOMES/w$w"
  (cd "$FAKE_HOMES/w$w" && HOME=$PWD YOLOX_JAX_WORKER_ID=$w bash -c "$cmd") &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""

# uv: `uv venv ... DIR` makes DIR/bin/python (the fake Python); every call is recorded.
FAKE_UV = r"""#!/usr/bin/env bash
echo "uv $*" >> "$HOME/uv.log"
if [[ $1 == venv ]]; then mkdir -p "${@: -1}/bin"; ln -s "$FAKE_PYTHON" "${@: -1}/bin/python"; fi
"""

FAKE_SCONTROL = r"""#!/usr/bin/env bash
[[ "$*" == "show hostnames gpu-a[07-08]" ]] || exit 1
printf 'gpu-a07\ngpu-a08\n'
"""

# srun: records its arguments, then runs the command as 2 tasks of one node that sees 4 GPUs.
FAKE_SRUN = r"""#!/usr/bin/env bash
echo "srun $*" > "$FAKE_HOMES/srun.log"
while [[ $1 == --* ]]; do shift; done
pids=()
for t in 0 1; do
  SLURM_PROCID=$t SLURM_LOCALID=$t SLURM_NTASKS=2 CUDA_VISIBLE_DEVICES=0,1,2,3 "$@" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""

TRAIN_ARGS = ["-f", "synthetic", "data.input_size=(96,128)", "run.experiment=a b",
              "run.output_dir=/shared/runs"]


def _tool(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def env(tmp_path):
    """Environment with the stand-ins first on PATH and the fake Python as YOLOX_JAX_PYTHON."""
    bin_dir = tmp_path / "bin"
    fake_python = _tool(bin_dir, "python", FAKE_PYTHON)
    for name, text in (("gcloud", FAKE_GCLOUD), ("uv", FAKE_UV), ("scontrol", FAKE_SCONTROL),
                       ("srun", FAKE_SRUN)):
        _tool(bin_dir, name, text)
    homes = tmp_path / "homes"
    homes.mkdir()
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLURM_", "YOLOX_JAX_", "TPU_", "CUDA_"))}
    return dict(clean, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                YOLOX_JAX_PYTHON=str(fake_python), FAKE_PYTHON=str(fake_python),
                REAL_PYTHON=sys.executable, FAKE_HOMES=str(homes))


def _run(argv, env, cwd, **extra):
    return subprocess.run(["bash", *map(str, argv)], env=dict(env, **extra), cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def _args(log: str) -> list[str]:
    return [line[4:] for line in log.splitlines() if line.startswith("ARG ")]


def test_scripts_are_executable_strict_and_parse():
    for name in SCRIPTS + ["lib.sh"]:
        path = LAUNCH / name
        if name != "lib.sh":
            assert path.stat().st_mode & stat.S_IXUSR, f"{name} is not executable"
            assert "\nset -euo pipefail\n" in path.read_text(), name
        subprocess.run(["bash", "-n", str(path)], check=True)
    if shutil.which("shellcheck"):
        out = subprocess.run(["shellcheck", "-x", *(f"scripts/launch/{n}" for n in SCRIPTS)],
                             cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout


def test_slurm_job_starts_a_task_per_process_with_its_gpu_and_rank(env, tmp_path):
    """sbatch runs a copy of the script from its spool folder, in the submit folder: it finds
    the per-task script there, takes the coordinator from the first node of the job and a port
    from the job id, and srun starts the task script, which keeps one GPU per process and adds
    the process's place in the run to the arguments, unchanged otherwise."""
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy(LAUNCH / "slurm.sbatch", spool / "slurm_script")
    r = _run([spool / "slurm_script", *TRAIN_ARGS], env, tmp_path, SLURM_JOB_ID="4242",
             SLURM_JOB_NAME="yolox-jax", SLURM_JOB_NODELIST="gpu-a[07-08]", SLURM_NTASKS="2",
             SLURM_CPUS_PER_TASK="8", SLURM_SUBMIT_DIR=str(ROOT))
    assert r.returncode == 0, r.stderr
    srun = (tmp_path / "homes" / "srun.log").read_text()
    assert srun.startswith("srun --kill-on-bad-exit=1 --cpus-per-task=8 bash ")
    assert srun.split()[4] == str(LAUNCH / "slurm_task.sh")
    logs = tmp_path / "yolox-jax-logs" / "yolox-jax-4242"
    for rank in (0, 1):
        log = (logs / f"task-{rank}.log").read_text()
        assert _args(log) == ["-m", "yolox_jax.cli", "train", *TRAIN_ARGS, "run.distributed=on",
                              "run.coordinator_address=gpu-a07:24242", "run.num_processes=2",
                              f"run.process_id={rank}"]
        # Its own GPU, and JAX does not see SLURM_LOCALID (it would pick that GPU again).
        assert f"ENV CUDA_VISIBLE_DEVICES={rank} SLURM_LOCALID=<unset>" in log
    assert "ARG run.process_id=0" in r.stdout and "ARG run.process_id=1" not in r.stdout


@pytest.mark.parametrize("visible,local_id,expected", [
    ("0,1,2,3", "2", "2"),      # every task sees the node's GPUs: the SLURM_LOCALID-th
    ("4,5,6,7", "1", "5"),
    ("5", "3", "5"),            # SLURM bound one GPU to the task
    (None, "1", "1"),           # nothing set
])
def test_slurm_task_keeps_one_gpu(env, tmp_path, visible, local_id, expected):
    extra = dict(SLURM_PROCID="3", SLURM_NTASKS="8", SLURM_LOCALID=local_id,
                 YOLOX_JAX_COORDINATOR="n1:20001", YOLOX_JAX_LOG_DIR=str(tmp_path / "logs"))
    if visible is not None:
        extra["CUDA_VISIBLE_DEVICES"] = visible
    r = _run([LAUNCH / "slurm_task.sh", "x.y=1"], env, tmp_path, **extra)
    assert r.returncode == 0, r.stderr
    assert f"ENV CUDA_VISIBLE_DEVICES={expected} " in (tmp_path / "logs" / "task-3.log").read_text()


def test_slurm_task_refuses_a_gpu_it_cannot_see(env, tmp_path):
    r = _run([LAUNCH / "slurm_task.sh"], env, tmp_path, SLURM_PROCID="3", SLURM_NTASKS="4",
             SLURM_LOCALID="3", CUDA_VISIBLE_DEVICES="0,1", YOLOX_JAX_COORDINATOR="n1:20001")
    assert r.returncode == 2 and "only 2 GPUs visible" in r.stderr


def test_tpu_launcher_copies_installs_and_starts_every_worker(env, tmp_path):
    """Copies the checkout to every worker, installs it there (uv, extra [tpu]), then starts the
    per-worker script on all workers with one ssh call: each trains with the arguments
    unchanged plus run.distributed=on (a TPU VM tells JAX the rest) and writes its log."""
    r = _run([LAUNCH / "tpu_vm.sh", "--tpu", "my-tpu", "--zone", "us-central2-b",
              "--log-dir", "runlogs", "--", *TRAIN_ARGS], env, tmp_path)
    assert r.returncode == 0, r.stderr
    homes = tmp_path / "homes"
    calls = [line.split("\t") for line in (homes / "gcloud.log").read_text().splitlines()]
    assert [c[:5] for c in calls] == [["compute", "tpus", "tpu-vm", "scp", calls[0][4]]] + \
        [["compute", "tpus", "tpu-vm", "ssh", "my-tpu"]] * 2
    assert all("--worker=all" in c and "--zone=us-central2-b" in c for c in calls)
    for w in (0, 1):
        home = homes / f"w{w}"
        assert (home / "yolox-jax" / "yolox_jax" / "__init__.py").is_file()
        assert not (home / "yolox-jax" / "tests").exists()
        uv = (home / "uv.log").read_text()
        assert f"-e {home}/yolox-jax[tpu]" in uv
        log = (home / "runlogs" / f"worker-{w}.log").read_text()
        assert _args(log) == ["-m", "yolox_jax.cli", "train", *TRAIN_ARGS, "run.distributed=on"]
    assert "ARG run.distributed=on" in r.stdout  # worker 0's output is shown here


@pytest.mark.parametrize("launcher", [["tpu_vm.sh", "--tpu", "t"], ["slurm.sbatch", "--local"]])
def test_launchers_refuse_a_bucket_url(env, tmp_path, launcher):
    """yolox-jax writes checkpoints and logs with file system calls: a URL is refused before
    anything starts."""
    r = _run([LAUNCH / launcher[0], *launcher[1:], "run.output_dir=gs://bucket/runs"], env,
             tmp_path)
    assert r.returncode == 2 and "Cloud Storage FUSE" in r.stderr
    assert not (tmp_path / "homes" / "gcloud.log").exists()
    assert not (tmp_path / "yolox-jax-logs").exists()

"""The training loop around the pure train step: data, phases, multiscale, logging,
evaluation, checkpoints, resume and non-finite detection."""
from __future__ import annotations

import importlib
import json
import logging
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax import config as config_lib
from yolox_jax.errors import UserError
from yolox_jax.models.blocks import CONV_CHOICES
from yolox_jax.models.yolox import build_model
from yolox_jax.train import inputs
from yolox_jax.train.checkpoint import Checkpointer, abstract_like, read_variables
from yolox_jax.train.programs import BackgroundCompiler, first_uses, multiscale_size, train_key
from yolox_jax.train.schedule import yolox_warm_cos_lr
from yolox_jax.train.sharding import (jit_train_step, make_mesh, maybe_initialize_distributed,
                                      per_process_batch, replicated, shard_batch,
                                      wait_for_processes)
from yolox_jax.train.state import create_train_state, eval_variables, load_matching, make_optimizer
from yolox_jax.train.step import bind_train_step

log = logging.getLogger("yolox_jax.train")


class NonFiniteLossError(RuntimeError):
    """Raised when a step produced a non-finite loss or gradient; names the step and batch file."""


@dataclass
class Plan:
    """Static facts of a run derived from the config."""

    global_batch: int
    steps_per_epoch: int
    total_steps: int
    no_aug_start_epoch: int  # first epoch without mosaic/mixup and with L1 (official: 16 epochs)
    base_lr: float


def make_plan(cfg: config_lib.Config, dataset_len: int) -> Plan:
    t = cfg.train
    steps = t.steps_per_epoch or dataset_len // cfg.data.batch_size
    if steps <= 0:
        raise UserError(f"dataset of {dataset_len} images gives no full batch of data.batch_size="
                         f"{cfg.data.batch_size}")
    # The official trainer closes mosaic and enables L1 when epoch + 1 == max_epoch - no_aug_epochs,
    # i.e. one epoch earlier than the lr schedule's flat tail.
    no_aug_start = max(t.max_epoch - t.no_aug_epochs - 1, 0) if t.no_aug_epochs > 0 else t.max_epoch
    return Plan(global_batch=cfg.data.batch_size, steps_per_epoch=steps,
                total_steps=steps * t.max_epoch, no_aug_start_epoch=no_aug_start,
                base_lr=t.basic_lr_per_img * cfg.data.batch_size)


def conv_choice(conv: str):
    """``model.conv`` as ``build_model`` takes it: "auto" is "cpu" on a CPU backend and "xla"
    elsewhere; "module:function" imports that function."""
    if conv == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "xla"
    if conv in CONV_CHOICES:
        return conv
    if ":" in conv:
        module, _, name = conv.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise UserError(f"model.conv={conv!r}: cannot import {name} from {module}: {err}") from err
    raise UserError(f"model.conv={conv!r}: expected auto, {', '.join(CONV_CHOICES)} or "
                     "module:function")


def model_from_config(cfg: config_lib.Config):
    overrides = {k: getattr(cfg.model, k) for k in ("depth", "width", "act")
                 if getattr(cfg.model, k) is not None}
    if cfg.train.compute_dtype == "bfloat16":
        overrides["dtype"] = jnp.bfloat16
    return build_model(cfg.model.name, num_classes=cfg.model.num_classes,
                       conv=conv_choice(cfg.model.conv), **overrides)


# The counts of a run and their smallest valid values (0 where 0 means "off" or "automatic"): a
# value below would train zero steps, divide by zero or never log, without saying why.
COUNT_MINIMUMS = {
    "data.batch_size": 1, "data.max_labels": 1, "data.num_workers": 0,
    "data.multiscale_admit_steps": 0,
    "train.max_epoch": 1, "train.warmup_epochs": 0, "train.no_aug_epochs": 0,
    "train.steps_per_epoch": 0, "train.print_interval": 1,
    "eval.interval": 1, "eval.batch_size": 1, "eval.max_detections": 1,
    "run.keep_checkpoints": 1, "run.checkpoint_every_epochs": 1, "run.max_steps": 0,
}


def preflight(cfg: config_lib.Config) -> None:
    """Check what the user gave before anything compiles, raising a UserError that names the
    key or file: sizes, the model, the data (read once here; its problems are counted and
    reported), the class count, the checkpoint to start from."""
    d = cfg.data
    for key in ("input_size", "test_size"):
        size = tuple(getattr(d, key))
        if len(size) != 2 or any(v <= 0 or v % 32 for v in size):
            raise UserError(f"expects two positive multiples of 32, got {size}", f"data.{key}")
    for key, low in COUNT_MINIMUMS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value < low:
            raise UserError(f"must be at least {low}, got {value}", key)
    try:
        model_from_config(cfg)
    except ValueError as err:
        raise UserError(str(err), "model.name / model.*") from None
    train_source, val_source = inputs.build_sources(d)
    if val_source is not None:
        check_same_categories(train_source, val_source)
    if cfg.model.num_classes != train_source.num_classes:
        raise UserError(f"is {cfg.model.num_classes} but the training data has "
                        f"{train_source.num_classes} classes ({', '.join(train_source.class_names[:8])}"
                        f"{' ...' if train_source.num_classes > 8 else ''})", "model.num_classes")
    make_plan(cfg, len(train_source))
    if cfg.run.init_from and not Path(cfg.run.init_from).exists():
        raise UserError("no such checkpoint to start from", cfg.run.init_from)
    check_assigner(cfg)
    check_no_earlier_run(run_dir_of(cfg), cfg.run.resume)
    ensure_writable(run_dir_of(cfg))


def check_same_categories(train_source, val_source) -> None:
    """The validation data has the training data's categories (UserError naming the validation
    annotations otherwise): evaluation writes the model's class i as the validation source's
    i-th category id, so any other category list would score detections against the wrong
    categories."""
    def categories(source):
        ids = list(getattr(source, "category_ids", None) or range(1, source.num_classes + 1))
        return dict(zip(ids, source.class_names))

    train, val = categories(train_source), categories(val_source)
    if list(train) == list(val):
        return
    describe = lambda cats, other: ", ".join(  # noqa: E731
        f"{name!r} (id {i})" for i, name in cats.items() if i not in other) or "none"
    raise UserError(f"the validation categories are not the training ones (only in validation: "
                    f"{describe(val, train)}; only in training: {describe(train, val)})",
                    getattr(val_source, "ann_file", "the validation data"))


def loss_options(cfg) -> dict:
    """``yolox_loss`` keyword options from ``train.*``: the assigner by name with its options
    passed unchanged (``train.center_radius`` added for the SimOTA/OTA family unless given)."""
    options = dict(cfg.train.assigner_options)
    if cfg.train.assigner in ("simota", "ota", "ota_soft"):
        options.setdefault("center_radius", cfg.train.center_radius)
    return dict(iou_loss_type=cfg.train.iou_loss_type, obj_target=cfg.train.obj_target,
                assigner=cfg.train.assigner, assign_kwargs=options)


def check_assigner(cfg) -> None:
    """The assigner exists and accepts the configured options (UserError naming the key)."""
    import inspect

    from yolox_jax.assign.registry import get_assigner

    fn = get_assigner(cfg.train.assigner)
    options = loss_options(cfg)["assign_kwargs"]
    try:
        inspect.signature(fn).bind_partial(*([None] * 8), **options)
    except TypeError as err:
        raise UserError(f"{err} (assigner {cfg.train.assigner!r})",
                        "train.assigner_options") from None


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and write a file in it, or raise a UserError naming it."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f"the output folder is not writable: {err.strerror or err}",
                        folder) from None


def run_dir_of(cfg: config_lib.Config) -> Path:
    """The run's folder: ``run.output_dir / (run.experiment or model.name)``."""
    return Path(cfg.run.output_dir) / (cfg.run.experiment or cfg.model.name)


def check_no_earlier_run(run_dir: Path, resume: bool) -> None:
    """Raise a UserError naming ``run_dir`` if a run that does not resume would start where
    another run's checkpoints are: its saves would collide with their steps, and its ``best/``
    would be judged against their AP. Nothing to check when resuming."""
    if resume:
        return
    steps = sorted(int(p.name) for sub in ("latest", "best")
                   for p in (run_dir / "checkpoints" / sub).glob("*")
                   if p.name.isdigit() and p.is_dir())
    if steps:
        raise UserError(f"already holds the checkpoints of a run (up to step {steps[-1]}): "
                        "continue it with --resume (run.resume=true), train into another "
                        "run.experiment or run.output_dir, or delete the folder", run_dir)


# The input the initialiser traces the model with. The variables' shapes and values do not
# depend on the input size (the model is fully convolutional), so one fixed 64x64 probe gives one
# init program per model, whatever the run's input size, and the persistent cache shares it.
INIT_PROBE_HW = (64, 64)


def _init_fn(model, mesh):
    """The jitted initialiser: an rbg key -> the model's variables, replicated over ``mesh``."""
    h, w = INIT_PROBE_HW
    return jax.jit(lambda r: model.init(r, jnp.zeros((1, h, w, 3), jnp.float32), train=False),
                   out_shardings=replicated(mesh))


def _init_key(cfg):
    # rbg keys: XLA:CPU compiles the init of ~300 parameters 2x faster than with threefry.
    return jax.random.key(cfg.train.seed, impl="rbg")


def initial_variables(cfg, model, mesh, init_fn=None):
    """The variables a new run starts from: ``init_fn`` (default ``_init_fn(model, mesh)``) of
    the run's seed, then the weights of ``run.init_from`` where it names some."""
    variables = (init_fn or _init_fn(model, mesh))(_init_key(cfg))
    if cfg.run.init_from:
        variables, skipped = load_pretrained(cfg, variables)
        for line in skipped:
            log.warning("fine-tune: skipped %s", line)
    return variables


def initial_state(cfg, model, tx, mesh, init_fn=None):
    """The train state a new run starts from: ``initial_variables`` and a fresh optimiser
    state, replicated over ``mesh``."""
    return jax.jit(lambda v: create_train_state(v, tx), out_shardings=replicated(mesh))(
        initial_variables(cfg, model, mesh, init_fn))


def abstract_state(cfg, model, tx, mesh, init_fn=None):
    """Shapes, dtypes and shardings of ``initial_state`` (and of any checkpoint of the run),
    from a trace only: nothing is compiled or run. Give the ``init_fn`` that ``initial_state``
    will use, and it traces the model once for both."""
    variables = jax.eval_shape(init_fn or _init_fn(model, mesh), _init_key(cfg))
    return abstract_like(jax.eval_shape(lambda v: create_train_state(v, tx), variables),
                         replicated(mesh))


def load_pretrained(cfg, variables):
    """Weights from an official ``.pth`` or one of our checkpoints; loads every leaf whose shape
    matches (e.g. all but the class predictions when the class count differs)."""
    path = Path(cfg.run.init_from)
    if path.suffix in (".pth", ".pt"):
        source = _official_variables(path, cfg)
    else:
        source, _ = read_variables(path, use_ema=True)
    params, skipped_p = load_matching(variables["params"], source["params"])
    stats, skipped_s = load_matching(variables["batch_stats"], source.get("batch_stats", {}))
    return {"params": params, "batch_stats": stats}, skipped_p + skipped_s


def _official_variables(path: Path, cfg):
    """Convert an official checkpoint with whatever class count it was trained for."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"reading {path} needs PyTorch: pip install torch") from e
    from yolox_jax.convert import from_torch_state_dict

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    key = next((k for k in sd if k.endswith("head.cls_preds.0.weight")), None)
    if key is None:
        raise UserError(f"{path}: no head.cls_preds.0.weight, not a YOLOX checkpoint")
    overrides = {k: getattr(cfg.model, k) for k in ("depth", "width", "act")
                 if getattr(cfg.model, k) is not None}
    return from_torch_state_dict(sd, cfg.model.name, int(sd[key].shape[0]), **overrides)


def batch_digest(batch: dict) -> tuple[int, list[int]]:
    """CRC32 of a host batch, whole and row by row: ``(crc, [crc of row r])`` over its arrays in
    key order. A 2-process run's rows (process 0's, then process 1's) equal a 1-process run's."""
    keys = sorted(batch)
    crc, rows = 0, []
    for key in keys:
        crc = zlib.crc32(np.ascontiguousarray(batch[key]).tobytes(), crc)
    for r in range(len(batch[keys[0]])):
        row = 0
        for key in keys:
            row = zlib.crc32(np.ascontiguousarray(batch[key][r]).tobytes(), row)
        rows.append(row)
    return crc, rows


def _log_digest(run_dir: Path, step: int, batch: dict):
    """``batch_digest`` of this process's host batch for step ``step`` (1-based), appended to
    batches.jsonl (process 0) or batches.p<i>.jsonl (the others)."""
    crc, rows = batch_digest(batch)
    i = jax.process_index()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ("batches.jsonl" if i == 0 else f"batches.p{i}.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, "crc": crc, "rows": rows}) + "\n")


class MetricLog:
    """Scalars to TensorBoard (process 0 only) and a JSON-lines file.

    A run resumed from step ``start_step`` continues one record: ``metrics.jsonl`` drops the
    lines of later steps (written before the interruption, about to be written again), and
    TensorBoard is told to purge its events after ``start_step``.
    """

    def __init__(self, run_dir: Path, tensorboard: bool, start_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.writer = None
        self.file = None
        if self.enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            path = run_dir / "metrics.jsonl"
            if start_step and path.exists():
                kept = [line for line in path.read_text().splitlines()
                        if line.strip() and json.loads(line).get("step", 0) <= start_step]
                path.write_text("".join(line + "\n" for line in kept))
            elif not start_step and path.exists():
                path.unlink()            # a fresh run in an old folder starts a fresh record
            self.file = open(path, "a")
            if tensorboard:
                from tensorboardX import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"),
                                            purge_step=start_step + 1 if start_step else None)

    def write(self, step: int, scalars: dict):
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, float(v), step)

    def close(self):
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


def train(cfg: config_lib.Config, *, compile_only: bool = False, compiler=None,
          on_ready=None) -> dict:
    """Run training as configured; returns the last metrics and evaluation, and
    ``time_to_first_step_s`` and ``stall_s`` (seconds waited for programs compiled ahead).

    The first step's program is compiled first; the other input sizes and the evaluation
    program compile in a background thread in the order the run needs them
    (:mod:`yolox_jax.train.programs`). ``compiler``: something else that makes them ready (the
    command line's compile child, :class:`yolox_jax.cpu.precompile.ChildCompiler`).

    ``compile_only``: build everything, compile those programs in that order, calling
    ``on_ready(name)`` after each, then return ``{"compiled": [names]}`` without training (what
    the compile child runs)."""
    t_begin = time.perf_counter()
    r = cfg.run
    maybe_initialize_distributed(r.distributed, r.coordinator_address, r.num_processes, r.process_id)
    run_dir = run_dir_of(cfg)
    check_no_earlier_run(run_dir, r.resume)
    mesh = make_mesh()
    train_source, val_source = inputs.build_sources(cfg.data)
    if cfg.model.num_classes != train_source.num_classes:
        raise UserError(f"is {cfg.model.num_classes} but the training data has "
                        f"{train_source.num_classes} classes", "model.num_classes")
    plan = make_plan(cfg, len(train_source))
    local_batch = per_process_batch(plan.global_batch, mesh)
    model = model_from_config(cfg)
    # The learning rate is a run-time input of the step (computed here on the host), so the
    # compiled program does not depend on the schedule.
    tx = make_optimizer(momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay)
    init_fn = _init_fn(model, mesh)
    shapes = abstract_state(cfg, model, tx, mesh, init_fn)

    from yolox_jax.data import PipelineStats

    data_stats = PipelineStats("train data", train_source, cfg.data.max_labels)
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=r.keep_checkpoints)
    checkpointer.check_space(shapes)  # room for one checkpoint, before anything compiles
    start_step, best_ap, meta = 0, float("-inf"), {}
    phase_of = lambda epoch: "no_aug" if epoch >= plan.no_aug_start_epoch else "aug"  # noqa: E731
    new_state = None  # the future of a new run's state
    if r.resume and checkpointer.latest_step() is not None:
        # The newest step that reads and matches its checksums (damaged ones are skipped). A
        # resumed run compiles no initialiser.
        restored = checkpointer.restore(shapes)
        meta = restored["meta"]
        phase = meta["phase"]
        state, start_step = restored["state"], int(meta["step"])
        # Batch i of the stream depends only on (config, i) and step s trains on batch s, in
        # either phase: the data restarts from the step count alone (whatever phase, worker
        # count or position in a phase's iterator the checkpoint was written at).
        iterator = inputs.train_iterator(cfg, train_source, phase, local_batch, start_step,
                                         stats=data_stats)
        best_ap = float(meta.get("best_ap", best_ap))
        log.info("resumed from step %d (epoch %d, phase %s)", start_step,
                 start_step // plan.steps_per_epoch, phase)
    else:
        if r.resume:
            log.warning("--resume: no checkpoint in %s; starting a new run",
                        run_dir / "checkpoints")
        # A new run's state is made in a thread, so that the initialiser compiles while the
        # data pipeline starts and the first step's program compiles: the first step waits for
        # the longer of the two compiles, not for their sum.
        report_init = compile_only and on_ready is not None
        if report_init:
            on_ready = _serialised(on_ready)  # the initialiser's thread reports "init"

        def make_state():
            if compiler is not None:
                compiler.wait("init", count=False)  # the compile child has it cached
            out = initial_state(cfg, model, tx, mesh, init_fn)
            if report_init:
                on_ready("init")
            return out

        pool = ThreadPoolExecutor(1, thread_name_prefix="yolox_jax-init")
        new_state = pool.submit(make_state)
        pool.shutdown(wait=False)  # the thread ends with its one job
        phase = phase_of(0)
        iterator = inputs.train_iterator(cfg, train_source, phase, local_batch,
                                         stats=data_stats)

    step_fn = train_step_fn(cfg, model, tx, mesh)
    prepare = inputs.batch_preparer(cfg, mesh)  # sharded (and, if so configured, augmented)
    host_batch = next(iterator)  # its shapes are those of every batch of the run
    abstract_batch = _abstract(prepare(host_batch))
    if compile_only:
        end_step = plan.total_steps if not r.max_steps else min(plan.total_steps, r.max_steps)
        close_iterator(iterator)
        return compile_programs(cfg, plan, model, shapes, step_fn, abstract_batch, val_source,
                                range(start_step, end_step), on_ready, init=new_state)
    release = heap_release()
    compiler = compiler if compiler is not None else BackgroundCompiler(release=release)
    jobs = _program_jobs(cfg, model, shapes, step_fn, abstract_batch, val_source)
    first = train_key(multiscale_size(cfg, start_step))
    compiler.submit(first, jobs(first))
    if new_state is not None:
        state = new_state.result()
    if cfg.train.max_minutes > 0:
        if start_step:
            recorded = config_lib.from_dict(json.loads((run_dir / "config.json").read_text()))
            fit_keys = {k: getattr(recorded.train, k) for k in _FITTED_KEYS}
        else:
            compiler.wait(first, count=False)
            seconds = time_steps(cfg, train_source, local_batch, state, step_fn, mesh, prepare=prepare)
            fit_keys = fit_schedule(cfg, plan, seconds)
        for key, value in fit_keys.items():
            setattr(cfg.train, key, value)
        cfg.eval.interval = eval_interval(cfg.train.max_epoch)
        plan = make_plan(cfg, len(train_source))
    lr_fn = yolox_warm_cos_lr(plan.base_lr, plan.steps_per_epoch, cfg.train.max_epoch,
                              warmup_epochs=cfg.train.warmup_epochs,
                              no_aug_epochs=cfg.train.no_aug_epochs,
                              min_lr_ratio=cfg.train.min_lr_ratio, warmup_lr=cfg.train.warmup_lr,
                              xp=np)
    end_step = plan.total_steps if not r.max_steps else min(plan.total_steps, r.max_steps)
    for _, key in first_uses(cfg, range(start_step, end_step),
                             eval_steps(cfg, plan, start_step, end_step, val_source)):
        compiler.submit(key, jobs(key))  # in the order the run needs them
    metric_log = MetricLog(run_dir, r.tensorboard, start_step)
    cfg_dict = config_lib.to_dict(cfg)
    if jax.process_index() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config_lib.dumps(cfg))

    from tqdm.auto import tqdm

    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=end_step, initial=start_step, disable=jax.process_index() != 0,
               dynamic_ncols=True, desc="train", mininterval=1.0)
    # Log lines go above the bar, not through it.
    redirect = logging_redirect_tqdm()
    redirect.__enter__()
    last, pending, evaluation, first_step_s, last_size = {}, None, {}, None, None
    # The next batch is prepared and its step dispatched while a step runs, except on a tuned
    # CPU heap: there the allocations made meanwhile keep a second block of a step's
    # temporaries resident (docs/perf-notes.md), so each step is waited for.
    one_at_a_time = release is not None
    # The data counted before the loop (its first batch) belongs to the first epoch's count.
    epoch_counts: dict = {}
    t_images, t_start = 0, time.perf_counter()

    def check(pending):
        """Fetch a finished step's metrics (one step late, so the host never stalls the device;
        at once on a tuned CPU heap)."""
        step_idx, metrics, batch = pending
        host = jax.device_get(metrics)
        if host["nonfinite"]:
            bad = run_dir / f"nonfinite_batch_step{step_idx + 1}.npz"
            np.savez_compressed(bad, **{k: np.asarray(v) for k, v in batch.items()})
            raise NonFiniteLossError(
                f"non-finite loss or gradient at step {step_idx + 1} (epoch "
                f"{step_idx // plan.steps_per_epoch + 1}); "
                f"the state was not updated; the batch is saved in {bad}; losses: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in host.items()))
        return host

    try:
        for step in range(start_step, end_step):
            epoch = step // plan.steps_per_epoch
            if phase_of(epoch) != phase:
                phase = phase_of(epoch)
                log.info("epoch %d: no-aug phase (mosaic/mixup off, L1 on)", epoch)
                close_iterator(iterator)  # saves read its state synchronously, so none needs it
                iterator = inputs.train_iterator(cfg, train_source, phase, local_batch, step,
                                                stats=data_stats)
                if step == start_step:
                    host_batch = next(iterator)
            if step > start_step:
                host_batch = next(iterator)
            if r.log_batch_digests:
                _log_digest(run_dir, step + 1, host_batch)
            batch = prepare(host_batch)
            size = multiscale_size(cfg, step)
            if size != last_size and pending is not None:
                release_between_programs(pending[1])
            last_size = size
            compiler.wait(train_key(size), count=first_step_s is not None)
            state, metrics = step_fn(state, batch, size, np.bool_(phase == "no_aug"),
                                     np.float32(lr_fn(step)))
            if first_step_s is None:
                jax.block_until_ready(metrics)
                first_step_s = time.perf_counter() - t_begin
                log.info("first step done %.1f s after the start", first_step_s)
            if pending is not None and not one_at_a_time:
                last = check(pending)
            pending = (step, metrics, host_batch)
            if one_at_a_time:
                last = check(pending)
            checkpointer.raise_if_failed()  # a background save that failed stops the run now
            t_images += plan.global_batch
            if (step + 1) % cfg.train.print_interval == 0 or step + 1 == end_step:
                if not one_at_a_time:  # else fetched already
                    last = check(pending)
                elapsed = time.perf_counter() - t_start
                ips = t_images / max(elapsed, 1e-9)
                bar.set_postfix(loss=f"{last['total_loss']:.3f}", iou=f"{last['iou_loss']:.3f}",
                                obj=f"{last['conf_loss']:.3f}", cls=f"{last['cls_loss']:.3f}",
                                lr=f"{last['lr']:.2e}", img_s=f"{ips:.1f}", size=f"{size[0]}x{size[1]}")
                metric_log.write(step + 1, {f"train/{k}": v for k, v in last.items()}
                                 | {"train/images_per_s": ips, "train/input_height": size[0],
                                    "train/input_width": size[1]})
                t_images, t_start = 0, time.perf_counter()
            bar.update(1)

            done_epoch = (step + 1) % plan.steps_per_epoch == 0
            is_last = step + 1 == end_step
            if done_epoch or is_last:
                epoch_done = (step + 1) // plan.steps_per_epoch
                problems = data_stats.summary(since=epoch_counts)
                if problems:
                    log.warning("epoch %d data: %s", epoch_done + (not done_epoch), problems)
                epoch_counts = data_stats.as_dict()
                want_eval = val_source is not None and evaluates_after(cfg, plan, step, end_step)
                if want_eval:
                    compiler.wait("eval")
                    release_between_programs(pending[1])
                    evaluation = evaluate_state(cfg, model, state, val_source)
                    last_size = None  # the next step runs after another program
                    evaluation["AP50_95"], evaluation["AP50"] = agree_across_processes(
                        [evaluation["AP50_95"], evaluation["AP50"]])
                    metric_log.write(step + 1, {"val/COCOAP50_95": evaluation["AP50_95"],
                                                "val/COCOAP50": evaluation["AP50"]})
                    log.info("step %d: AP50:95 %.4f AP50 %.4f", step + 1, evaluation["AP50_95"],
                             evaluation["AP50"])
                improved = want_eval and evaluation["AP50_95"] > best_ap
                best_ap = evaluation["AP50_95"] if improved else best_ap
                meta = {"step": step + 1, "epoch": epoch_done, "phase": phase, "best_ap": best_ap}
                if improved:
                    checkpointer.save_best(step + 1, state, cfg_dict, meta, best_ap)
                if is_last or epoch_done % r.checkpoint_every_epochs == 0:
                    checkpointer.save(step + 1, state, iterator, cfg_dict, meta, force=is_last)
        if pending is not None:
            last = check(pending)
        problems = data_stats.summary()
        if problems:
            log.warning("data over the run: %s", problems)
        if compiler.stalls:
            log.info("waited %.1f s in all for programs compiled ahead: %s (a higher "
                     "data.multiscale_admit_steps lets sizes join later)", compiler.stall_s,
                     ", ".join(f"{k} {w:.1f} s" for k, w in compiler.stalls))
    finally:
        compiler.close()
        redirect.__exit__(None, None, None)
        bar.close()
        try:
            checkpointer.wait()  # the last save; CheckpointSaveError if it failed
        finally:
            checkpointer.close()
        close_iterator(iterator)
        metric_log.close()
    return {"train": last, "eval": evaluation, "step": int(jax.device_get(state.step)),
            "run_dir": str(run_dir), "state": state, "time_to_first_step_s": first_step_s,
            "stall_s": compiler.stall_s}


def heap_release():
    """:func:`yolox_jax.cpu.process.release_free_memory` where :func:`yolox_jax.cpu.tune_process`
    tuned the heap, else None: what the background compiler calls while it works and the loop
    between programs, and whether the loop runs one step at a time."""
    from yolox_jax.cpu import process

    return process.release_free_memory if process.tuned()["malloc"] else None


def release_between_programs(outputs) -> None:
    """Before another program runs: wait for ``outputs`` (the last step's) and hand the free
    heap back to the system where :func:`yolox_jax.cpu.tune_process` keeps it (a no-op
    elsewhere); see :func:`yolox_jax.cpu.process.release_free_memory`."""
    release = heap_release()
    if release is not None:
        jax.block_until_ready(outputs)
        release()


def train_step_fn(cfg, model, tx, mesh):
    """The run's jitted train step ``(state, batch, size, use_l1, lr) -> (state, metrics)``:
    the run's EMA and loss options, the learning rate a run-time input, the state replicated
    and the batch split over ``mesh``."""
    return jit_train_step(
        bind_train_step(model=model, tx=tx, ema=cfg.train.ema,
                        ema_decay_max=cfg.train.ema_decay, ema_ramp=cfg.train.ema_ramp,
                        loss_kwargs=loss_options(cfg)),
        mesh, runtime_lr=True)


def abstract_train_batch(cfg, mesh) -> dict:
    """Shapes, dtypes and shardings of the global batch the train step takes from the host
    pipeline (uint8 images at ``data.input_size``, labels padded to ``data.max_labels``): what
    the step's programs are lowered for without data."""
    from yolox_jax.train.sharding import batch_sharded

    b, (h, w), n = cfg.data.batch_size, cfg.data.input_size, cfg.data.max_labels
    sharding = batch_sharded(mesh)
    spec = {"images": ((b, h, w, 3), jnp.uint8), "labels": ((b, n, 5), jnp.float32),
            "label_mask": ((b, n), jnp.bool_)}
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
            for k, (shape, dtype) in spec.items()}


def _abstract(tree):
    """Shape, dtype and sharding of every array of ``tree`` (what lowering needs)."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _program_jobs(cfg, model, state, step_fn, abstract_batch, val_source):
    """``jobs(name)``: a function that compiles program ``name`` ("train:HxW" or "eval") of this
    run, leaving it where the loop's own calls find it."""
    from yolox_jax.eval.evaluate import lower_evaluation

    abstract_state = _abstract(state)

    def jobs(name):
        if name == "eval":
            variables = jax.eval_shape(lambda s: eval_variables(s, use_ema=cfg.train.ema),
                                       abstract_state)
            return lambda: lower_evaluation(model, variables, **_eval_kwargs(cfg)).compile()
        h, w = (int(v) for v in name.partition(":")[2].split("x"))
        return lambda: step_fn.lower(abstract_state, abstract_batch, (h, w), np.bool_(False),
                                     np.float32(0)).compile()

    return jobs


def eval_steps(cfg, plan: Plan, start_step: int, end_step: int, val_source) -> list[int]:
    """The first 0-based step after which the loop evaluates, as a list (empty: never)."""
    if val_source is None:
        return []
    return next(([s] for s in range(start_step, end_step)
                 if evaluates_after(cfg, plan, s, end_step)), [])


def evaluates_after(cfg, plan: Plan, step: int, end_step: int) -> bool:
    """Whether the loop evaluates after 0-based ``step`` (given validation data): at the end of
    the run, every ``eval.interval`` epochs and after every epoch of the no-aug phase."""
    if (step + 1) % plan.steps_per_epoch and step + 1 != end_step:
        return False
    return (step + 1 == end_step or (step + 1) // plan.steps_per_epoch % cfg.eval.interval == 0
            or step // plan.steps_per_epoch >= plan.no_aug_start_epoch)


def compile_programs(cfg, plan, model, state, step_fn, abstract_batch, val_source, steps,
                     on_ready=None, init=None) -> dict:
    """Compile (not run) the programs of ``steps`` in the order they are first needed, calling
    ``on_ready(name)`` after each; they land in the persistent compilation cache.

    ``init``: the future of the state being initialised (and ``on_ready("init")`` called) in
    another thread while these compile; None: ``on_ready("init")`` at once."""
    jobs = _program_jobs(cfg, model, state, step_fn, abstract_batch, val_source)
    names = [key for _, key in first_uses(
        cfg, steps, eval_steps(cfg, plan, steps.start, steps.stop, val_source))]
    ready = on_ready or (lambda name: None)
    if init is None:
        ready("init")  # nothing to initialise (a resumed run)
    for name in names:
        jobs(name)()
        ready(name)
    if init is not None:
        init.result()  # raises what the initialiser raised
    return {"compiled": names}


def _serialised(fn):
    """``fn`` behind a lock (for a callback that two threads call)."""
    lock = threading.Lock()

    def call(*args, **kwargs):
        with lock:
            return fn(*args, **kwargs)
    return call


# What ``train.max_minutes`` decides (and a resumed run reads back from its config.json).
_FITTED_KEYS = ("max_epoch", "warmup_epochs", "no_aug_epochs", "steps_per_epoch")


def eval_interval(epochs: int) -> int:
    """Evaluate every 10 of 300 epochs as the official recipe, and at most ~10 times a run
    (plus every epoch of the no-aug phase)."""
    return max(1, round(epochs * 10 / 300), -(-epochs // 10))


def time_steps(cfg, source, local_batch, state, step_fn, mesh, steps: int = 8, prepare=None) -> float:
    """Seconds per training step, data included: ``steps`` steps on a copy of ``state`` and a
    throwaway data iterator, after one untimed step (compiling or loading the program). The
    same value on every process (process 0's). ``prepare``: host batch -> step batch
    (``inputs.batch_preparer``; default: sharding only)."""
    prepare = prepare or (lambda host_batch: shard_batch(host_batch, mesh))
    iterator = inputs.train_iterator(cfg, source, "aug", local_batch)
    scratch = jax.tree_util.tree_map(jnp.copy, state)
    size = tuple(cfg.data.input_size)
    try:
        scratch, metrics = step_fn(scratch, prepare(next(iterator)), size,
                                   np.bool_(False), np.float32(0))
        jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        for _ in range(steps):
            scratch, metrics = step_fn(scratch, prepare(next(iterator)), size,
                                       np.bool_(False), np.float32(0))
        jax.block_until_ready(metrics)
        seconds = (time.perf_counter() - t0) / steps
    finally:
        close_iterator(iterator)
    return agree_across_processes([seconds])[0]


def fit_schedule(cfg, plan: Plan, step_seconds: float) -> dict:
    """``train.*`` values that fit the run into ``train.max_minutes``: 85 % of the budget for
    steps (the rest for evaluation and checkpoints), whole epochs (at least 2; shorter epochs
    through ``steps_per_epoch`` when the data allows fewer than 2), warm-up and no-aug phase in
    the official 300-epoch proportions (5 and 15 epochs), at least one epoch each."""
    steps = max(int(0.85 * cfg.train.max_minutes * 60 / max(step_seconds, 1e-6)), 2)
    per_epoch = plan.steps_per_epoch
    epochs = steps // per_epoch
    if epochs < 2:
        epochs, per_epoch = 2, max(steps // 2, 1)
    out = {"max_epoch": int(epochs),
           "warmup_epochs": max(1, round(epochs * 5 / 300)),
           "no_aug_epochs": max(1, round(epochs * 15 / 300)) if epochs > 2 else 0,
           "steps_per_epoch": int(per_epoch) if per_epoch != plan.steps_per_epoch else
           cfg.train.steps_per_epoch}
    log.info("train.max_minutes=%g: %.3f s a step (data included) -> %d epochs of %d steps "
             "(%d steps), warm-up %d, no-aug %d", cfg.train.max_minutes, step_seconds, epochs,
             per_epoch, epochs * per_epoch, out["warmup_epochs"], out["no_aug_epochs"])
    return out


def close_iterator(iterator) -> None:
    """Stop a data iterator's prefetch threads now instead of leaving them to interpreter exit."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def agree_across_processes(values: list[float]) -> list[float]:
    """Process 0's ``values`` on every process (exact float64), so that decisions taken from them
    (keep a best checkpoint: a collective save) are the same everywhere. A no-op on one process."""
    if jax.process_count() == 1:
        return list(values)
    from jax.experimental import multihost_utils

    wait_for_processes("agree")  # evaluation and timing take different times on each host
    bits = np.asarray(values, np.float64).view(np.uint32)
    bits = np.asarray(multihost_utils.broadcast_one_to_all(bits)).astype(np.uint32)
    return [float(v) for v in bits.view(np.float64)]


def evaluate_state(cfg, model, state, source) -> dict:
    from yolox_jax.eval.evaluate import evaluate

    return evaluate(model, eval_variables(state, use_ema=cfg.train.ema), source,
                    **_eval_kwargs(cfg), num_workers=0)


def _eval_kwargs(cfg) -> dict:
    return dict(input_size=tuple(cfg.data.test_size), batch_size=cfg.eval.batch_size,
                conf_threshold=cfg.eval.conf_threshold, nms_threshold=cfg.eval.nms_threshold,
                max_detections=cfg.eval.max_detections)

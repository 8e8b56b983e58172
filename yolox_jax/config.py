"""Experiment configuration: plain dataclasses, Python config files, strict overrides.

A config file in ``configs/`` defines ``get_config() -> Config``. Command-line overrides are
``key=value`` pairs with dotted keys (``train.max_epoch=10``, ``data.batch_size=16``); an unknown
key is an error that lists the valid ones (the official YOLOX silently ignores them).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class ModelConfig:
    name: str = "yolox-s"
    num_classes: int = 80
    # Overrides passed to build_model (depth, width, depthwise, act); None keeps the variant's.
    depth: Optional[float] = None
    width: Optional[float] = None
    act: Optional[str] = None
    # How layers convolve: "xla" (XLA's convolution), "cpu" (yolox_jax.cpu.conv: the forms XLA:CPU
    # runs fastest, same values to float rounding), "auto" ("cpu" on a CPU backend, else "xla"),
    # or "module:function" naming a lax.conv_general_dilated-compatible function.
    conv: str = "auto"


@dataclass
class DataConfig:
    # "synthetic" | "coco" | "voc" | "tfds"
    source: str = "coco"
    # coco: annotation JSON and image folder, for train and val.
    train_ann: str = ""
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    # voc: root folder (VOCdevkit) ; tfds: dataset name and data_dir.
    root: str = ""
    # voc: the VOC<year> folders to read, comma-separated; the class names, comma-separated
    # ("" = the 20 Pascal VOC classes).
    voc_years: str = "2007,2012"
    class_names: str = ""
    tfds_name: str = "coco/2017"
    train_split: str = "train"
    val_split: str = "validation"
    # synthetic shapes dataset (no download).
    synthetic_train_images: int = 2000
    synthetic_val_images: int = 200
    synthetic_image_size: tuple = (256, 256)
    synthetic_seed: int = 0
    # pipeline
    input_size: tuple = (640, 640)
    test_size: tuple = (640, 640)
    batch_size: int = 64  # global batch, across all devices and hosts
    num_workers: int = 4
    max_labels: int = 120
    # Where the augmentation of the Mosaic phase runs: "host" (the grain workers, NumPy/OpenCV)
    # or "device" (the host decodes and pre-scales; Mosaic, random affine, MixUp, HSV and flip
    # run jitted on the accelerator: yolox_jax/data/device_aug.py). The no-aug phase always
    # runs on the host.
    augment_on: str = "host"
    # Where device mode takes each image's 3 mosaic partners and its MixUp partner from:
    # "dataset" (the official way: the host decodes all 5 images, partners drawn from the whole
    # dataset) or "batch" (the host decodes only the image itself; the device picks the
    # partners among the other rows of the same per-process batch, the MixUp partner among
    # rows with boxes). "batch" cuts host decoding and host-to-device bytes by ~5x; with a
    # shuffled stream partners are still uniformly drawn images, but correlated within a batch,
    # and a per-process batch below ~8 gives little variety. Only with augment_on="device".
    device_partners: str = "dataset"
    # augmentation (official yolox_base defaults)
    mosaic_prob: float = 1.0
    mixup_prob: float = 1.0
    enable_mixup: bool = True
    hsv_prob: float = 1.0
    flip_prob: float = 0.5
    degrees: float = 10.0
    translate: float = 0.1
    mosaic_scale: tuple = (0.1, 2.0)
    mixup_scale: tuple = (0.5, 1.5)
    shear: float = 2.0
    # multiscale: sizes input/32 -+ range, redrawn every `multiscale_interval` steps; 0 = off
    multiscale_range: int = 5
    # explicit multiscale range in units of 32 (official random_size, e.g. (10, 20)); () = use range
    random_size: tuple = ()
    multiscale_interval: int = 10
    # sizes join the multiscale draw one at a time, the base size first, one more every this
    # many steps, so training starts after one compile and the others compile meanwhile in the
    # background (yolox_jax/train/programs.py); 0 = all from the start (the official draw)
    multiscale_admit_steps: int = 100


@dataclass
class TrainConfig:
    max_epoch: int = 300
    warmup_epochs: int = 5
    no_aug_epochs: int = 15
    basic_lr_per_img: float = 0.01 / 64.0
    min_lr_ratio: float = 0.05
    warmup_lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    ema: bool = True
    ema_decay: float = 0.9998
    ema_ramp: float = 2000.0
    # "float32" | "bfloat16" (bf16 compute, float32 master weights)
    compute_dtype: str = "float32"
    # CPU, yolox-jax command line: compile the run's programs in a child process that fills the
    # persistent cache, so that the training process loads them (in a process tuned by
    # yolox_jax.cpu.tune_process a step compiled in-process runs 30-55 % slower:
    # yolox_jax/cpu/precompile.py). Needs the cache on (yolox-jax turns it on).
    precompile_in_child: bool = True
    # Limit epoch length (0 = len(dataset) // batch) -- handy for smoke runs.
    steps_per_epoch: int = 0
    # A wall-clock budget in minutes (0 = none): the run times its step and sets max_epoch,
    # warmup_epochs, no_aug_epochs (and steps_per_epoch when needed) to fit (yolox-jax train
    # --minutes N; see yolox_jax.train.loop.fit_schedule).
    max_minutes: float = 0.0
    seed: int = 0
    print_interval: int = 10
    # loss options (see yolox_jax.losses)
    iou_loss_type: str = "iou"
    obj_target: str = "binary"
    center_radius: float = 1.5
    # Label assignment (yolox_jax.assign.registry): simota (official) | ota | ota_soft | tal |
    # atss | dsl | a registered name | "module:function".
    assigner: str = "simota"
    # Keyword options passed to the assigner unchanged, e.g. {"topk_iou": 20} for simota or
    # {"topk": 13, "alpha": 1.0, "beta": 6.0} for tal (train.center_radius is added for the
    # SimOTA/OTA family unless given here).
    assigner_options: dict = field(default_factory=dict)


@dataclass
class EvalConfig:
    interval: int = 10  # epochs; every epoch in the no-aug phase
    conf_threshold: float = 0.01
    nms_threshold: float = 0.65
    batch_size: int = 32
    max_detections: int = 100


@dataclass
class RunConfig:
    output_dir: str = "outputs"
    experiment: str = ""
    keep_checkpoints: int = 3
    checkpoint_every_epochs: int = 1
    tensorboard: bool = True
    # "" = from scratch; a path to an official .pth or to one of our checkpoint dirs.
    init_from: str = ""
    resume: bool = False
    # Stop after this many global steps (0 = run to max_epoch); for tests and smoke runs.
    max_steps: int = 0
    # Append a CRC of every batch to batches.jsonl (to verify exact resume / data order).
    log_batch_digests: bool = False
    # jax.distributed: "auto" initialises when the usual cluster env vars are present.
    distributed: str = "auto"
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> Config:
    """Inverse of ``to_dict`` (e.g. for the config saved in a checkpoint); unknown keys raise."""
    cfg = Config()
    for section, values in d.items():
        for key, value in values.items():
            set_value(cfg, f"{section}.{key}", value)
    return cfg


def _valid_keys(cfg: Config) -> list[str]:
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(cfg)
            for f in dataclasses.fields(getattr(cfg, s.name))]


def _coerce(value: Any, annotation: str, key: str):
    """Convert a parsed value to the field's declared type."""
    if isinstance(value, str) and annotation != "str":
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if value.lower() in ("true", "false"):
                value = value.lower() == "true"
            elif value.lower() in ("none", "null"):
                value = None
    if annotation.startswith("Optional"):
        if value is None:
            return None
        annotation = annotation[len("Optional["):-1]
    try:
        if annotation == "bool":
            if isinstance(value, str):
                raise ValueError
            return bool(value)
        if annotation == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if annotation == "float":
            return float(value)
        if annotation == "str":
            return str(value)
        if annotation == "tuple":
            return _coerce_tuple(value, key)
        if annotation == "dict":
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        from yolox_jax.errors import UserError

        want = _describe_tuple(key) if annotation == "tuple" else \
            'a dict with string keys, e.g. {"topk": 13}' if annotation == "dict" else annotation
        raise UserError(f"expects {want}, got {value!r}", key) from None
    return value


# The element type and allowed lengths of each tuple-valued key.
_TUPLE_ITEMS = {"synthetic_image_size": (int, (2,)), "input_size": (int, (2,)),
                "test_size": (int, (2,)), "mosaic_scale": (float, (2,)),
                "mixup_scale": (float, (2,)), "random_size": (int, (0, 2))}


def _describe_tuple(key: str) -> str:
    kind, lengths = _TUPLE_ITEMS.get(key.split(".")[-1], (float, ()))
    n = " or ".join(map(str, lengths)) if lengths else "some"
    return f"a tuple of {n} {kind.__name__}s, e.g. (416, 416)" if kind is int else \
        f"a tuple of {n} {kind.__name__}s"


def _coerce_tuple(value, key: str) -> tuple:
    """A number n gives (n, n); lists and tuples of numbers keep their length, which must be one
    the key allows; ints stay ints (sizes in pixels must be whole numbers)."""
    kind, lengths = _TUPLE_ITEMS.get(key.split(".")[-1], (float, ()))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (list, tuple)):
        raise ValueError
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError
        if kind is int:
            if float(v) != int(v):
                raise ValueError
            v = int(v)
        out.append(v)
    if lengths and len(out) not in lengths:
        raise ValueError
    return tuple(out)


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set ``section.name`` on ``cfg``; unknown keys raise a ValueError naming the valid keys."""
    parts = key.split(".")
    if len(parts) != 2 or not hasattr(cfg, parts[0]) or not hasattr(getattr(cfg, parts[0]), parts[1]):
        from yolox_jax.errors import UserError

        close = difflib.get_close_matches(key, _valid_keys(cfg), n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else \
            f"valid keys: {', '.join(_valid_keys(cfg))}"
        raise UserError(f"unknown config key; {hint}", key)
    section = getattr(cfg, parts[0])
    # With postponed annotations every field type is its source string ("int", "Optional[float]").
    annotation = {f.name: str(f.type) for f in dataclasses.fields(section)}[parts[1]]
    setattr(section, parts[1], _coerce(value, annotation, key))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` strings (values parsed as Python literals when possible)."""
    for item in overrides:
        if "=" not in item:
            from yolox_jax.errors import UserError

            raise UserError("an override must be section.key=value", item)
        key, value = item.split("=", 1)
        set_value(cfg, key.strip(), value.strip())
    return cfg


def config_names() -> list[str]:
    """Names of the packaged configs (``yolox_jax.configs``: the top-level configs/ folder)."""
    from importlib.resources import files

    return sorted(p.name[:-3] for p in files("yolox_jax.configs").iterdir()
                  if p.name.endswith(".py") and not p.name.startswith("_"))


def synthetic_config() -> Config:
    """The embedded default experiment: a small YOLOX on the built-in synthetic shapes dataset,
    sized to train to a useful AP in minutes on a 2-core CPU (the README quick start)."""
    cfg = Config()
    # The YOLOX-tiny architecture at 1/3 of its width (~0.56M parameters).
    cfg.model.name = "yolox-tiny"
    cfg.model.width = 0.125
    cfg.model.num_classes = 3
    cfg.data.source = "synthetic"
    cfg.data.synthetic_train_images = 1024
    cfg.data.synthetic_val_images = 128
    cfg.data.synthetic_image_size = (160, 160)
    cfg.data.input_size = (160, 160)
    cfg.data.test_size = (160, 160)
    cfg.data.batch_size = 16
    cfg.data.num_workers = 0
    cfg.data.max_labels = 32
    cfg.data.mosaic_prob = 0.5
    cfg.data.enable_mixup = False
    cfg.data.mosaic_scale = (0.5, 1.5)
    cfg.data.multiscale_range = 0
    cfg.train.max_epoch = 12
    cfg.train.warmup_epochs = 1
    cfg.train.no_aug_epochs = 2
    # A small batch on CPU: a higher per-image lr than the official 0.01/64 converges in minutes.
    cfg.train.basic_lr_per_img = 0.04 / 64
    cfg.train.ema_ramp = 200.0
    cfg.eval.interval = 5
    cfg.eval.batch_size = 32
    cfg.run.output_dir = "outputs"
    cfg.run.experiment = "synthetic"
    return cfg


def load_config(path_or_name: str | None = None, overrides: list[str] | None = None) -> Config:
    """A config by packaged name (``yolox-s``, ``yolox_s``, ``synthetic``, ``custom_coco``), or
    from a path to any file defining ``get_config()``, then ``overrides`` applied.

    ``None`` gives the embedded default: the small model on the synthetic dataset.
    """
    from yolox_jax.errors import UserError

    if path_or_name is None:
        cfg = synthetic_config()
    elif Path(path_or_name).is_file():
        path = Path(path_or_name)
        spec = importlib.util.spec_from_file_location(f"yolox_jax_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's file: say which one failed
            raise UserError(f"config file failed to load: {type(err).__name__}: {err}", path) from err
        cfg = _get_config(module, path)
    else:
        name = Path(path_or_name).name.removesuffix(".py").replace("-", "_")
        if name not in config_names() or name != path_or_name.removesuffix(".py").replace("-", "_"):
            raise UserError(f"no config file or packaged config {path_or_name!r} "
                            f"(packaged: {', '.join(config_names())})", path_or_name)
        cfg = _get_config(importlib.import_module(f"yolox_jax.configs.{name}"), name)
    return apply_overrides(cfg, list(overrides or []))


def _get_config(module, where) -> Config:
    from yolox_jax.errors import UserError

    if not hasattr(module, "get_config"):
        raise UserError("config file defines no get_config()", where)
    cfg = module.get_config()
    if not isinstance(cfg, Config):
        raise UserError(f"get_config() returned {type(cfg).__name__}, not a Config", where)
    return cfg


def dumps(cfg: Config) -> str:
    return json.dumps(to_dict(cfg), indent=2, default=list)

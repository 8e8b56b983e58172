"""The embedded default experiment: a small YOLOX on the built-in synthetic shapes dataset,
sized to train to a useful AP in minutes on a 2-core CPU (the README quick start)."""
from __future__ import annotations

from yolox_jax.config import Config


def synthetic_config() -> Config:
    cfg = Config()
    # The YOLOX-tiny architecture at 1/3 of its width (~0.56M parameters): chosen when depthwise
    # convolutions (nano) were 6-50x slower on XLA:CPU (now shifted multiply-adds, ops/conv.py);
    # kept, as the quick-start figures in README.md and docs are for this model.
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
    cfg.train.max_epoch = 10
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

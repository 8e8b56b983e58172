"""Template for your own COCO-format dataset: copy this file, set the paths, class count and
sizes, and run ``yolox-jax train -f my_data.py``. (``yolox-jax train --data DIR`` does the same
without a file: it reads the classes from the data and prints the defaults it picks.)

The layout the paths below assume (the official YOLOX tutorial's)::

    datasets/my_data/annotations/instances_train.json
    datasets/my_data/annotations/instances_val.json
    datasets/my_data/train/  (the images of instances_train.json)
    datasets/my_data/val/
"""
from yolox_jax.config import Config


def get_config():
    cfg = Config()  # the official yolox_base recipe, changed below for a small dataset
    cfg.model.name = "yolox-s"
    cfg.model.num_classes = 3                   # = the "categories" in the annotation JSONs
    cfg.data.source = "coco"
    cfg.data.train_ann = "datasets/my_data/annotations/instances_train.json"
    cfg.data.train_images = "datasets/my_data/train"
    cfg.data.val_ann = "datasets/my_data/annotations/instances_val.json"
    cfg.data.val_images = "datasets/my_data/val"
    # A few hundred to a few thousand images: smaller inputs, no MixUp, milder Mosaic, single scale.
    cfg.data.input_size = (416, 416)
    cfg.data.test_size = (416, 416)
    cfg.data.batch_size = 16
    cfg.data.num_workers = 2
    cfg.data.enable_mixup = False
    cfg.data.mosaic_scale = (0.5, 1.5)
    cfg.data.multiscale_range = 0
    cfg.train.max_epoch = 100
    cfg.train.warmup_epochs = 2
    cfg.train.no_aug_epochs = 5
    cfg.eval.interval = 5
    cfg.run.experiment = "my_data"
    return cfg

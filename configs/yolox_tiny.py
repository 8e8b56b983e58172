"""YOLOX-tiny on COCO 2017 with the official hyper-parameters (exps/default/yolox_tiny.py)."""
from yolox_jax.config import Config


def get_config():
    cfg = Config()
    cfg.model.name = "yolox-tiny"
    cfg.data.input_size = (416, 416)
    cfg.data.test_size = (416, 416)
    cfg.data.random_size = (10, 20)
    cfg.data.mosaic_scale = (0.5, 1.5)
    cfg.data.enable_mixup = False
    cfg.data.train_ann = "datasets/COCO/annotations/instances_train2017.json"
    cfg.data.train_images = "datasets/COCO/train2017"
    cfg.data.val_ann = "datasets/COCO/annotations/instances_val2017.json"
    cfg.data.val_images = "datasets/COCO/val2017"
    return cfg

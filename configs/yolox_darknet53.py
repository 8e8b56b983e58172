"""YOLOX-darknet53 on COCO 2017 with the official hyper-parameters (exps/default/yolov3.py)."""
from yolox_jax.config import Config


def get_config():
    cfg = Config()  # defaults are the official yolox_base recipe (640, mosaic+mixup, 300 epochs)
    cfg.model.name = "yolox-darknet53"
    cfg.data.train_ann = "datasets/COCO/annotations/instances_train2017.json"
    cfg.data.train_images = "datasets/COCO/train2017"
    cfg.data.val_ann = "datasets/COCO/annotations/instances_val2017.json"
    cfg.data.val_images = "datasets/COCO/val2017"
    return cfg

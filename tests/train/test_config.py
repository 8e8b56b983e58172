"""Config files load, overrides are typed, unknown keys are errors."""
import pytest

from pathlib import Path

from yolox_jax.config import apply_overrides, config_names, from_dict, load_config, to_dict, Config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def test_default_is_synthetic():
    cfg = load_config(None)
    assert cfg.data.source == "synthetic"
    assert cfg.model.num_classes == 3


PACKAGED = ["custom_coco", "synthetic", "yolox_darknet53", "yolox_l", "yolox_m", "yolox_nano",
            "yolox_s", "yolox_tiny", "yolox_x"]


def test_packaged_config_names():
    assert config_names() == PACKAGED


@pytest.mark.parametrize("name", PACKAGED)
def test_every_config_loads_by_name_and_by_path(name):
    by_name = load_config(name)
    assert by_name.model.name.startswith("yolox-")
    assert to_dict(load_config(str(CONFIG_DIR / f"{name}.py"))) == to_dict(by_name)
    assert to_dict(load_config(name.replace("_", "-"))) == to_dict(by_name)


def test_unknown_config_lists_the_packaged_ones():
    with pytest.raises(ValueError, match="yolox_q.*packaged: custom_coco, synthetic"):
        load_config("yolox_q")


def test_official_variant_values():
    s = load_config("yolox-s")
    assert (s.data.input_size, s.data.mosaic_scale, s.data.enable_mixup) == ((640, 640), (0.1, 2.0), True)
    nano = load_config("yolox-nano")
    assert (nano.data.input_size, nano.data.random_size, nano.data.mosaic_prob) == ((416, 416), (10, 20), 0.5)
    assert s.train.max_epoch == 300 and s.train.basic_lr_per_img == pytest.approx(0.01 / 64)


def test_overrides_are_typed():
    cfg = apply_overrides(Config(), ["train.max_epoch=7", "data.input_size=(320, 416)",
                                     "train.ema=false", "model.width=0.5", "data.source=voc"])
    assert cfg.train.max_epoch == 7 and isinstance(cfg.train.max_epoch, int)
    assert cfg.data.input_size == (320, 416)
    assert cfg.train.ema is False
    assert cfg.model.width == 0.5
    assert cfg.data.source == "voc"


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ValueError, match="train.max_epochs"):
        apply_overrides(Config(), ["train.max_epochs=7"])
    with pytest.raises(ValueError, match="expects int"):
        apply_overrides(Config(), ["train.max_epoch=abc"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(Config(), ["train.max_epoch"])


def test_round_trip_through_dict():
    cfg = apply_overrides(Config(), ["data.batch_size=8", "model.name=yolox-tiny"])
    assert from_dict(to_dict(cfg)) == cfg

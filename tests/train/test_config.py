"""Config files load, overrides are typed, unknown keys are errors."""
import pytest

from yolox_jax.config import CONFIG_DIR, apply_overrides, from_dict, load_config, to_dict, Config


def test_default_is_synthetic():
    cfg = load_config(None)
    assert cfg.data.source == "synthetic"
    assert cfg.model.num_classes == 3


@pytest.mark.parametrize("name", ["yolox_nano", "yolox_tiny", "yolox_s", "yolox_m", "yolox_l",
                                  "yolox_x", "yolox_darknet53", "synthetic"])
def test_every_config_file_loads(name):
    cfg = load_config(str(CONFIG_DIR / f"{name}.py"))
    assert cfg.model.name.startswith("yolox-")


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

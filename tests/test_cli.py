"""The command line rejects unknown config keys with a message naming them."""
import pytest

from yolox_jax.cli import main


def test_unknown_override_is_an_error(capsys):
    assert main(["train", "train.max_epochz=3"]) == 2
    assert "train.max_epochz" in capsys.readouterr().err


def test_unknown_config_name_is_an_error(capsys):
    assert main(["train", "-n", "yolox-q"]) == 2
    assert "yolox-q" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "train" in out and "predict" in out and "eval" in out

"""What a non-editable install ships: every package folder, and the configs loadable by name."""
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_folder():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "yolox_jax").rglob("__init__.py")}
    assert listed == on_disk | {"yolox_jax.configs"}


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory):
    """The wheel built from this checkout, unpacked as pip would install it."""
    import shutil

    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"          # a copy: building writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("yolox_jax", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("yolox_jax-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp / "site")
    return tmp / "site"


def test_wheel_loads_configs_by_name(wheel_install, tmp_path):
    code = (
        "import yolox_jax, yolox_jax.config as c;"
        f"assert yolox_jax.__file__.startswith({str(wheel_install)!r}), yolox_jax.__file__;"
        "print(c.config_names());"
        "assert c.load_config('yolox-s').model.name == 'yolox-s';"
        "assert c.load_config('synthetic').data.source == 'synthetic';"
        "assert c.load_config('custom_coco').data.source == 'coco'")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(wheel_install), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "yolox_s" in out.stdout and "custom_coco" in out.stdout

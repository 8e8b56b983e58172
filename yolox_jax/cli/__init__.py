"""``yolox-jax`` command line.

    yolox-jax train                                   # embedded default: synthetic shapes, CPU
    yolox-jax train -n yolox-s data.batch_size=128 train.max_epoch=100
    yolox-jax train --data datasets/my_coco           # your own COCO-format or VOC data
    yolox-jax train -n yolox-s --resume               # continue outputs/yolox-s exactly
    yolox-jax eval -n yolox-s --ckpt outputs/yolox-s
    yolox-jax predict --ckpt outputs/synthetic --path image.png
    yolox-jax bench --quick                           # jit vs eager vs PyTorch, table + plots

Overrides are ``section.key=value`` pairs, accepted anywhere on the line; an unknown key is an
error. Mistakes in what you give (paths, files, values, checkpoints) print one line and exit
with status 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

# Each command is a module of this package with HELP, add_arguments(parser) and run(args) -> int.
COMMANDS = ("train", "eval", "predict", "convert", "export", "verify", "assign-vis", "study-assign",
            "bench", "compile")

_SECTIONS = ("model", "data", "train", "eval", "run")
_OVERRIDE = re.compile(rf"^({'|'.join(_SECTIONS)})\.[A-Za-z_][A-Za-z0-9_]*=")


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(arguments, overrides): every ``section.key=value`` token wherever it stands (after
    ``--path a.png`` too), the rest in order."""
    rest, overrides = [], []
    for token in argv:
        (overrides if _OVERRIDE.match(token) else rest).append(token)
    return rest, overrides


def _command(name: str):
    return importlib.import_module(f"yolox_jax.cli.{name.replace('-', '_')}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yolox-jax", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error instead of its one-line summary")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = _command(name)
        cp = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        cp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
        module.add_arguments(cp)
    return p


def _orbax_traceback(record: logging.LogRecord) -> bool:
    """False for Orbax's own error reports with a traceback (a failed write is logged by every
    thread it passes through); yolox_jax reports each checkpoint failure once, by step."""
    if record.levelno < logging.ERROR:
        return True
    files, tb = [record.pathname], record.exc_info[2] if record.exc_info else None
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    text = record.getMessage()
    from_orbax = any("orbax" in f for f in files) or ("Traceback" in text and "orbax" in text)
    return not from_orbax


def _quiet_logging(debug: bool = False):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file operation at INFO
    if not debug:
        logging.getLogger("absl").addFilter(_orbax_traceback)
    # "Unable to initialize backend 'tpu'" and the like: JAX probing platforms this machine
    # does not have.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def main(argv=None) -> int:
    from yolox_jax.errors import UserError

    argv = sys.argv[1:] if argv is None else list(argv)
    rest, overrides = split_overrides(argv)
    args = build_parser().parse_args(rest)
    args.overrides = overrides
    _quiet_logging(args.debug)
    try:
        return _command(args.command).run(args)
    except (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError) as err:
        if args.debug:
            raise
        print(f"yolox-jax: {one_line(err)}", file=sys.stderr)
        if type(err).__name__ == "CheckpointSaveError":
            # The writes still queued behind a failed save can only fail too, each printing a
            # traceback at interpreter shutdown; the last complete checkpoint is already safe
            # (Orbax commits a step by renaming its folder), so leave without that shutdown.
            import os

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        return 2


def one_line(err: BaseException) -> str:
    """A user error as one line; OSErrors name their file."""
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.strerror or type(err).__name__} ({err.filename})"
    return " ".join(str(err).split())

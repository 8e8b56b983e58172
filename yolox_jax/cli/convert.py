"""Convert an official YOLOX .pth to one of our checkpoint folders, or a folder back to a .pth.

    yolox-jax convert yolox_s.pth --to outputs/yolox_s_ckpt -n yolox-s
    yolox-jax convert my_nano.pth --to outputs/my_nano -n yolox-nano model.width=0.125
    yolox-jax convert outputs/synthetic --to synthetic.pth

.pth -> folder: the model is the official variant -n names (or the config -f names, with any
model.* overrides); the class count comes from the checkpoint's head.cls_preds.0.weight. The
folder holds the weights (as both raw and EMA weights) and records that config with the class
count. eval, predict and run.init_from load the weights; eval and predict build the model from
their own -n/-f, so give them the same model (the command prints the line to use):
    yolox-jax predict -n yolox-s --ckpt outputs/yolox_s_ckpt --path image.png
(plus model.num_classes=N for a checkpoint of N != 80 classes).

folder -> .pth: the model comes from the config the folder recorded (-n/-f and model.*
overrides replace it); the EMA weights unless --raw. The file is {"model": state_dict} in the
official layout (BGR input), as the official YOLOX tools load it. .pth files need PyTorch.
"""
from __future__ import annotations

from pathlib import Path

from yolox_jax.cli import common

HELP = "official .pth -> our checkpoint folder, or a checkpoint folder -> official .pth"
TORCH_SUFFIXES = (".pth", ".pt")


def add_arguments(p):
    p.add_argument("source", help="an official .pth/.pt, or one of our run/checkpoint folders")
    p.add_argument("--to", required=True, metavar="TARGET",
                   help="a new checkpoint folder (from a .pth) or a .pth file (from a folder)")
    common.add_config_arguments(p, data=False)
    p.add_argument("--raw", action="store_true",
                   help="folder -> .pth: the raw weights instead of the EMA")


def _model_overrides(cfg) -> dict:
    """``build_model``/``convert`` overrides of a config's model section (as training builds it)."""
    return {k: getattr(cfg.model, k) for k in ("depth", "width", "act")
            if getattr(cfg.model, k) is not None}


def mismatch_summary(message: str) -> str:
    """``from_torch_state_dict``'s multi-line mismatch report -> one line: its title, the count
    of each kind of mismatch and the first key of the first kind."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    counts = [line[:-len(" key(s):")] for line in lines if line.endswith(" key(s):")]
    example = next((line for prev, line in zip(lines, lines[1:]) if prev.endswith(" key(s):")), "")
    title = lines[0].rstrip(":") if lines else message
    return f"{title}: {', '.join(counts)}" + (f", e.g. {example}" if example else "")


def torch_to_folder(args) -> int:
    from yolox_jax import config as config_lib
    from yolox_jax.convert import (from_torch_state_dict, read_torch_state_dict,
                                   save_checkpoint, state_dict_num_classes)
    from yolox_jax.errors import UserError

    if not (args.config or args.name):
        raise UserError("name the model this .pth is for with -n (e.g. -n yolox-s) or -f",
                        args.source)
    target = Path(args.to)
    if target.suffix in TORCH_SUFFIXES:
        raise UserError("a .pth converts to a checkpoint folder; give a folder name", args.to)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError("already exists; give a new folder", args.to)
    cfg = common.load(args)
    state_dict = read_torch_state_dict(args.source)
    cfg.model.num_classes = state_dict_num_classes(state_dict)
    try:
        variables = from_torch_state_dict(state_dict, cfg.model.name, cfg.model.num_classes,
                                          **_model_overrides(cfg))
    except ValueError as err:
        raise UserError(mismatch_summary(str(err)) + "; check -n and the model.* overrides",
                        args.source) from err
    save_checkpoint(target, variables, config_lib.to_dict(cfg),
                    {"converted_from": str(Path(args.source).absolute())})
    model_args = [f"-n {args.name}" if args.name else f"-f {args.config}"]
    model_args += [o for o in args.overrides if o.startswith("model.")
                   and not o.startswith("model.num_classes=")]
    if cfg.model.num_classes != 80:
        model_args.append(f"model.num_classes={cfg.model.num_classes}")
    print(f"{target}: {cfg.model.name}, {cfg.model.num_classes} classes\n"
          f"use it with: yolox-jax predict {' '.join(model_args)} --ckpt {target} --path IMAGE")
    return 0


def folder_to_torch(args) -> int:
    from yolox_jax import config as config_lib
    from yolox_jax.convert import to_torch_state_dict, write_torch_checkpoint
    from yolox_jax.errors import UserError
    from yolox_jax.models.yolox import build_model
    from yolox_jax.train.checkpoint import read_variables

    if Path(args.to).suffix not in TORCH_SUFFIXES:
        raise UserError("a checkpoint folder converts to a .pth file; give a name ending in .pth",
                        args.to)
    variables, recorded = read_variables(args.source, use_ema=not args.raw)
    if args.config or args.name:
        cfg = common.load(args)
    else:
        try:
            cfg = config_lib.apply_overrides(config_lib.from_dict(recorded or {}), args.overrides)
        except ValueError as err:
            raise UserError(f"the config recorded with this checkpoint does not load ({err}); "
                            "name the model with -n or -f", args.source) from err
    overrides = _model_overrides(cfg)
    common.check_variables(variables, build_model(cfg.model.name, cfg.model.num_classes,
                                                  **overrides), args.source)
    write_torch_checkpoint(to_torch_state_dict(variables, cfg.model.name, cfg.model.num_classes,
                                               **overrides), args.to)
    print(f"{args.to}: {cfg.model.name}, {cfg.model.num_classes} classes "
          f"({'raw' if args.raw else 'EMA'} weights)")
    return 0


def run(args) -> int:
    from yolox_jax.errors import UserError

    source = Path(args.source)
    if not source.exists():
        raise UserError("no such checkpoint file or folder", args.source)
    if source.is_dir():
        return folder_to_torch(args)
    if source.suffix not in TORCH_SUFFIXES:
        raise UserError("expected an official .pth/.pt file or one of our checkpoint folders",
                        args.source)
    return torch_to_folder(args)

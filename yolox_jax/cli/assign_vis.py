"""Draw which anchors each label assigner makes foreground: one PNG per image, a grid with one
row per assigner and one column per FPN level (stride 8, 16, 32).

    yolox-jax assign-vis -f synthetic --ckpt outputs/synthetic --assigners simota,tal,dsl
    yolox-jax assign-vis -f synthetic --images 8 --out outputs/assign_vis
    yolox-jax assign-vis -f synthetic --image photo.png --boxes "0,120,80,60,40;2,200,150,30,90"
    yolox-jax assign-vis --ckpt outputs/synthetic --assigners simota,tal --options tal='{"topk":9}'

Images: the first --images pictures of the config's training data, letterboxed to
data.input_size without augmentation; or one --image with --boxes "cls,cx,cy,w,h;..." in that
image's own pixels. Predictions come from --ckpt (EMA weights unless --raw), else from a freshly
initialised model (the title says so: its assignment is what the first training step sees).
Options: each assigner gets train.assigner_options (as training passes them, with
train.center_radius for the SimOTA/OTA family), updated by its --options NAME=JSON.

In each cell: gt boxes outlined in one colour per gt; foreground anchor centres as dots in the
colour of their gt (radius by quality when the assigner gives a soft target); candidate anchors
as faint grey pixels. Each row's header: the assigner, its foreground count, and per gt "gK:n".
"""
from __future__ import annotations

import json

from yolox_jax.cli import common

HELP = "draw the foreground anchors of several label assigners, per FPN level"


def add_arguments(p):
    common.add_config_arguments(p)
    p.add_argument("-c", "--ckpt", help="our run/checkpoint folder or an official .pth "
                   "(default: a freshly initialised model)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--assigners", default="simota,tal,dsl",
                   help="comma-separated assigner names (default simota,tal,dsl)")
    p.add_argument("--options", action="append", default=[], metavar="NAME=JSON",
                   help='options of one assigner, e.g. tal=\'{"topk": 9}\' (repeatable)')
    p.add_argument("--images", type=int, default=4,
                   help="how many training images to draw (default 4)")
    p.add_argument("--image", metavar="PATH", help="draw this image instead (needs --boxes)")
    p.add_argument("--boxes", help='gts of --image: "cls,cx,cy,w,h;..." in its pixels')
    p.add_argument("--scale", type=int, default=0,
                   help="integer upscale of each cell (default: shorter side >= 320 px)")
    p.add_argument("--out", default="outputs/assign_vis",
                   help="output folder (default outputs/assign_vis)")


def parse_options(items: list[str], names: list[str]) -> dict[str, dict]:
    """``["tal={\\"topk\\": 9}"]`` -> {"tal": {"topk": 9}}; UserError on a bad item."""
    from yolox_jax.errors import UserError

    out: dict[str, dict] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise UserError(f"expects NAME=JSON with NAME one of {', '.join(names)}", item)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"not JSON: {err}", item) from None
        if not isinstance(value, dict):
            raise UserError("expects a JSON object, e.g. {\"topk\": 9}", item)
        out.setdefault(name, {}).update(value)
    return out


def assigner_list(text: str) -> list[str]:
    from yolox_jax.assign.registry import get_assigner
    from yolox_jax.errors import UserError

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError("no assigner named", "--assigners")
    if len(set(names)) != len(names):
        raise UserError("an assigner is named twice", "--assigners")
    for name in names:
        get_assigner(name)  # UserError naming the known ones
    return names


def assigner_options(cfg, name: str, extra: dict | None = None) -> dict:
    """The keyword options training would pass to assigner ``name`` under ``cfg``, plus
    ``extra``."""
    import copy

    from yolox_jax.train.loop import loss_options

    c = copy.deepcopy(cfg)
    c.train.assigner = name
    return {**loss_options(c)["assign_kwargs"], **(extra or {})}


def training_images(cfg, count: int):
    """(images uint8 [N, H, W, 3], labels [N, M, 5], mask [N, M], names): the first ``count``
    training images letterboxed to data.input_size, no augmentation."""
    import numpy as np

    from yolox_jax.data.transforms import letterbox, pad_labels, xyxy_to_cxcywh
    from yolox_jax.errors import UserError
    from yolox_jax.train.inputs import build_sources

    source = build_sources(cfg.data)[0]
    n = min(count, len(source))
    if n < 1:
        raise UserError("no training images to draw", "--images")
    images, labels, masks = [], [], []
    for i in range(n):
        rec = source[i]
        img, r = letterbox(rec["image"], tuple(cfg.data.input_size))
        boxes = xyxy_to_cxcywh(np.asarray(rec["boxes_xyxy"], np.float32)) * np.float32(r)
        lab, mask, _ = pad_labels(np.asarray(rec["classes"]), boxes, cfg.data.max_labels)
        images.append(img), labels.append(lab), masks.append(mask)
    return np.stack(images), np.stack(labels), np.stack(masks), [f"image_{i:03d}" for i in range(n)]


def file_image(cfg, path: str, boxes_text: str):
    """One image file with gts given as text, letterboxed like ``training_images``."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from yolox_jax.data.transforms import letterbox, pad_labels
    from yolox_jax.errors import UserError
    from yolox_jax.eval.assign_vis import parse_boxes

    if not Path(path).is_file():
        raise UserError("no such image", path)
    try:
        rows = parse_boxes(boxes_text)
    except ValueError as err:
        raise UserError(str(err), "--boxes") from None
    if rows[:, 0].max() >= cfg.model.num_classes:
        raise UserError(f"class {int(rows[:, 0].max())} but the model has "
                        f"{cfg.model.num_classes} classes", "--boxes")
    try:
        image = np.asarray(Image.open(path).convert("RGB"))
    except OSError as err:
        raise UserError(f"cannot read the image: {err}", path) from None
    img, r = letterbox(image, tuple(cfg.data.input_size))
    lab, mask, _ = pad_labels(rows[:, 0], rows[:, 1:] * np.float32(r),
                              max(cfg.data.max_labels, len(rows)))
    return img[None], lab[None], mask[None], [Path(path).stem]


def model_outputs(cfg, images, ckpt: str | None, use_ema: bool = True):
    """Raw head outputs [N, A, 5 + C] (eval mode) of the config's model on ``images``."""
    import jax
    import jax.numpy as jnp

    from yolox_jax.train.loop import model_from_config

    model = model_from_config(cfg)
    if ckpt:
        variables = common.load_variables(ckpt, model, cfg.model.name, cfg.model.num_classes,
                                          use_ema=use_ema)
    else:
        h, w = images.shape[1:3]
        variables = jax.jit(lambda r: model.init(r, jnp.zeros((1, h, w, 3), jnp.float32),
                                                 train=False))(
            jax.random.key(cfg.train.seed, impl="rbg"))
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    return jax.device_get(apply(variables, jnp.asarray(images, jnp.float32)))


def assign_all(raw, labels, mask, image_hw, names, options: dict[str, dict]):
    """{name: Assignment as NumPy [N, ...]} for every assigner, on the model outputs ``raw``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from yolox_jax.assign._simota import sanitize_gts
    from yolox_jax.assign.registry import get_assigner
    from yolox_jax.errors import UserError
    from yolox_jax.ops.anchors import anchor_grid, decode_boxes

    num_classes = raw.shape[-1] - 5
    labels = jnp.asarray(labels, jnp.float32)
    mask = jnp.asarray(mask, bool)
    gt_boxes, gt_classes = jax.vmap(sanitize_gts, in_axes=(0, 0, 0, None))(
        labels[..., 1:5], jnp.where(mask, labels[..., 0], 0.0).astype(jnp.int32), mask,
        num_classes)
    raw = jnp.asarray(raw, jnp.float32)
    out = {}
    for name in names:
        fn, opts = get_assigner(name), options.get(name, {})

        def run(raw, gt_boxes, gt_classes, mask, fn=fn, opts=opts):
            grid_xy, strides = anchor_grid(tuple(image_hw))  # constants, as in the loss
            boxes = decode_boxes(raw[..., :4], grid_xy, strides)
            return fn(boxes, raw[..., 5:], raw[..., 4], grid_xy, strides, gt_boxes, gt_classes,
                      mask, **opts)
        try:
            asg = jax.jit(run)(raw, gt_boxes, gt_classes, mask)
        except TypeError as err:
            raise UserError(f"{err} (assigner {name!r}, options {opts})", "--options") from None
        out[name] = {k: None if v is None else np.asarray(v) for k, v in asg._asdict().items()}
    return out


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from yolox_jax.errors import UserError

    common.tune()
    cfg = common.load(args)
    names = assigner_list(args.assigners)
    extra = parse_options(args.options, names)
    options = {n: assigner_options(cfg, n, extra.get(n)) for n in names}
    if args.image or args.boxes:
        if not (args.image and args.boxes):
            raise UserError("--image and --boxes go together", "--image/--boxes")
        images, labels, mask, stems = file_image(cfg, args.image, args.boxes)
        where = args.image
    else:
        if args.images < 1:
            raise UserError("must be at least 1", "--images")
        images, labels, mask, stems = training_images(cfg, args.images)
        where = f"{cfg.data.source} training image"
    if args.scale < 0:
        raise UserError("must be positive (0: automatic)", "--scale")

    from yolox_jax.eval.assign_vis import assignment_grid
    from yolox_jax.ops.anchors import anchor_grid

    image_hw = tuple(images.shape[1:3])
    raw = model_outputs(cfg, images, args.ckpt, use_ema=not args.raw)
    results = assign_all(raw, labels, mask, image_hw, names, options)
    grid_xy, strides = (np.asarray(a) for a in anchor_grid(image_hw))
    model = f"ckpt {args.ckpt}" if args.ckpt else \
        f"freshly initialised model (seed {cfg.train.seed}, no ckpt)"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(stems):
        per_image = {n: {k: None if v is None else v[i] for k, v in r.items()}
                     for n, r in results.items()}
        title = (f"{where} {stem if args.image else i} | {cfg.model.name} | {model} | "
                 f"{image_hw[0]}x{image_hw[1]}")
        picture = assignment_grid(images[i], labels[i, :, 1:5], mask[i], grid_xy, strides,
                                  per_image, title=title, scale=args.scale or None)
        path = out / f"{stem}.png"
        picture.save(path)
        fg = ", ".join(f"{n} {int(per_image[n]['fg_mask'].sum())}" for n in names)
        print(f"{path}: {int(mask[i].sum())} gts; foreground anchors: {fg}")
    return 0

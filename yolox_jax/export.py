"""Export a trained YOLOX for inference without its model code: ``jax.export`` or ONNX.

Input, for every format: ``images [B, H, W, 3]`` float32, already letterboxed to the export's
input size ``(H, W)`` (``yolox_jax.data.transforms.letterbox``: resized into the top-left
corner, padded with 114), RGB channel order (the order the weights were trained or converted
for), values 0..255, no mean/std normalisation: what ``yolox_jax.eval.evaluate.predict_batch``
feeds the model.

Output without post-processing: the decoded predictions ``[B, A, 5 + C]`` (A anchors of the
input size; cx, cy, w, h in input pixels, sigmoid objectness, sigmoid class probabilities), the
official model's eval-mode output. With post-processing: score threshold + class-aware NMS as
``predict_batch``, as a dict ``boxes_xyxy [B, K, 4]``, ``scores [B, K]``, ``classes [B, K]``
int32 (-1 on padding), ``valid [B, K]`` bool, K = ``max_detections``.

The variables are baked into the artifact as constants; so are the input size, the thresholds
and K. See docs/export.md.
"""
from __future__ import annotations

import contextlib
import logging
import os

import jax
import jax.numpy as jnp

from yolox_jax.errors import UserError

__all__ = ["inference_fn", "input_spec", "export_model", "export_onnx", "describe",
           "describe_onnx", "check_input_size", "DETECTION_KEYS", "PLATFORMS"]

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
# Output keys with post-processing, in the (sorted) order their arrays leave the program.
DETECTION_KEYS = ("boxes_xyxy", "classes", "scores", "valid")
_INSTALL = 'pip install "yolox-jax[export]"'


def inference_fn(model, variables, *, postprocess: bool = False, conf_threshold: float = 0.01,
                 nms_threshold: float = 0.65, max_detections: int = 100,
                 class_agnostic: bool = False):
    """A pure function ``images [B, H, W, 3] float32 -> outputs`` (module docstring) with
    ``variables`` closed over. With ``postprocess`` it equals ``predict_batch`` with the same
    thresholds, less the ``obj``/``class_conf`` fields."""
    from yolox_jax.ops.anchors import decode
    from yolox_jax.ops.postprocess import postprocess as select

    def forward(images):
        images = images.astype(jnp.float32)
        raw = model.apply(variables, images, train=False)
        decoded = decode(raw.astype(jnp.float32), tuple(images.shape[1:3]))
        if not postprocess:
            return decoded
        dets = select(decoded, conf_threshold=conf_threshold, nms_threshold=nms_threshold,
                      class_agnostic=class_agnostic, max_detections=max_detections)
        return {k: getattr(dets, k) for k in DETECTION_KEYS}

    return forward


def input_spec(input_size, batch="dynamic") -> jax.ShapeDtypeStruct:
    """The input ``[B, H, W, 3]`` float32 for an export; B symbolic (``"b"``) when ``batch`` is
    ``"dynamic"``, else the int. H and W must be multiples of 32 (the largest stride)."""
    h, w = check_input_size(input_size)
    if batch == "dynamic":
        (b,) = jax.export.symbolic_shape("b", constraints=("b >= 1",))
    elif isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1:
        b = batch
    else:
        raise UserError(f'batch must be a positive int or "dynamic", not {batch!r}', "batch")
    return jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32)


def export_model(model, variables, *, input_size, platforms=("cpu",), batch="dynamic",
                 postprocess: bool = False, conf_threshold: float = 0.01,
                 nms_threshold: float = 0.65, max_detections: int = 100,
                 class_agnostic: bool = False) -> jax.export.Exported:
    """``jax.export`` artifact of the inference forward, ``images [B, H, W, 3] float32 ->``
    decoded ``[B, A, 5 + C]`` or, with ``postprocess``, the detections dict (module docstring).

    ``model``: a Flax YOLOX (build it with ``conv="xla"``: the CPU forms of ``conv="cpu"`` are
    meant for XLA:CPU only). ``variables`` are baked in. ``platforms``: any of "cpu", "cuda",
    "rocm", "tpu"; one artifact serves all it lists (lowering needs no such device here).
    ``batch``: ``"dynamic"`` (a symbolic batch: one artifact for every B, post-processing
    included) or a fixed int. Run it with ``yolox_jax.exported.run_exported`` or
    ``exported.call(images)``; save with ``yolox_jax.exported.save_exported``.
    """
    platforms = _platforms(platforms)
    spec = input_spec(input_size, batch)
    fn = inference_fn(model, variables, postprocess=postprocess, conf_threshold=conf_threshold,
                      nms_threshold=nms_threshold, max_detections=max_detections,
                      class_agnostic=class_agnostic)
    return jax.export.export(jax.jit(fn), platforms=platforms)(spec)


def export_onnx(model, variables, path, *, input_size, batch=1, postprocess: bool = False,
                conf_threshold: float = 0.01, nms_threshold: float = 0.65,
                max_detections: int = 100, class_agnostic: bool = False) -> str:
    """Write an ONNX model of the inference forward to ``path`` (with jax2onnx); returns the path.

    Input ``images [B, H, W, 3]`` float32 (NHWC, as the JAX model); output ``predictions``
    ``[B, A, 5 + C]`` decoded (module docstring). ``batch``: an int, or ``"dynamic"`` for a
    symbolic ``B``. Variables become initializers (jax2onnx may move large ones into a
    ``.onnx.data`` file next to ``path``; keep the two together).

    ``postprocess=True`` (NMS inside the graph) fails with jax2onnx 0.17: it converts
    ``lax.fori_loop`` only with a trip count known at trace time, and the NMS scans the boxes
    kept so far; the error says so. Run NMS on the decoded output instead.

    The SPP block's max-pools are traced in a form onnxruntime runs (3-d windows; the model's
    4-d ``reduce_window`` becomes a 4-d ONNX MaxPool, which onnxruntime rejects), same values.
    """
    to_onnx = _require("jax2onnx").to_onnx
    h, w = check_input_size(input_size)
    if batch == "dynamic":
        spec = ("B", h, w, 3)
    else:
        spec = input_spec((h, w), batch)
    fn = inference_fn(model, variables, postprocess=postprocess, conf_threshold=conf_threshold,
                      nms_threshold=nms_threshold, max_detections=max_detections,
                      class_agnostic=class_agnostic)
    names = list(DETECTION_KEYS) if postprocess else ["predictions"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # onnx_ir warns once per shape constant it writes ("value type ... is not known").
    serde_log = logging.getLogger("onnx_ir.serde")
    level = serde_log.level
    serde_log.setLevel(logging.ERROR)
    try:
        with _onnx_friendly_pooling():
            to_onnx(fn, inputs=[spec], model_name="yolox", input_names=["images"],
                    output_names=names, return_mode="file", output_path=str(path))
    except jax.errors.TracerArrayConversionError as err:
        if not postprocess:
            raise
        raise UserError("jax2onnx cannot convert the NMS (a lax.fori_loop whose trip count "
                        "depends on the data); export without post-processing and run NMS on "
                        "the decoded output, or use the jax format", "postprocess") from err
    finally:
        serde_log.setLevel(level)
    return str(path)


def describe(exported: jax.export.Exported) -> str:
    """One line per input and output of an artifact, e.g. ``images: float32[b,640,640,3]``."""
    def fmt(aval):
        return f"{aval.dtype}[{','.join(str(d) for d in aval.shape)}]"

    out = jax.tree.unflatten(exported.out_tree, exported.out_avals)
    items = out.items() if isinstance(out, dict) else [("predictions", out)]
    return "\n".join([f"input  images: {fmt(a)}" for a in exported.in_avals]
                     + [f"output {k}: {fmt(a)}" for k, a in items])


def describe_onnx(path) -> str:
    """The same lines for an ONNX file (needs ``onnx``)."""
    onnx = _require("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph

    def fmt(v):
        t = v.type.tensor_type
        dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
        return f"{onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)}[{','.join(dims)}]"

    return "\n".join([f"input  {v.name}: {fmt(v)}" for v in graph.input]
                     + [f"output {v.name}: {fmt(v)}" for v in graph.output])


def check_input_size(input_size) -> tuple[int, int]:
    """(h, w) as ints; a UserError unless both are positive multiples of 32."""
    try:
        h, w = (int(s) for s in input_size)
    except (TypeError, ValueError):
        raise UserError(f"input size must be (height, width), not {input_size!r}",
                        "input_size") from None
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise UserError(f"input size {h}x{w} must be positive multiples of 32", "input_size")
    return h, w


def _platforms(platforms) -> tuple[str, ...]:
    if isinstance(platforms, str):
        platforms = [p for p in platforms.split(",") if p]
    platforms = tuple(dict.fromkeys(p.strip().lower() for p in platforms))
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms:
        raise UserError(f"unknown platform {unknown[0] if unknown else '(none)'}; "
                        f"choose from {', '.join(PLATFORMS)}", "platforms")
    return platforms


def _require(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise UserError(f"ONNX export needs {name}: {_INSTALL}", name) from err


def _max_pool_same_rank3(x, k: int):
    """``max_pool_same`` (stride 1, k x k, -inf padding) on [B, H, W, C] with 3-d windows:
    the W pass over [B*H, W, C], the H pass over [B, H, W*C]. The same values."""
    b, h, w, c = x.shape
    p = k // 2

    def pool_axis1(y):
        return jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, k, 1), (1, 1, 1),
                                     ((0, 0), (p, p), (0, 0)))

    x = pool_axis1(x.reshape(b * h, w, c)).reshape(b, h, w, c)
    return pool_axis1(x.reshape(b, h, w * c)).reshape(b, h, w, c)


@contextlib.contextmanager
def _onnx_friendly_pooling():
    """While tracing for ONNX: the SPP block pools with ``_max_pool_same_rank3``."""
    from yolox_jax.models import blocks

    original = blocks.max_pool_same
    blocks.max_pool_same = _max_pool_same_rank3
    try:
        yield
    finally:
        blocks.max_pool_same = original

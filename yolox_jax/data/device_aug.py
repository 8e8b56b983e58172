"""The official YOLOX training augmentation as one jitted batch function on the accelerator.

With ``data.augment_on="device"`` the host only decodes and pre-scales (``DeviceAugSample`` in
``pipeline.py``); Mosaic assembly, random affine, MixUp, HSV, horizontal flip, the tiny-box
filter and label padding run here, vmapped over the batch, with fixed shapes and no host round
trip. The semantics are those of the host functions in ``transforms.py`` / ``mosaic.py`` (the
official ``yolox/data/datasets/mosaicdetection.py`` MosaicDetection and
``yolox/data/data_augment.py`` random_affine, augment_hsv, TrainTransform).

Input, one row per sample (a batch adds a leading [B]); K boxes per slot, slots 0..3 the mosaic
tiles (0 is the sample's own image), slot 4 the MixUp partner:

    tiles         uint8   [5, H, W, 3]  RGB, each pre-scaled to fit (H, W), top-left; slot 0 and
                                        the partner padded with 114 (the letterbox)
    tile_hw       int32   [5, 2]        true (h, w) of each slot
    tile_boxes    float32 [5, K, 4]     x1, y1, x2, y2 in pixels of the slot
    tile_classes  int32   [5, K]
    tile_mask     bool    [5, K]
    use_mosaic    bool    []            False: slot 0 alone (letterbox + HSV + flip)
    use_mixup     bool    []
    position      uint32  []            the sample's position in the global stream

Output: ``images`` uint8 [B, H, W, 3], ``labels`` float32 [B, M, 5] (cls, cx, cy, w, h) in
input pixels, ``label_mask`` bool [B, M] (M = ``max_labels``), what ``train_step`` takes.

Randomness: the sample's key is ``fold_in(key(seed), position)``, so a sample's augmentation
depends only on (seed, position): not on the batch it lands in, the mesh or the number of
hosts. Which images are combined (mosaic partners, MixUp partner, whether Mosaic / MixUp apply)
is drawn on the host, because the host decodes them.

With ``data.device_partners="batch"`` the host sends slot 0 only (the same fields with a slot
axis of 1) and ``gather_partners`` builds the 5-slot layout above from the batch itself: each
sample's 3 mosaic partners and its MixUp partner are other rows of its process's batch, drawn
from the sample's key, so the result still depends only on (seed, position) and that batch's
rows. Whether Mosaic / MixUp apply stays drawn on the host.

Differences from the host path (both follow the official code; the geometry is the same up to
float32 rounding, boxes agree to ~1e-3 px):
  * resampling: bilinear in float32 rounded to nearest, with cv2.warpAffine's 1/32-pixel
    coordinate grid; OpenCV's fixed-point weights (15 bits in warpAffine, 11 in resize) make the
    host differ by at most a level or two per channel;
  * HSV: the same integer RGB->HSV as OpenCV's 8-bit conversion and the same shifts; the way back
    (HSV->RGB) is OpenCV's float formula in float32, truncated as OpenCV 5.1 does: one level
    away from OpenCV in under 1 % of values;
  * an image with more than K boxes keeps its K largest before the mosaic (the host path keeps
    all until the final ``max_labels`` cut);
  * the random parameters come from ``jax.random`` instead of NumPy, so a given seed gives other
    (equally distributed) augmentations than the host path.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

PAD_VALUE = 114
SLOTS = 5  # 4 mosaic tiles + the MixUp partner
_HSV_SHIFT = 12


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
    """Static options of ``augment_batch`` (hashable: one compilation per value).

    ``mosaic_scale`` (lo, hi) or a float s meaning (1 - s, 1 + s), as the official random_affine.
    """

    input_hw: tuple[int, int]
    max_labels: int = 120
    degrees: float = 10.0
    translate: float = 0.1
    mosaic_scale: tuple[float, float] | float = (0.1, 2.0)
    shear: float = 2.0
    mixup_scale: tuple[float, float] = (0.5, 1.5)
    flip_prob: float = 0.5
    hsv_prob: float = 1.0
    hsv_gains: tuple[int, int, int] = (5, 30, 30)

    def scale_range(self) -> tuple[float, float]:
        s = self.mosaic_scale
        if np.isscalar(s):
            return 1.0 - float(s), 1.0 + float(s)
        return float(s[0]), float(s[1])


# ----------------------------------------------------------------------------- random parameters

def draw_params(key, opts: AugmentOptions) -> dict:
    """One sample's random parameters, as the official code draws them.

    -> {"center": int32 [2] (xc, yc) = int(U(0.5W, 1.5W)), int(U(0.5H, 1.5H));
        "affine": float32 [2, 3] (the official random_affine matrix, ``transforms.compose_affine``);
        "jit": float32 [] ~ U(mixup_scale); "mixup_flip": bool []; "crop": int32 [2] (x_off, y_off)
        in [0, jittered size - target) (0 when the jittered partner is not larger);
        "hsv": int32 [3] gains U(-1, 1) * (5, 30, 30), each zeroed with prob 0.5, truncated,
        all zero unless U < hsv_prob; "flip": bool [] (U < flip_prob)}
    """
    H, W = opts.input_hw
    k = jax.random.split(key, 15)
    u = lambda i, lo=0.0, hi=1.0: jax.random.uniform(k[i], (), jnp.float32, lo, hi)  # noqa: E731
    center = jnp.floor(jnp.stack([u(0, 0.5 * W, 1.5 * W), u(1, 0.5 * H, 1.5 * H)])).astype(jnp.int32)
    lo, hi = opts.scale_range()
    angle = jnp.deg2rad(u(2, -opts.degrees, opts.degrees))
    scale = u(3, lo, hi)
    shear_x = jnp.tan(jnp.deg2rad(u(4, -opts.shear, opts.shear)))
    shear_y = jnp.tan(jnp.deg2rad(u(5, -opts.shear, opts.shear)))
    tx = u(6, -opts.translate, opts.translate) * W
    ty = u(7, -opts.translate, opts.translate) * H
    affine = compose_affine(angle, scale, shear_x, shear_y, tx, ty)
    jit = u(8, *opts.mixup_scale)
    jh, jw = jittered_hw(jit, opts.input_hw)
    crop_k = jax.random.split(k[9])
    crop = jnp.stack([
        jnp.where(jw > W, jax.random.randint(crop_k[0], (), 0, jnp.maximum(jw - W, 1)), 0),
        jnp.where(jh > H, jax.random.randint(crop_k[1], (), 0, jnp.maximum(jh - H, 1)), 0)])
    gains = jax.random.uniform(k[10], (3,), jnp.float32, -1.0, 1.0) * jnp.asarray(opts.hsv_gains, jnp.float32)
    gains = gains * jax.random.bernoulli(k[11], 0.5, (3,))
    hsv_on = u(12) < opts.hsv_prob
    hsv = jnp.where(hsv_on, jnp.trunc(gains), 0.0).astype(jnp.int32)
    return {"center": center, "affine": affine, "jit": jit, "mixup_flip": u(13) > 0.5,
            "crop": crop.astype(jnp.int32), "hsv": hsv, "flip": u(14) < opts.flip_prob}


def compose_affine(angle_rad, scale, shear_x, shear_y, tx, ty):
    """float32 [2, 3]: cv2.getRotationMatrix2D((0, 0), angle, scale) rows r0 = (a, b),
    r1 = (-b, a), then M[0] = r0 + shear_y * r1, M[1] = r1 + shear_x * r0, M[:, 2] = (tx, ty)."""
    a, b = scale * jnp.cos(angle_rad), scale * jnp.sin(angle_rad)
    r0, r1 = jnp.stack([a, b]), jnp.stack([-b, a])
    lin = jnp.stack([r0 + shear_y * r1, r1 + shear_x * r0])
    return jnp.concatenate([lin, jnp.stack([tx, ty])[:, None]], 1).astype(jnp.float32)


def jittered_hw(jit, input_hw):
    """(int(H * jit), int(W * jit)) as int32 scalars: the MixUp partner's resized size."""
    H, W = input_hw
    return (jnp.floor(H * jit).astype(jnp.int32), jnp.floor(W * jit).astype(jnp.int32))


# ----------------------------------------------------------------------------- boxes

def mosaic_boxes(boxes, tile_hw, center, input_hw):
    """[4, K, 4] tile boxes -> [4, K, 4] on the 2H x 2W mosaic canvas, clipped to it.

    Tile i of size (h, w) has its origin at (xc - w or xc, yc - h or yc) (left/right column,
    top/bottom row), as ``mosaic.mosaic_tile``."""
    H, W = input_hw
    xc, yc = center[0], center[1]
    right = jnp.array([0, 1, 0, 1], bool)
    bottom = jnp.array([0, 0, 1, 1], bool)
    ox = jnp.where(right, xc, xc - tile_hw[:4, 1]).astype(jnp.float32)
    oy = jnp.where(bottom, yc, yc - tile_hw[:4, 0]).astype(jnp.float32)
    shift = jnp.stack([ox, oy, ox, oy], -1)[:, None, :]
    out = boxes + shift
    return jnp.clip(out, 0.0, jnp.array([2 * W, 2 * H, 2 * W, 2 * H], jnp.float32))


def affine_boxes(boxes, m, input_hw):
    """[N, 4] xyxy -> [N, 4]: the 4 corners through ``m`` [2, 3], min/max, clipped to
    [0, W] x [0, H] (``transforms.affine_boxes``)."""
    H, W = input_hw
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    cx = jnp.stack([x1, x2, x1, x2], 1)
    cy = jnp.stack([y1, y2, y2, y1], 1)
    px = m[0, 0] * cx + m[0, 1] * cy + m[0, 2]
    py = m[1, 0] * cx + m[1, 1] * cy + m[1, 2]
    out = jnp.stack([px.min(1), py.min(1), px.max(1), py.max(1)], -1)
    return jnp.clip(out, 0.0, jnp.array([W, H, W, H], jnp.float32))


def mixup_boxes(boxes, jit, flip, crop, input_hw):
    """MixUp partner boxes [K, 4] (letterboxed pixels) -> [K, 4] in the blended image: scaled by
    ``jit``, clipped to the jittered image, mirrored in it if ``flip``, shifted by the crop
    offset (x_off, y_off), clipped to [0, W] x [0, H] (``mosaic.mixup``)."""
    H, W = input_hw
    jh, jw = jittered_hw(jit, input_hw)
    jh, jw = jh.astype(jnp.float32), jw.astype(jnp.float32)
    b = jnp.clip(boxes * jit, 0.0, jnp.stack([jw, jh, jw, jh]))
    b = jnp.where(flip, jnp.stack([jw - b[:, 2], b[:, 1], jw - b[:, 0], b[:, 3]], -1), b)
    off = crop.astype(jnp.float32)
    b = b - jnp.stack([off[0], off[1], off[0], off[1]])
    return jnp.clip(b, 0.0, jnp.array([W, H, W, H], jnp.float32))


def hflip_boxes(boxes, width):
    """[N, 4] xyxy mirrored in an image ``width`` wide: x1' = width - x2, x2' = width - x1."""
    return jnp.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], -1)


def pad_labels(classes, boxes_cxcywh, valid, max_labels: int):
    """[N] int, [N, 4], [N] bool -> (labels float32 [M, 5] (cls, cx, cy, w, h), mask bool [M]).

    The valid rows in input order; more than M: the M largest by w * h (earlier first among
    equal areas), still in input order, as ``transforms.pad_labels``."""
    n = classes.shape[0]
    area = boxes_cxcywh[:, 2] * boxes_cxcywh[:, 3]
    by_area = jnp.argsort(jnp.where(valid, -area, jnp.inf), stable=True)
    if n < max_labels:
        by_area = jnp.concatenate([by_area, jnp.full((max_labels - n,), n, by_area.dtype)])
    chosen = by_area[:max_labels]
    chosen_valid = jnp.concatenate([valid, jnp.zeros((1,), bool)])[chosen]
    order = jnp.sort(jnp.where(chosen_valid, chosen, n))  # input order, padding (n) last
    mask = order < n
    safe = jnp.minimum(order, n - 1)
    labels = jnp.concatenate([classes[safe, None].astype(jnp.float32), boxes_cxcywh[safe]], -1)
    return jnp.where(mask[:, None], labels, 0.0), mask


# ----------------------------------------------------------------------------- images

def _bilinear(sample, x, y, fx, fy):
    """Blend of ``sample(xi, yi)`` [..., 3] at the 4 integer neighbours of (x + fx, y + fy)."""
    fx, fy = fx[..., None], fy[..., None]
    top = sample(x, y) * (1 - fx) + sample(x + 1, y) * fx
    bottom = sample(x, y + 1) * (1 - fx) + sample(x + 1, y + 1) * fx
    return top * (1 - fy) + bottom * fy


def mosaic_affine_image(tiles, tile_hw, center, m, input_hw):
    """tiles uint8 [4, H, W, 3] -> uint8 [H, W, 3]: the mosaic canvas warped by ``m``.

    The same as cv2.warpAffine(mosaic canvas, m, (W, H), borderValue=114) without building the
    2H x 2W canvas: every output pixel maps back through m^-1 (coordinates on cv2's 1/32-pixel
    grid) and reads its 4 neighbours from the tile that covers them, or 114 outside every tile
    and the canvas."""
    H, W = input_hw
    xc, yc = center[0], center[1]
    flat = tiles.reshape(4 * H * W, 3)

    def canvas(px, py):
        right, bottom = px >= xc, py >= yc
        t = right.astype(jnp.int32) + 2 * bottom.astype(jnp.int32)
        h, w = tile_hw[t, 0], tile_hw[t, 1]
        tx = px - jnp.where(right, xc, xc - w)
        ty = py - jnp.where(bottom, yc, yc - h)
        inside = ((tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
                  & (px >= 0) & (px < 2 * W) & (py >= 0) & (py < 2 * H))
        idx = (t * H + jnp.clip(ty, 0, H - 1)) * W + jnp.clip(tx, 0, W - 1)
        return jnp.where(inside[..., None], flat[idx].astype(jnp.float32), float(PAD_VALUE))

    lin = m[:, :2]
    inv = jnp.linalg.inv(lin)
    inv_t = -inv @ m[:, 2]
    ys, xs = jnp.meshgrid(jnp.arange(H, dtype=jnp.float32), jnp.arange(W, dtype=jnp.float32), indexing="ij")
    # cv2.warpAffine: round(x * M00 * 1024) + round((y * M01 + M02) * 1024), then >> 5.
    qx = jnp.floor((jnp.round(xs * inv[0, 0] * 1024) + jnp.round((ys * inv[0, 1] + inv_t[0]) * 1024)) / 32)
    qy = jnp.floor((jnp.round(xs * inv[1, 0] * 1024) + jnp.round((ys * inv[1, 1] + inv_t[1]) * 1024)) / 32)
    x0, y0 = jnp.floor(qx / 32), jnp.floor(qy / 32)
    fx, fy = (qx - 32 * x0) / 32, (qy - 32 * y0) / 32
    out = _bilinear(canvas, x0.astype(jnp.int32), y0.astype(jnp.int32), fx, fy)
    return _to_uint8(out)


def mixup_partner_image(partner, jit, flip, crop, input_hw):
    """partner uint8 [H, W, 3] (letterboxed) -> the [H, W, 3] view MixUp blends in.

    The official steps: resize by ``jit`` to (int(H jit), int(W jit)) (cv2.resize INTER_LINEAR:
    pixel centres, edge pixels repeated), mirror if ``flip``, paste top-left on a zero canvas
    of at least (H, W), crop (H, W) at (x_off, y_off) = ``crop``."""
    H, W = input_hw
    jh, jw = jittered_hw(jit, input_hw)
    ys, xs = jnp.meshgrid(jnp.arange(H, dtype=jnp.int32), jnp.arange(W, dtype=jnp.int32), indexing="ij")
    cx, cy = xs + crop[0], ys + crop[1]
    inside = (cx < jw) & (cy < jh)
    u = jnp.where(flip, jw - 1 - cx, cx)
    sx = jnp.clip((u.astype(jnp.float32) + 0.5) * (W / jw.astype(jnp.float32)) - 0.5, 0.0, W - 1)
    sy = jnp.clip((cy.astype(jnp.float32) + 0.5) * (H / jh.astype(jnp.float32)) - 0.5, 0.0, H - 1)
    x0, y0 = jnp.floor(sx), jnp.floor(sy)
    flat = partner.reshape(H * W, 3)

    def sample(x, y):
        return flat[jnp.minimum(y, H - 1) * W + jnp.minimum(x, W - 1)].astype(jnp.float32)

    out = _bilinear(sample, x0.astype(jnp.int32), y0.astype(jnp.int32), sx - x0, sy - y0)
    return jnp.where(inside[..., None], _to_uint8(out), jnp.uint8(0))


def blend(a, b):
    """uint8(0.5 a + 0.5 b) == (a + b) >> 1 for uint8 images of one shape."""
    return ((a.astype(jnp.int32) + b.astype(jnp.int32)) >> 1).astype(jnp.uint8)


def _to_uint8(x):
    return jnp.clip(jnp.round(x), 0, 255).astype(jnp.uint8)


def _div_tables():
    """OpenCV's fixed-point divisors of the 8-bit RGB->HSV conversion (hsv_shift 12)."""
    i = np.arange(1, 256, dtype=np.float64)
    sdiv = np.concatenate([[0], np.round((255 << _HSV_SHIFT) / i)]).astype(np.int32)
    hdiv = np.concatenate([[0], np.round((180 << _HSV_SHIFT) / (6.0 * i))]).astype(np.int32)
    return sdiv, hdiv


def rgb_to_hsv(image):
    """uint8 [..., 3] RGB -> int32 [..., 3] (H in [0, 180], S, V in [0, 255]): OpenCV's
    8-bit COLOR_RGB2HSV, integer for integer."""
    sdiv, hdiv = (jnp.asarray(t) for t in _div_tables())
    rgb = image.astype(jnp.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = jnp.maximum(jnp.maximum(b, g), r)
    diff = v - jnp.minimum(jnp.minimum(b, g), r)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * sdiv[v] + half) >> _HSV_SHIFT
    h = jnp.where(v == r, g - b, jnp.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hdiv[diff] + half) >> _HSV_SHIFT
    h = jnp.where(h < 0, h + 180, h)
    return jnp.stack([h, s, v], -1)


def hsv_to_rgb(hsv):
    """int32 [..., 3] (H in [0, 180), S, V in [0, 255]) -> uint8 [..., 3] RGB: OpenCV's
    8-bit COLOR_HSV2RGB (its float formula in float32, truncated to uint8; a few values in
    10,000 to 1 in 100 come out one level away from OpenCV 5.1's)."""
    h = hsv[..., 0].astype(jnp.float32) * jnp.float32(6.0 / 180.0)
    s = hsv[..., 1].astype(jnp.float32) * jnp.float32(1.0 / 255.0)
    v = hsv[..., 2].astype(jnp.float32) * jnp.float32(1.0 / 255.0)
    h = jnp.where(h >= 6, h - 6, h)
    sector = jnp.floor(h)
    f = h - sector
    sector = sector.astype(jnp.int32)
    tab = jnp.stack([v, v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))], -1)
    # sector -> which tab entry gives (r, g, b); OpenCV's sector_data lists (b, g, r).
    pick = jnp.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]], jnp.int32)
    rgb = jnp.take_along_axis(tab, pick[sector], -1)
    rgb = jnp.where((s == 0)[..., None], v[..., None], rgb)
    # Truncated, not rounded: what OpenCV 5.1's 8-bit conversion gives (on rows wider than
    # 32 pixels; it rounds on shorter ones).
    return jnp.clip(jnp.floor(rgb * 255.0), 0, 255).astype(jnp.uint8)


def augment_hsv(image, gains, region_hw=None):
    """uint8 [H, W, 3] RGB, int32 gains [3] (dh, ds, dv) -> uint8 [H, W, 3].

    H = (H + dh) mod 180, S and V clipped to [0, 255] (``transforms.augment_hsv``); all-zero
    gains return the image unchanged. ``region_hw`` (h, w): only the top-left h x w pixels
    change (the image before letterbox padding)."""
    hsv = rgb_to_hsv(image)
    shifted = jnp.stack([jnp.mod(hsv[..., 0] + gains[0], 180),
                         jnp.clip(hsv[..., 1] + gains[1], 0, 255),
                         jnp.clip(hsv[..., 2] + gains[2], 0, 255)], -1)
    out = hsv_to_rgb(shifted)
    change = jnp.any(gains != 0)
    if region_hw is not None:
        H, W = image.shape[:2]
        ys, xs = jnp.meshgrid(jnp.arange(H), jnp.arange(W), indexing="ij")
        change = change & (ys < region_hw[0]) & (xs < region_hw[1])
        change = change[..., None]
    return jnp.where(change, out, image)


def hflip_image(image, width):
    """uint8 [H, W, 3]: the first ``width`` columns mirrored (a letterboxed image keeps its
    padding on the right)."""
    W = image.shape[1]
    xs = jnp.arange(W)
    src = jnp.where(xs < width, width - 1 - xs, xs)
    return image[:, src]


# ----------------------------------------------------------------------------- one sample, a batch

def augment_sample(sample: dict, params: dict, opts: AugmentOptions) -> dict:
    """One sample (the unbatched input described in the module docstring) and its
    ``draw_params`` -> {"images" uint8 [H, W, 3], "labels" float32 [M, 5], "label_mask" bool [M]}.

    Mosaic branch: tiles around the centre, random affine, MixUp if ``use_mixup``; else slot 0
    as it is (already letterboxed). Then TrainTransform: HSV, flip, boxes to (cx, cy, w, h),
    keep ``min(w, h) > 1``; if that keeps none, the image before HSV / flip with all its boxes
    (also when there are none), as the official TrainTransform."""
    H, W = opts.input_hw
    K = sample["tile_boxes"].shape[1]
    use_mosaic, use_mixup = sample["use_mosaic"], sample["use_mixup"] & sample["use_mosaic"]
    tile_hw = sample["tile_hw"]

    mosaic_img = mosaic_affine_image(sample["tiles"][:4], tile_hw[:4], params["center"],
                                     params["affine"], opts.input_hw)
    partner = mixup_partner_image(sample["tiles"][4], params["jit"], params["mixup_flip"],
                                  params["crop"], opts.input_hw)
    mosaic_img = jnp.where(use_mixup, blend(mosaic_img, partner), mosaic_img)
    image = jnp.where(use_mosaic, mosaic_img, sample["tiles"][0])

    placed = mosaic_boxes(sample["tile_boxes"][:4], tile_hw, params["center"], opts.input_hw)
    placed = affine_boxes(placed.reshape(4 * K, 4), params["affine"], opts.input_hw)
    cp = mixup_boxes(sample["tile_boxes"][4], params["jit"], params["mixup_flip"], params["crop"],
                     opts.input_hw)
    mosaic_all = jnp.concatenate([placed, cp], 0)
    single = jnp.concatenate([sample["tile_boxes"][0], jnp.zeros(((SLOTS - 1) * K, 4), jnp.float32)], 0)
    boxes = jnp.where(use_mosaic, mosaic_all, single)
    mask = sample["tile_mask"]
    valid = jnp.where(use_mosaic, mask.at[4].set(mask[4] & use_mixup),
                      jnp.zeros_like(mask).at[0].set(mask[0])).reshape(-1)
    classes = sample["tile_classes"].reshape(-1)

    # TrainTransform: a mosaic fills (H, W); slot 0 alone is its true size plus padding.
    region_h = jnp.where(use_mosaic, H, tile_hw[0, 0])
    region_w = jnp.where(use_mosaic, W, tile_hw[0, 1])
    aug = augment_hsv(image, params["hsv"], (region_h, region_w))
    flip = params["flip"]
    aug = jnp.where(flip, hflip_image(aug, region_w), aug)
    aug_boxes = jnp.where(flip, hflip_boxes(boxes, region_w.astype(jnp.float32)), boxes)
    aug_cxcywh = _xyxy_to_cxcywh(aug_boxes)
    keep = valid & (jnp.minimum(aug_cxcywh[:, 2], aug_cxcywh[:, 3]) > 1)
    any_kept = keep.any()
    out_image = jnp.where(any_kept, aug, image)
    labels, label_mask = pad_labels(classes, jnp.where(any_kept, aug_cxcywh, _xyxy_to_cxcywh(boxes)),
                                    jnp.where(any_kept, keep, valid), opts.max_labels)
    return {"images": out_image, "labels": labels, "label_mask": label_mask}


def _xyxy_to_cxcywh(b):
    return jnp.stack([(b[:, 0] + b[:, 2]) * 0.5, (b[:, 1] + b[:, 3]) * 0.5,
                      b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], -1)


def sample_keys(seed, positions):
    """uint32 [B] stream positions -> [B] keys ``fold_in(key(seed), position)``."""
    base = jax.random.key(jnp.asarray(seed, jnp.uint32))
    return jax.vmap(lambda p: jax.random.fold_in(base, p))(jnp.asarray(positions, jnp.uint32))


def draw_batch_params(seed, positions, opts: AugmentOptions) -> dict:
    """``draw_params`` of every sample: uint32 [B] positions -> dict of [B, ...] arrays."""
    return jax.vmap(lambda k: draw_params(k, opts))(sample_keys(seed, positions))


_SAMPLE_KEYS = ("tiles", "tile_hw", "tile_boxes", "tile_classes", "tile_mask", "use_mosaic",
                "use_mixup", "position")


def augment_batch(batch: dict, seed, opts: AugmentOptions) -> dict:
    """A host batch of ``DeviceAugSample`` rows ([B, ...] arrays, module docstring) and a seed
    (uint32 scalar) -> {"images" uint8 [B, H, W, 3], "labels" float32 [B, M, 5],
    "label_mask" bool [B, M]}. Pure; jit it with ``opts`` static (``jit_augment_batch``)."""
    samples = {k: batch[k] for k in _SAMPLE_KEYS}
    params = draw_batch_params(seed, samples["position"], opts)
    return jax.vmap(lambda s, p: augment_sample(s, p, opts))(samples, params)


# ----------------------------------------------------------------------------- partners from the batch

# A constant folded into the sample's key for the partner draws: above the 15 subkeys that
# ``draw_params`` splits (with partitionable threefry, split(k, n)[i] == fold_in(k, i)), so the
# partners are independent of the augmentation parameters.
_PARTNER_STREAM = 0x7061_7274


def draw_partners(key, row, has_boxes):
    """One sample's partners among the G rows of its group (its process's batch).

    key: the sample's key; row: int32 [] its row in the group; has_boxes: bool [G] which rows
    have at least one box. -> (int32 [4]: rows for slots 1..3 (mosaic tiles) and slot 4 (MixUp
    partner), bool []: a MixUp partner with boxes exists).

    Mosaic tiles: uniform over the other rows, with replacement (the row itself when G = 1).
    MixUp partner: uniform over the other rows with boxes, as the official code draws it among
    annotated images; if no other row has boxes, the row itself if it has some; else none."""
    G = has_boxes.shape[0]
    k_tiles, k_mix = jax.random.split(jax.random.fold_in(key, _PARTNER_STREAM))
    offsets = jax.random.randint(k_tiles, (3,), 0, max(G - 1, 1))
    tiles = (row + 1 + offsets) % G
    others = has_boxes & (jnp.arange(G) != row)
    candidates = jnp.where(others.any(), others, has_boxes)
    n = candidates.sum()
    u = jax.random.randint(k_mix, (), 0, jnp.maximum(n, 1))
    mix = jnp.argmax(jnp.cumsum(candidates) > u)
    return jnp.concatenate([tiles, mix[None]]).astype(jnp.int32), n > 0


_SLOT_KEYS = ("tiles", "tile_hw", "tile_boxes", "tile_classes", "tile_mask")


def gather_partners(batch: dict, seed, groups: int = 1) -> dict:
    """A batch of one-slot rows (``DeviceAugSample(partners="batch")``: ``tiles`` uint8
    [B, 1, H, W, 3], ``tile_hw`` [B, 1, 2], ``tile_boxes`` [B, 1, K, 4], ``tile_classes`` /
    ``tile_mask`` [B, 1, K], ``use_mosaic``, ``use_mixup``, ``position`` [B]) -> the 5-slot batch
    ``augment_batch`` takes, plus ``partner_rows`` int32 [B, 5] (the batch row of every slot;
    slot 0 is the row itself).

    The batch is ``groups`` equal blocks of rows (one per process, in process order: the global
    batch of ``shard_batch``); partners are drawn (``draw_partners``, keyed by
    ``fold_in(key(seed), position)``) within the row's block, so a row's partners do not depend
    on the mesh. ``use_mixup`` is cleared where the four tiles have no box or no partner has
    any (the official condition: MixUp only on a mosaic with labels). Every slot keeps its
    letterbox padding; the mosaic reads tiles only inside their ``tile_hw``."""
    B = batch["tiles"].shape[0]
    if B % groups:
        raise ValueError(f"batch of {B} rows is not {groups} equal groups")
    G = B // groups
    rows = jnp.arange(B)
    in_group, start = rows % G, rows - rows % G
    has_boxes = batch["tile_mask"][:, 0].any(-1).reshape(groups, G)[rows // G]  # [B, G]
    picked, mixup_ok = jax.vmap(draw_partners)(sample_keys(seed, batch["position"]), in_group,
                                               has_boxes)
    src = jnp.concatenate([rows[:, None], start[:, None] + picked], 1)
    out = {k: batch[k][:, 0][src] for k in _SLOT_KEYS}
    tiles_have_boxes = out["tile_mask"][:, :4].any((1, 2))
    use_mixup = batch["use_mixup"] & batch["use_mosaic"] & mixup_ok & tiles_have_boxes
    return {**batch, **out, "use_mixup": use_mixup, "partner_rows": src.astype(jnp.int32)}


def jit_augment_batch(opts: AugmentOptions, mesh=None, partners: str = "dataset"):
    """``augment_batch`` jitted for ``opts``: ``fn(batch, seed) -> batch``. With a mesh, the
    batch stays sharded over its ``data`` axis in and out (each device augments its own rows;
    no collectives). ``partners="batch"``: the batch has one slot per row and ``gather_partners``
    (one group per process) builds the 5 slots first; with a mesh, the gather reads rows of
    other devices of the process's batch."""
    if partners not in ("dataset", "batch"):
        raise ValueError(f"partners must be 'dataset' or 'batch', got {partners!r}")
    if partners == "batch":
        groups = jax.process_count()
        fn = lambda batch, seed: augment_batch(gather_partners(batch, seed, groups), seed, opts)  # noqa: E731
    else:
        fn = lambda batch, seed: augment_batch(batch, seed, opts)  # noqa: E731
    if mesh is None:
        return jax.jit(fn)
    from jax.sharding import NamedSharding, PartitionSpec as P

    rows, whole = NamedSharding(mesh, P(mesh.axis_names[0])), NamedSharding(mesh, P())
    return jax.jit(fn, in_shardings=(rows, whole), out_shardings=rows)


def options_from_config(d, max_labels: int | None = None) -> AugmentOptions:
    """``AugmentOptions`` from a ``DataConfig`` (its augmentation keys)."""
    scale = d.mosaic_scale
    scale = float(scale) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
    return AugmentOptions(
        input_hw=(int(d.input_size[0]), int(d.input_size[1])),
        max_labels=int(max_labels if max_labels is not None else d.max_labels),
        degrees=float(d.degrees), translate=float(d.translate), mosaic_scale=scale,
        shear=float(d.shear), mixup_scale=(float(d.mixup_scale[0]), float(d.mixup_scale[1])),
        flip_prob=float(d.flip_prob), hsv_prob=float(d.hsv_prob))


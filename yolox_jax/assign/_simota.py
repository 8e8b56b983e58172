"""SimOTA label assignment with static shapes (docs/official-behaviour.md §3.1-3.3).

One image per call; ``jax.vmap`` it over a batch. Ground truths are padded to a fixed ``G`` and
masked, anchors are the full grid ``A``: every intermediate is ``[G, A]`` or smaller, never
``[G, A, C]`` (the class cost is a per-anchor sum plus a gather of one class per gt).

The data-dependent steps of the official implementation map to fixed-shape equivalents:

* "candidate anchors" (a boolean index into the anchors) -> a mask ``[A]``; non-candidates get an
  infinite cost and a zero IoU, so they can neither be picked nor count towards dynamic k;
* ``torch.topk(cost[g], k_g, largest=False)`` with a per-gt ``k_g`` -> one top-k with the
  static upper bound ``topk_iou`` on every row, keeping the first ``k_g`` columns. Ties go to the
  lower anchor index (``lax.top_k`` order), a deterministic version of what torch does;
* conflict resolution -> ``argmin`` of the cost over all (valid) gts, as in the official code.

Performance (XLA:CPU; see docs/benchmarks.md): every materialised ``[G, A]`` array costs a
full pass plus fresh pages, so the code keeps their number low and avoids the slow primitives:

* ``lax.top_k`` over 8400 anchors is replaced by an exact two-level top-k (``top_k_last``): the
  maximum of each contiguous block of anchors, ``lax.top_k`` over the block maxima, and
  ``lax.top_k`` over the elements of the k best blocks only (same values, indices and tie order);
* the picked ``(gt, anchor)`` pairs are never scattered into a ``[G, A]`` matrix: the per-anchor
  pick count and sole picker are scatter-add / scatter-min into ``[A]``;
* ``argmin`` over gts (a variadic reduce, ~10x slower than ``min`` on XLA:CPU) is a ``min``
  followed by a ``min`` of the row index over the rows that reach it;
* the conflict ``argmin`` is taken over the ``G * K`` picked columns only;
* the one-class lookup per gt gathers logits (rows of the transposed ``[C, A]`` logits) and
  evaluates the two log terms on ``[G, A]`` (see ``pairwise_cls_cost``);
* the geometry tests are kept as float margins, so the candidate union is a ``max`` reduction
  and no boolean ``[G, A]`` is materialised; padded gt rows are masked at the consumers.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax.ops.boxes import pairwise_iou_cxcywh

# Cost added to pairs outside the geometry constraint; values of the official code versions.
PENALTY_CENTER = 1e6       # candidate_rule="center" (YOLOX 0.3.0 after PR #1589)
PENALTY_BOX_OR_CENTER = 1e5  # candidate_rule="box_or_center" (legacy, and mmdetection)
DEFAULT_RADIUS = {"center": 1.5, "box_or_center": 2.5}
# A valid-looking box for padded gt rows: keeps junk (NaN, 1e30) out of every arithmetic path.
_SAFE_BOX = (0.0, 0.0, 1.0, 1.0)


class Assignment(NamedTuple):
    """Result of a label assignment for one image (add a leading batch axis under vmap).

    fg_mask [A] bool: foreground (positive) anchors.
    matched_gt [A] int32: gt row of each anchor (meaningful where ``fg_mask``; 0 elsewhere).
    matched_iou [A] float32: IoU of the prediction with its matched gt, 0 where not fg.
    num_fg int32 []: number of foreground anchors.
    matched_class [A] int32: class of the matched gt (0 where not fg).
    max_iou [A] float32: max IoU of each prediction with any valid gt (0 without gts); the
        objectness target for negatives in the ``obj_target="max_iou"`` loss variant (None from
        ``simota_batch(..., with_max_iou=False)``).
    dynamic_k [G] int32: number of anchors each gt asked for (0 for padded rows).
    candidate_mask [A] bool: anchors that took part in the assignment (geometry candidates).
    quality [A] float32 or None: the soft class target of each foreground anchor, the value put
        at its matched class (None: ``matched_iou``, YOLOX's IoU-aware target); e.g. TOOD's
        normalised alignment metric.
    weight [A] float32 or None: a per-anchor weight of the foreground loss terms (None: 1).
    """

    fg_mask: jax.Array
    matched_gt: jax.Array
    matched_iou: jax.Array
    num_fg: jax.Array
    matched_class: jax.Array
    max_iou: jax.Array
    dynamic_k: jax.Array
    candidate_mask: jax.Array
    quality: Optional[jax.Array] = None
    weight: Optional[jax.Array] = None


def sanitize_gts(gt_boxes, gt_classes, gt_mask, num_classes: int):
    """Replace padded gt rows by a harmless box and class 0 so junk never reaches arithmetic.

    gt_boxes [G, 4] cxcywh, gt_classes [G], gt_mask [G] bool -> (boxes [G, 4] f32, classes [G] i32).
    """
    gt_mask = gt_mask.astype(bool)
    boxes = jnp.where(gt_mask[:, None], gt_boxes.astype(jnp.float32),
                      jnp.asarray(_SAFE_BOX, jnp.float32))
    classes = jnp.where(gt_mask, gt_classes, 0).astype(jnp.int32)
    # Out-of-range class ids on valid rows would silently gather garbage: clip like one_hot would fail.
    classes = jnp.clip(classes, 0, num_classes - 1)
    return boxes, classes


def geometry_margins(grid_xy, strides, gt_boxes, *, candidate_rule: str, center_radius: float):
    """Float form of ``geometry``: ``(region [G, A], any_region [G, A])`` margins whose sign is the
    test (``> 0`` is inside; the same float32 arithmetic and the same strict comparison). A
    union over gts is then a ``max`` reduction (``any_g(m > 0) == (max_g m) > 0``), which fuses
    with the arithmetic instead of materialising a boolean ``[G, A]``."""
    strides = strides.astype(jnp.float32)
    ax = ((grid_xy[:, 0] + 0.5) * strides)[None, :]
    ay = ((grid_xy[:, 1] + 0.5) * strides)[None, :]
    cx, cy = gt_boxes[:, 0:1], gt_boxes[:, 1:2]
    dist = (strides * center_radius)[None, :]
    m_center = jnp.minimum(jnp.minimum(ax - (cx - dist), ay - (cy - dist)),
                           jnp.minimum((cx + dist) - ax, (cy + dist) - ay))
    if candidate_rule == "center":
        return m_center, m_center
    if candidate_rule == "box_or_center":
        hw, hh = 0.5 * gt_boxes[:, 2:3], 0.5 * gt_boxes[:, 3:4]
        m_box = jnp.minimum(jnp.minimum(ax - (cx - hw), ay - (cy - hh)),
                            jnp.minimum((cx + hw) - ax, (cy + hh) - ay))
        return jnp.minimum(m_box, m_center), jnp.maximum(m_box, m_center)
    raise ValueError(f"candidate_rule must be 'center' or 'box_or_center', got {candidate_rule!r}")


def geometry(grid_xy, strides, gt_boxes, *, candidate_rule: str, center_radius: float):
    """Geometry relation of every (gt, anchor) pair.

    Returns ``(in_region [G, A] bool, any_region [G, A] bool)``: ``in_region`` is the pair test that
    escapes the penalty, ``any_region`` the per-pair test whose union over gts makes an anchor a
    candidate. For "center" both are the centre test (|anchor - gt centre| < r * s on both axes,
    strict); for "box_or_center" ``in_region`` = in_box AND in_centre, ``any_region`` = in_box OR
    in_centre (legacy rule). The subtraction order mirrors the official float32 arithmetic
    (edges first, then anchor - edge), so boundary anchors fall on the same side.
    """
    region, any_region = geometry_margins(grid_xy, strides, gt_boxes, candidate_rule=candidate_rule,
                                          center_radius=center_radius)
    return region > 0.0, any_region > 0.0


def pairwise_cls_cost(cls_logits, obj_logits, gt_classes):
    """Official SimOTA class cost ``sum_c BCE(sqrt(sig(cls) * sig(obj)), onehot(gt))`` -> [G, A].

    cls_logits [A, C], obj_logits [A], gt_classes [G] int32 (in range; ``sanitize_gts`` clips).
    The sum over classes splits into a per-anchor term with all-zero targets (an [A, C] pass
    reduced to [A]) plus a correction for the one positive class, so only [A, C] and [G, A]
    arrays exist. The correction gathers the *logit* of each gt's class (one [G, A] gather of
    contiguous rows of the transposed logits) and evaluates the two log terms on it: on XLA:CPU
    this beats gathering precomputed [A, C] log tables, because XLA fuses the table computation
    into the gather and recomputes it per gathered element with strided reads. Logs are clamped
    at -100 like ``F.binary_cross_entropy``, and ``log(1 - p)`` is taken literally (not log1p) as
    torch does, in float32.
    """
    x = cls_logits.astype(jnp.float32)
    sig_obj = jax.nn.sigmoid(obj_logits.astype(jnp.float32))
    p = jnp.sqrt(jax.nn.sigmoid(x) * sig_obj[:, None])                      # [A, C]
    neg_sum = -jnp.sum(jnp.maximum(jnp.log(1.0 - p), -100.0), axis=-1)     # [A]: all targets 0
    x_y = jnp.take(x.T, gt_classes, axis=0, mode="clip")                    # [G, A]
    p_y = jnp.sqrt(jax.nn.sigmoid(x_y) * sig_obj[None, :])
    return (neg_sum[None, :] + jnp.maximum(jnp.log(1.0 - p_y), -100.0)
            - jnp.maximum(jnp.log(p_y), -100.0))


def _total_order_key(x):
    """float32 -> int32 key, monotone in the IEEE total order that ``lax.top_k`` sorts by
    (-NaN < -inf < ... < -0 < +0 < ... < +inf < +NaN). The map is its own inverse."""
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _block_size(n: int, k: int) -> Optional[int]:
    """Block length for ``top_k_last`` (None: plain ``lax.top_k`` is as good)."""
    if k < 1 or n < 8 * k:
        return None
    ideal = max(2, round((n / k) ** 0.5))      # balances n / bs block maxima against k * bs
    for bs in sorted(range(max(2, int(0.7 * ideal)), int(1.5 * ideal) + 1),
                     key=lambda b: abs(b - ideal)):
        if n % bs == 0:
            return bs                          # a divisor: no padding copy
    return ideal


def top_k_last(x, k: int, block: Optional[int] = None, at: Optional[Callable] = None, *,
               columns: bool = False):
    """``lax.top_k(x, k)`` along the last axis, computed in two levels; identical results.

    XLA:CPU's top-k costs several ns per element; a reduction about one. With contiguous blocks of
    ``bs`` elements: block maxima (total order) -> ``lax.top_k`` of the ``n / bs`` maxima -> the
    ``k`` best blocks, re-sorted by position -> ``lax.top_k`` of their ``k * bs`` elements. Every
    element of the true top-k lies in one of the k best blocks when blocks are ranked by their best
    element under (value descending, index ascending), which is what ``lax.top_k`` on the maxima
    does for contiguous blocks (equal maxima -> the lower block holds the lower index). Keeping the
    chosen blocks in position order preserves the lower-index-first tie order in the second level.

    ``block``: block length; None picks one from the sizes (or falls back to ``lax.top_k`` for
    short rows). ``at``: optional ``at(idx [..., m] int32) -> [..., m]``, the values of ``x`` at
    those indices computed afresh; the second level then reads its ``k * bs`` candidates from it
    instead of gathering them from ``x``, so that XLA need not store ``x`` when it is an
    expression (the block maxima fuse with it). It should return ``x``'s values: where XLA
    rounds the same formula differently in the two places (a last-bit difference), only which of
    two elements within a few ulp of each other is picked can change.
    ``columns``: ``x`` is ``[..., n, m]`` and the top-k runs down each of its ``m`` columns (the
    result is that of ``lax.top_k(swapaxes(x, -1, -2), k)``; ``at`` gets and returns
    ``[..., m, k * bs]``). The block maxima are reduced in ``x``'s own layout, so an expression
    whose natural layout has the ranked axis first (a per-anchor gather of a few values, say) is
    never transposed.
    Returns ``(values [..., k], indices [..., k] int32)`` (``[..., m, k]`` with ``columns``).
    """
    axis = -2 if columns else -1
    n = x.shape[axis]
    k = int(k)
    bs = _block_size(n, k) if block is None else int(block)
    if bs is None or bs < 2 or -(-n // bs) < k:
        return jax.lax.top_k(jnp.swapaxes(x, -1, -2) if columns else x, k)
    nb = -(-n // bs)
    if nb * bs != n:   # padding ranks last (-NaN is the smallest value) and loses every tie
        shape = list(x.shape)
        shape[axis] = nb * bs - n
        x = jnp.concatenate([x, jnp.full(shape, -jnp.nan, x.dtype)], axis=axis)
    if columns:
        xb = x.reshape(x.shape[:-2] + (nb, bs, x.shape[-1]))
        key = jnp.swapaxes(jnp.max(_total_order_key(xb), axis=-2), -1, -2)   # [..., m, nb]
    else:
        xb = x.reshape(x.shape[:-1] + (nb, bs))
        key = jnp.max(_total_order_key(xb), axis=-1)                       # [..., nb]
    block_max = jax.lax.bitcast_convert_type(_total_order_key(key), x.dtype)
    lead = block_max.shape[:-1]
    _, blocks = jax.lax.top_k(block_max, k)
    blocks = jnp.sort(blocks, axis=-1)                                       # [..., k]
    if at is None:
        rows = jnp.moveaxis(xb, -1, -3) if columns else xb                  # [..., nb, bs]
        cand = jnp.take_along_axis(rows, blocks[..., None], axis=-2, mode="clip")  # [..., k, bs]
    else:
        pos = (blocks[..., None] * bs + jnp.arange(bs, dtype=blocks.dtype)).reshape(lead + (k * bs,))
        cand = jnp.where(pos < n, at(jnp.minimum(pos, n - 1).astype(jnp.int32)),
                         jnp.asarray(-jnp.nan, x.dtype))
    values, j = jax.lax.top_k(cand.reshape(lead + (k * bs,)), k)
    idx = jnp.take_along_axis(blocks, j // bs, axis=-1, mode="clip") * bs + j % bs
    return values, idx.astype(jnp.int32)


def dynamic_k(iou_cand, gt_mask, *, topk_iou: int = 10, k_rounding: str = "floor"):
    """k_g = max(1, floor|round(sum of the top-``topk_iou`` candidate IoUs of gt g)); 0 for padding.

    iou_cand [G, A] IoUs with non-candidates zeroed (so fewer than ``topk_iou`` candidates adds
    zeros, the same as the official ``min(10, n_candidates)``). Returns [G] int32.
    """
    k_top = min(int(topk_iou), iou_cand.shape[1])
    top_ious, _ = top_k_last(iou_cand, k_top)  # descending, as torch.topk returns them
    total = jnp.sum(top_ious, axis=1)
    if k_rounding == "floor":
        k = jnp.floor(total)
    elif k_rounding == "round":
        k = jnp.round(total)
    else:
        raise ValueError(f"k_rounding must be 'floor' or 'round', got {k_rounding!r}")
    return jnp.where(gt_mask, jnp.maximum(k.astype(jnp.int32), 1), 0)


def lowest_cost_picks(cost, k, max_k: int):
    """Per gt row, its ``k[g]`` lowest-cost anchors (``k <= max_k``); inf costs never count.

    cost [G, A] float32 (inf = forbidden), k [G] int32 -> ``(idx [G, K] int32, take [G, K] bool)``
    with ``K = min(max_k, A)``: anchor ``idx[g, j]`` is picked by gt ``g`` iff ``take[g, j]``.
    Ties go to the lower anchor index (``lax.top_k`` order).
    """
    max_k = min(int(max_k), cost.shape[1])
    neg_top, idx = top_k_last(-cost, max_k)                              # [G, K]
    take = (jnp.arange(max_k)[None, :] < k[:, None]) & jnp.isfinite(neg_top)
    return idx, take


def select_lowest_cost(cost, k, max_k: int):
    """``lowest_cost_picks`` as a matching matrix [G, A] bool (for inspection; ``simota`` does
    not build it)."""
    g, a = cost.shape
    idx, take = lowest_cost_picks(cost, k, max_k)
    rows = jnp.broadcast_to(jnp.arange(g)[:, None], idx.shape)
    return jnp.zeros((g, a), bool).at[rows, idx].max(take)


def first_argmin(x, axis: int = 0):
    """``jnp.argmin(x, axis)`` (first minimum; first NaN if any) without a variadic reduce."""
    m = jnp.min(x, axis=axis, keepdims=True)
    nan = jnp.isnan(x)
    # XLA:CPU's min may drop NaNs (fast min/max), so the NaN case is explicit.
    hit = jnp.where(jnp.any(nan, axis=axis, keepdims=True), nan, x == m)
    n = x.shape[axis]
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, axis % x.ndim)
    return jnp.min(jnp.where(hit, iota, n), axis=axis)


def resolve_picks(idx, take, cost):
    """One gt per anchor from the picks of ``lowest_cost_picks``: anchors picked by several gts go
    to ``argmin_g cost[g, a]`` over all gts, as in the official code.

    idx, take [G, K], cost [G, A] -> (fg_mask [A] bool, matched_gt [A] int32). The argmin is
    taken only over the ``G * K`` picked columns (a [G, G * K] gather), not all A anchors.
    """
    g, a = cost.shape
    flat = idx.reshape(-1)
    where = jnp.where(take.reshape(-1), flat, a)          # index a = dropped
    rows = jnp.broadcast_to(jnp.arange(g, dtype=jnp.int32)[:, None], idx.shape).reshape(-1)
    count = jnp.zeros((a,), jnp.int32).at[where].add(1, mode="drop")
    sole = jnp.zeros((a,), jnp.int32).at[where].max(rows, mode="drop")   # the only picker
    best_of_pick = first_argmin(jnp.take(cost, flat, axis=1, mode="clip"), axis=0)   # [G * K]
    best = jnp.zeros((a,), jnp.int32).at[where].max(best_of_pick, mode="drop")  # all equal
    fg = count > 0
    matched = jnp.where(count > 1, best, sole)
    return fg, jnp.where(fg, matched, 0).astype(jnp.int32)


def resolve_conflicts(matching, cost):
    """One gt per anchor: anchors chosen by several gts go to ``argmin_g cost[g, a]`` over all gts.

    matching [G, A] bool, cost [G, A] -> (fg_mask [A] bool, matched_gt [A] int32).
    """
    count = jnp.sum(matching, axis=0)
    sole = first_argmin(~matching, axis=0)
    best = first_argmin(cost, axis=0)
    matched = jnp.where(count > 1, best, sole).astype(jnp.int32)
    fg = count > 0
    return fg, jnp.where(fg, matched, 0)


def simota(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, gt_mask,
           *, center_radius: Optional[float] = None, candidate_rule: str = "center",
           soft_center_prior: Optional[float] = None, topk_iou: int = 10,
           k_rounding: str = "floor", iou_weight: float = 3.0) -> Assignment:
    """SimOTA for one image, equal to the official YOLOX SimOTA with the default options.

    Args:
      pred_boxes: [A, 4] decoded cxcywh predictions (pixels).
      cls_logits: [A, C] class logits. obj_logits: [A] objectness logits.
      grid_xy: [A, 2] (x index, y index) of each anchor in its level. strides: [A].
      gt_boxes: [G, 4] cxcywh. gt_classes: [G] int. gt_mask: [G] bool (False rows may hold junk).
      center_radius: half-size of the centre region in strides; default 1.5 for "center",
        2.5 for "box_or_center" (the values of the respective official versions).
      candidate_rule: "center" (official since Jan 2023): candidates are anchors in the centre
        region of any gt, pairs outside the gt's own region cost +1e6. "box_or_center" (legacy
        YOLOX / mmdetection): candidates are anchors inside any gt box OR centre region, pairs
        that are not (in box AND in centre) cost +1e5.
      soft_center_prior: None (official) or a float c: no anchor is excluded; every anchor is a
        candidate (also for the dynamic-k IoU sum) and pairs outside the region pay c instead of
        the hard penalty (the "centre prior" cost of OTA).
      topk_iou: number of largest candidate IoUs summed for dynamic k (official 10, seed 20).
      k_rounding: "floor" (official ``int()`` truncation) or "round" (nearest, half to even).
      iou_weight: weight of ``-log(IoU + 1e-8)`` in the cost (official 3.0).

    Returns:
      ``Assignment``; everything is computed under ``stop_gradient``.
    """
    if center_radius is None:
        center_radius = DEFAULT_RADIUS.get(candidate_rule, 1.5)
    sg = jax.lax.stop_gradient
    pred_boxes, cls_logits, obj_logits = sg(pred_boxes), sg(cls_logits), sg(obj_logits)
    gt_mask = sg(gt_mask).astype(bool)
    num_classes = cls_logits.shape[-1]
    boxes, classes = sanitize_gts(sg(gt_boxes), sg(gt_classes), gt_mask, num_classes)

    _, any_m = geometry_margins(grid_xy, strides, boxes, candidate_rule=candidate_rule,
                                center_radius=center_radius)
    candidate = _candidates(any_m, gt_mask, soft_center_prior)
    fg, matched, matched_iou, k = _assign_core(
        pred_boxes, cls_logits, obj_logits, grid_xy, strides, boxes, classes, gt_mask, candidate,
        candidate_rule=candidate_rule, center_radius=center_radius,
        soft_center_prior=soft_center_prior, topk_iou=topk_iou, k_rounding=k_rounding,
        iou_weight=iou_weight)
    return _finish(fg, matched, matched_iou, k, candidate, classes,
                   _max_iou(boxes, gt_mask, pred_boxes))


def _candidates(any_m, gt_mask, soft_center_prior):
    """Candidate anchors [A] bool: in the region of some valid gt (or every anchor, when the soft
    centre prior replaces exclusion by a cost and the image has a gt). any_m [G, A] margins."""
    if soft_center_prior is None:   # a float "any": a NaN margin (NaN box) counts as outside
        inside = gt_mask[:, None] & (any_m > 0.0)
        return jnp.max(jnp.where(inside, any_m, -jnp.inf), axis=0) > 0.0
    return jnp.full(any_m.shape[1:], jnp.any(gt_mask))


def grid_levels(grid_xy, strides):
    """Level layout ``((offset, height, width, stride), ...)`` of a concrete anchor grid laid out
    as ``anchor_grid`` makes it (levels one after another, row-major), else None (traced arrays
    or another layout)."""
    try:
        gxy = np.asarray(grid_xy)
        st = np.asarray(strides)
    except (TypeError, jax.errors.TracerArrayConversionError):
        return None
    if gxy.ndim != 2 or gxy.shape[1] != 2 or st.ndim != 1 or len(st) != len(gxy) or not len(st):
        return None
    levels, start = [], 0
    while start < len(st):
        stop = start + int(np.argmax(st[start:] != st[start])) if np.any(st[start:] != st[start]) \
            else len(st)
        h, w = int(gxy[stop - 1, 1]) + 1, int(gxy[stop - 1, 0]) + 1
        yv, xv = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        if stop - start != h * w or not np.array_equal(
                gxy[start:stop], np.stack([xv, yv], -1).reshape(-1, 2)):
            return None
        levels.append((start, h, w, float(st[start])))
        start = stop
    return tuple(levels)


def _window_candidates(levels, boxes, gt_mask, center_radius: float):
    """``_candidates`` for the "center" rule without the ``[G, A]`` pass: every gt tests only a
    ``(ceil(2r) + 2)^2`` window of anchors around its centre on each level, with the same float32
    arithmetic and strict comparisons as ``geometry_margins`` (so the same anchors pass), and the
    passing ones are scattered into ``[A]``. The window has one anchor of slack on each side of
    the at most ``ceil(2r)`` anchor centres per axis that can lie strictly inside the region.

    levels: ``grid_levels`` output; boxes [G, 4] sanitized cxcywh; gt_mask [G] -> [A] bool.
    """
    a = levels[-1][0] + levels[-1][1] * levels[-1][2]
    n = int(np.ceil(2 * center_radius)) + 2
    steps = jnp.arange(n, dtype=jnp.float32)
    cx, cy = boxes[:, 0:1], boxes[:, 1:2]
    hits = jnp.zeros((a,), bool)
    for offset, h, w, stride in levels:
        s = jnp.float32(stride)
        dist = s * jnp.float32(center_radius)
        lo_x = jnp.floor((cx - dist) / s - 0.5)       # first anchor index right of the left edge,
        lo_y = jnp.floor((cy - dist) / s - 0.5)       # give or take one
        xs = jnp.clip(lo_x, -2.0, w + 1.0) + steps[None, :]                     # [G, n] index
        ys = jnp.clip(lo_y, -2.0, h + 1.0) + steps[None, :]
        ax = (xs + 0.5) * s                                                      # as the grid does
        ay = (ys + 0.5) * s
        ok_x = (ax - (cx - dist) > 0.0) & ((cx + dist) - ax > 0.0) & (xs >= 0) & (xs < w)
        ok_y = (ay - (cy - dist) > 0.0) & ((cy + dist) - ay > 0.0) & (ys >= 0) & (ys < h)
        ok = ok_y[:, :, None] & ok_x[:, None, :] & gt_mask[:, None, None]       # [G, n, n]
        idx = offset + ys.astype(jnp.int32)[:, :, None] * w + xs.astype(jnp.int32)[:, None, :]
        hits = hits.at[jnp.where(ok, idx, a).reshape(-1)].set(True, mode="drop")
    return hits


def _max_iou(boxes, gt_mask, pred_boxes):
    """Max IoU of every prediction with any valid gt: [G, 4], [G], [A, 4] -> [A] (0 without gts)."""
    iou_all = pairwise_iou_cxcywh(boxes, pred_boxes.astype(jnp.float32))           # fused, [G, A]
    return jnp.max(jnp.where(gt_mask[:, None], iou_all, 0.0), axis=0, initial=0.0)


def _finish(fg, matched, matched_iou, k, candidate, classes, max_iou):
    """Assemble an ``Assignment`` over all ``A`` anchors (adds num_fg and matched_class)."""
    matched_class = jnp.where(fg, jnp.take(classes, matched, mode="clip"), 0)
    return Assignment(
        fg_mask=fg,
        matched_gt=matched,
        matched_iou=matched_iou,
        num_fg=jnp.sum(fg).astype(jnp.int32),
        matched_class=matched_class.astype(jnp.int32),
        max_iou=max_iou,
        dynamic_k=k,
        candidate_mask=candidate,
    )


def _assign_core(pred_boxes, cls_logits, obj_logits, grid_xy, strides, boxes, classes, gt_mask,
                 candidate, *, candidate_rule, center_radius, soft_center_prior, topk_iou,
                 k_rounding, iou_weight):
    """Cost, dynamic k, picks and conflict resolution over the anchors given (all ``A`` of them,
    or a compacted subset ``U`` that holds every candidate in anchor order).

    boxes/classes: sanitized gts [G, 4] / [G]; candidate [U] bool. Returns
    ``(fg [U] bool, matched [U] int32, matched_iou [U] f32, k [G] int32)``.
    """
    region_m, _ = geometry_margins(grid_xy, strides, boxes, candidate_rule=candidate_rule,
                                   center_radius=center_radius)
    if soft_center_prior is None:
        penalty = PENALTY_CENTER if candidate_rule == "center" else PENALTY_BOX_OR_CENTER
    else:
        penalty = float(soft_center_prior)
    valid = gt_mask[:, None]
    # Padded rows hold a safe box; their IoU/cost never escape the ``pair_ok`` / ``valid`` masks.
    iou = pairwise_iou_cxcywh(boxes, pred_boxes.astype(jnp.float32))   # [G, U]
    pair_ok = valid & candidate[None, :]
    iou_cand = jnp.where(pair_ok, iou, 0.0)

    cost = (pairwise_cls_cost(cls_logits, obj_logits, classes)
            + iou_weight * -jnp.log(iou + 1e-8)
            + jnp.where(region_m > 0.0, 0.0, jnp.float32(penalty)))
    cost = jnp.where(pair_ok, cost, jnp.inf)

    k = dynamic_k(iou_cand, gt_mask, topk_iou=topk_iou, k_rounding=k_rounding)
    idx, take = lowest_cost_picks(cost, k, topk_iou)
    fg, matched = resolve_picks(idx, take, cost)
    matched_iou = jnp.where(
        fg, jnp.take_along_axis(iou, matched[None, :], axis=0, mode="clip")[0], 0.0)
    return fg, matched, matched_iou, k


def _switch_by_conds(index, branches, operand):
    """``lax.switch`` as a chain of two-way ``lax.cond``s. On XLA:CPU (jax 0.10) a three-way
    conditional around this assignment ran 2.5x slower than the same branch under nested
    two-way conds (24 vs 10 ms, batch 8 at 640 px); the chain costs one scalar test per level."""
    if len(branches) == 1:
        return branches[0](operand)
    return jax.lax.cond(index == 0, branches[0],
                        lambda x: _switch_by_conds(index - 1, branches[1:], x), operand)


# Default gt-count buckets of ``simota_batch`` (the padded size G is always the last bucket).
DEFAULT_GT_BUCKETS = (8, 32)
# Size of the compacted anchor axis per gt row. Under the default "center" rule with r = 1.5 a
# gt makes at most ceil(2r) = 3 anchor centres per axis and level candidates: 3 x 3 x 3 levels.
# It only sizes the buffer: a batch whose candidates do not fit takes the dense path, so the
# bound never changes a result (float rounding at a region edge, other radii or strides).
CANDIDATES_PER_GT = 27


def simota_batch(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes,
                 gt_mask, *, gt_buckets=DEFAULT_GT_BUCKETS,
                 candidates_per_gt: Optional[int] = CANDIDATES_PER_GT,
                 center_radius: Optional[float] = None, candidate_rule: str = "center",
                 soft_center_prior: Optional[float] = None, topk_iou: int = 10,
                 k_rounding: str = "floor", iou_weight: float = 3.0,
                 with_max_iou: bool = True) -> Assignment:
    """SimOTA for a batch: the same result as ``jax.vmap(simota)`` on every field, much less work.

    Ground truths are padded to a fixed G for static shapes, but a batch rarely fills G, and a gt
    can only make ~27 anchors (of 8400 at 640 px) candidates. Two exact reductions, both decided
    on device (no host round trip, one compiled program):

    * gt buckets: the valid rows of every image are moved to the front (stable, so ties and
      returned indices refer to the caller's rows), and ``lax.cond`` runs the assignment on the
      first ``g`` rows only, ``g`` = the smallest of ``gt_buckets`` (and G) that holds the
      largest gt count in the batch. Padded rows never influence SimOTA, so this is exact.
    * anchor compaction (default "center" rule, no soft prior): the candidate anchors of each
      image are gathered, in anchor order, into ``U = candidates_per_gt * g`` slots and the cost,
      dynamic k, top-k picks and conflicts are computed on ``[g, U]`` instead of ``[G, A]``.
      Non-candidates can never be picked nor count for dynamic k, and order-preserving
      compaction keeps the lower-index tie rule, so this is exact too; a batch whose candidate
      count exceeds ``U`` falls back to the dense path (``lax.cond``). ``None`` disables it.
      When ``grid_xy`` and ``strides`` are concrete (NumPy, as ``anchor_grid`` makes them and
      the loss passes them), the candidates themselves are found by testing a small window of
      anchors around each gt centre per level instead of all ``A`` anchors.

    Under ``jax.vmap`` the conds would turn into selects (every branch runs), so call this on
    the batch, not per image. Each bucket and path is a separate branch of the compiled
    program: more buckets mean faster steps on varied batches but a longer compile.

    Args:
      pred_boxes [B, A, 4], cls_logits [B, A, C], obj_logits [B, A], grid_xy [A, 2], strides [A],
      gt_boxes [B, G, 4], gt_classes [B, G], gt_mask [B, G]; options as in ``simota``.
      gt_buckets: row counts to specialise for (G itself is always added).
      candidates_per_gt: compacted anchor slots per gt row (None: no compaction).
      with_max_iou: compute ``Assignment.max_iou`` (a ``[g, A]`` IoU pass, ~1/3 of the time
        at 640 px; only the ``obj_target="max_iou"/"iou"`` losses use it). False leaves the
        field None.

    Returns:
      ``Assignment`` with a leading batch axis; ``matched_gt`` and ``dynamic_k`` index the
      caller's gt rows.
    """
    if center_radius is None:
        center_radius = DEFAULT_RADIUS.get(candidate_rule, 1.5)
    sg = jax.lax.stop_gradient
    pred_boxes = sg(pred_boxes).astype(jnp.float32)
    cls_logits, obj_logits = sg(cls_logits), sg(obj_logits)
    b, g_pad = gt_mask.shape
    a, num_classes = cls_logits.shape[1], cls_logits.shape[2]
    gt_mask = sg(gt_mask).astype(bool)
    boxes, classes = jax.vmap(sanitize_gts, in_axes=(0, 0, 0, None))(
        sg(gt_boxes), sg(gt_classes), gt_mask, num_classes)
    perm = jnp.argsort(~gt_mask, axis=1, stable=True).astype(jnp.int32)         # valid first
    boxes = jnp.take_along_axis(boxes, perm[..., None], axis=1)
    classes = jnp.take_along_axis(classes, perm, axis=1)
    mask = jnp.take_along_axis(gt_mask, perm, axis=1)
    opts = dict(candidate_rule=candidate_rule, center_radius=center_radius,
                soft_center_prior=soft_center_prior, topk_iou=topk_iou, k_rounding=k_rounding,
                iou_weight=iou_weight)
    compactable = (candidate_rule == "center" and soft_center_prior is None
                   and candidates_per_gt is not None)
    levels = grid_levels(grid_xy, strides) if compactable else None

    def dense_one(pb, cl, ob, bx, cs, mk, cand):
        fg, matched, miou, k = _assign_core(pb, cl, ob, grid_xy, strides, bx, cs, mk, cand, **opts)
        return _finish(fg, matched, miou, k, cand, cs,
                       _max_iou(bx, mk, pb) if with_max_iou else None)

    def compact_one(u, pb, cl, ob, bx, cs, mk, cand):
        sel = jnp.nonzero(cand, size=u, fill_value=0)[0].astype(jnp.int32)      # [U], in order
        slot_ok = jnp.arange(u) < jnp.sum(cand)
        fg_c, matched_c, miou_c, k = _assign_core(
            pb[sel], cl[sel], ob[sel], jnp.asarray(grid_xy)[sel], jnp.asarray(strides)[sel], bx, cs,
            mk, slot_ok, **opts)
        dest = jnp.where(slot_ok, sel, a)                                          # a = dropped
        fg = jnp.zeros((a,), bool).at[dest].set(fg_c, mode="drop")
        matched = jnp.zeros((a,), jnp.int32).at[dest].set(matched_c, mode="drop")
        miou = jnp.zeros((a,), jnp.float32).at[dest].set(miou_c, mode="drop")
        return _finish(fg, matched, miou, k, cand, cs,
                       _max_iou(bx, mk, pb) if with_max_iou else None)

    def bucket(g):
        def run(ops):
            pb, cl, ob, bx, cs, mk = ops
            bx, cs, mk = bx[:, :g], cs[:, :g], mk[:, :g]
            if levels is not None:   # concrete grid: windows around each gt, no [g, A] pass
                cand = jax.vmap(partial(_window_candidates, levels,
                                        center_radius=center_radius))(bx, mk)
            else:
                any_m = jax.vmap(lambda x: geometry_margins(
                    grid_xy, strides, x, candidate_rule=candidate_rule,
                    center_radius=center_radius)[1])(bx)
                cand = jax.vmap(_candidates, in_axes=(0, 0, None))(any_m, mk, soft_center_prior)
            args = (pb, cl, ob, bx, cs, mk, cand)
            dense = lambda xs: jax.vmap(dense_one)(*xs)  # noqa: E731
            u = min(a, int(candidates_per_gt) * g) if compactable else a
            if u >= a:
                out = dense(args)
            else:
                fits = jnp.max(jnp.sum(cand, axis=1)) <= u
                out = jax.lax.cond(fits, lambda xs: jax.vmap(partial(compact_one, u))(*xs),
                                   dense, args)
            return out._replace(dynamic_k=jnp.pad(out.dynamic_k, ((0, 0), (0, g_pad - g))))
        return run

    sizes = sorted({int(s) for s in gt_buckets if 0 < int(s) < g_pad} | {g_pad})
    n_gt = jnp.max(jnp.sum(mask, axis=1))
    which = jnp.searchsorted(jnp.asarray(sizes, jnp.int32), n_gt, side="left")
    out = _switch_by_conds(which, [bucket(s) for s in sizes],
                           (pred_boxes, cls_logits, obj_logits, boxes, classes, mask))
    # Back to the caller's gt rows.
    rows = jnp.arange(b)[:, None]
    matched = jnp.where(out.fg_mask, jnp.take_along_axis(perm, out.matched_gt, axis=1), 0)
    k = jnp.zeros((b, g_pad), jnp.int32).at[rows, perm].set(out.dynamic_k)
    return out._replace(matched_gt=matched.astype(jnp.int32), dynamic_k=k)

"""OTA over a batch, as a hard assigner (``ota``) and as a differentiable one (``ota_soft``).

``ota_batch``: ``jax.vmap`` of :func:`yolox_jax.assign.ota` (Sinkhorn plan, each anchor to the
supplier with the largest share of it, background meaning negative); the plan is dropped and the
result carries no gradient, like every hard assigner.

``ota_soft_batch``: the entropic plan itself is the target. Each anchor's unit of demand is split
by the plan between the gts and the background; with ``m(a)`` the gt holding the largest share of
anchor ``a``:

* ``weight[a] = sum_g plan[g, a]``: the anchor's foreground share, in [0, 1]. The loss weighs the
  anchor's box, class and L1 terms by it and uses it as the objectness target.
* ``quality[a] = plan[m(a), a] * IoU(pred_a, gt_m(a))``: the class target at ``m(a)``'s class
  (YOLOX's IoU-aware target, scaled by the share of the anchor that gt holds).
* ``fg_mask``: anchors whose foreground share is at least ``min_share``.

Gradients: the plan is a differentiable function of the cost (``num_iters`` unrolled log-domain
Sinkhorn iterations, ott-jax), and the cost of the class logits, the objectness logits and the
predicted boxes (through the IoU term). The loss registers this assigner as differentiable, so
``d loss / d raw`` has two parts: the usual one with the targets held fixed, and the one through
``quality`` (and, with ``weight_grad=True``, ``weight``) into the plan, the cost and back to the
same predictions. The IoU factor of ``quality``, the dynamic-k supplies and the hard choices
(``fg_mask``, ``m(a)``) carry no gradient. ``weight_grad`` is False by default because with it
the loss can fall by moving plan mass from the gts to the background (``weight`` is also the
objectness target and scales the box and class terms), and training then does not learn.
``epsilon`` (entropic regularisation, in cost units) and ``num_iters`` set how soft the plan is
and how many iterations are differentiated.

Anchor compaction (both): an anchor outside every valid gt's region gets the centre prior
(1e6) in every gt row, so the plan gives it entirely to the background. With ``center_prior /
epsilon >= 1e4`` and concrete strides, the batch is solved on the candidate anchors only (at
most ``levels * ceil(2 * center_radius) ** 2`` per gt, gathered in anchor order) plus one
column that stands for all the others (demand = their count, taken by the background only):
the Sinkhorn iterations are the same, over ~1/10 of the columns at 640 px. Dynamic k, IoUs and
the region tests still see every anchor. When some image has more candidates than slots or a
valid gt without any region anchor (its row then spreads over penalised anchors), the batch
takes the dense path (``lax.cond``), so the result never depends on the compaction beyond
float rounding.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax.assign._buckets import DEFAULT_GT_BUCKETS, in_gt_buckets
from yolox_jax.assign._ota import (decide, ota, pair_costs, region, resolve_options, solve,
                                   supplies_k)
from yolox_jax.assign._simota import Assignment, sanitize_gts
from yolox_jax.ops.boxes import pairwise_iou_cxcywh

_OPTION_DEFAULTS = dict(cost="simota", num_iters=50, epsilon=0.1, iou_weight=None,
                        center_radius=None, candidate_rule=None, center_prior=1e6,
                        topk_iou=None, k_rounding="floor", score_from=None, focal_alpha=0.25,
                        focal_gamma=2.0, reg_cost="iou", point_offset=0.5, rescale_rows=None)


def _options(options) -> dict:
    unknown = set(options) - set(_OPTION_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected OTA option(s): {', '.join(sorted(unknown))}")
    return resolve_options(**{**_OPTION_DEFAULTS, **options})


def slots_per_gt(strides, o) -> int | None:
    """Candidate anchors one gt can have (every region lies inside the centre box ``|a - c| <
    r * stride``: at most ``ceil(2r)`` anchor points per axis and level), or None where
    compaction does not apply (traced strides, a soft centre prior)."""
    if o["center_prior"] < 1e4 * o["epsilon"] or o["center_prior"] < 1e3:
        return None
    try:
        levels = len(np.unique(np.asarray(strides)))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
    return levels * math.ceil(2 * float(o["center_radius"])) ** 2


def _dense_one(o, grid_xy, strides, pb, cl, ob, boxes, classes, gt_mask):
    """One image on all anchors: ``(Assignment, gt plan [g, A])`` (``ota`` with sanitised gts)."""
    hard, plan = ota(pb, cl, ob, grid_xy, strides, boxes, classes, gt_mask, **{
        k: o[k] for k in _OPTION_DEFAULTS})
    return hard, plan[:boxes.shape[0]]


def _compact_one(u, o, grid_xy, strides, pb, cl, ob, boxes, classes, gt_mask):
    """One image solved on its candidate anchors (``u`` slots) plus one column for all others.

    Same outputs as ``_dense_one``. Shapes: pb [A, 4], cl [A, C], ob [A]; boxes [g, 4],
    classes, gt_mask [g] (sanitised)."""
    a, g = pb.shape[0], boxes.shape[0]
    grid_xy, strides = jnp.asarray(grid_xy), jnp.asarray(strides)
    in_region = region(grid_xy, strides, boxes, o)                               # [g, A]
    iou_all = jnp.where(gt_mask[:, None], pairwise_iou_cxcywh(
        boxes, jax.lax.stop_gradient(pb).astype(jnp.float32)), 0.0)             # [g, A]
    k = supplies_k(iou_all, in_region, gt_mask, o)
    cand = jnp.any(in_region & gt_mask[:, None], axis=0)                         # [A]
    n_cand = jnp.sum(cand, dtype=jnp.int32)
    sel = jnp.nonzero(cand, size=u, fill_value=0)[0].astype(jnp.int32)         # [U], in order
    slot_ok = jnp.arange(u) < n_cand
    _, fg_cost, bg_cost = pair_costs(pb[sel], cl[sel], None if ob is None else ob[sel], boxes,
                                     classes, gt_mask, in_region[:, sel], o)    # [g, U], [U]
    # One more column for the A - n_cand other anchors: only the background can take them.
    n_out = (a - n_cand).astype(jnp.float32)
    out_fg = jnp.full((g, 1), jnp.float32(o["center_prior"]))
    cost = jnp.concatenate([jnp.concatenate([fg_cost, out_fg], axis=1),
                            jnp.concatenate([bg_cost, jnp.zeros((1,), bg_cost.dtype)])[None]],
                           axis=0)                                               # [g + 1, U + 1]
    demand = jnp.concatenate([slot_ok.astype(jnp.float32), n_out[None]])
    plan = solve(cost, k, gt_mask, demand, a, o)
    hard = jax.lax.stop_gradient(plan)
    row_max = None
    if o["rescale_rows"]:
        # Each other anchor holds 1 / n_out of the extra column's background entry.
        out_bg = jnp.where(n_out > 0, hard[g, u] / jnp.maximum(n_out, 1.0), 0.0)
        row_max = jnp.max(hard[:, :u], axis=1, keepdims=True)
        row_max = row_max.at[g, 0].max(out_bg)
    owner = decide(hard[:, :u], gt_mask, o, row_max=row_max)
    fg_c = (owner < g) & slot_ok
    dest = jnp.where(slot_ok, sel, a)                                            # a = dropped
    fg = jnp.zeros((a,), bool).at[dest].set(fg_c, mode="drop")
    matched = jnp.zeros((a,), jnp.int32).at[dest].set(
        jnp.where(fg_c, owner, 0).astype(jnp.int32), mode="drop")
    matched_iou = jnp.where(fg, jnp.take_along_axis(iou_all, matched[None, :], axis=0)[0], 0.0)
    gt_plan = jnp.zeros((g, a), plan.dtype).at[:, dest].set(plan[:g, :u], mode="drop")
    assignment = Assignment(
        fg_mask=fg, matched_gt=matched, matched_iou=matched_iou,
        num_fg=jnp.sum(fg).astype(jnp.int32),
        matched_class=jnp.where(fg, classes[matched], 0).astype(jnp.int32),
        max_iou=jnp.max(iou_all, axis=0, initial=0.0), dynamic_k=k, candidate_mask=cand)
    return assignment, gt_plan


def _fits(u, o, grid_xy, strides, boxes, gt_mask):
    """Whether every image's candidates fit ``u`` slots and every valid gt has a region anchor:
    boxes [B, g, 4], gt_mask [B, g] -> scalar bool."""
    def one(bx, mk):
        in_region = region(jnp.asarray(grid_xy), jnp.asarray(strides), bx, o) & mk[:, None]
        has_anchor = jnp.any(in_region, axis=1) | ~mk
        return (jnp.sum(jnp.any(in_region, axis=0)) <= u) & jnp.all(has_anchor)
    return jnp.all(jax.vmap(one)(boxes, gt_mask))


def _solve_batch(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes,
                 gt_mask, *, gt_buckets, compact, options, finish):
    """Shared driver: sanitise, bucket the gt rows, then per bucket the compacted or the dense
    per-image solve, then ``finish(assignment, gt_plan, pb, boxes, classes, gt_mask)`` per
    image."""
    o = _options(options)
    a, num_classes = cls_logits.shape[1], cls_logits.shape[2]
    gt_mask = jax.lax.stop_gradient(gt_mask).astype(bool)
    boxes, classes = jax.vmap(sanitize_gts, in_axes=(0, 0, 0, None))(
        jax.lax.stop_gradient(gt_boxes), gt_classes, gt_mask, num_classes)
    per_gt = slots_per_gt(strides, o) if compact else None
    has_obj = obj_logits is not None

    def rows(bx, cs, mk):
        g = mk.shape[1]
        args = (pred_boxes, cls_logits, obj_logits if has_obj else jnp.zeros(pred_boxes.shape[:2]),
                bx, cs, mk)

        def run(one, xs):
            pb, cl, ob, b_, c_, m_ = xs
            def image(pb, cl, ob, b_, c_, m_):
                hard, gt_plan = one(o, grid_xy, strides, pb, cl, ob if has_obj else None,
                                    b_, c_, m_)
                return finish(hard, gt_plan, pb, b_, c_, m_)
            return jax.vmap(image)(pb, cl, ob, b_, c_, m_)

        dense = partial(run, _dense_one)
        u = None if per_gt is None else per_gt * g
        if u is None or u >= a:
            return dense(args)
        return jax.lax.cond(_fits(u, o, grid_xy, strides, bx, mk),
                            partial(run, partial(_compact_one, u)), dense, args)

    return in_gt_buckets(rows, boxes, classes, gt_mask, gt_buckets)


def _hard(hard, gt_plan, pb, boxes, classes, gt_mask):
    return hard


def ota_batch(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, gt_mask,
              *, gt_buckets=DEFAULT_GT_BUCKETS, compact: bool = True, **options) -> Assignment:
    """OTA for a batch: [B, ...] inputs as in ``yolox_jax.assign.registry``; ``options`` as
    ``yolox_jax.assign.ota`` (num_iters, epsilon, iou_weight, center_radius, candidate_rule,
    center_prior, topk_iou, k_rounding, cost, ...). ``gt_buckets``: gt row counts to specialise
    for (``yolox_jax.assign._buckets``: padded gts have zero supply, so solving on the valid
    rows only gives the same plan up to float rounding); ``compact``: solve on the candidate
    anchors (module docstring). Returns the hard ``Assignment``, without gradient."""
    sg = jax.lax.stop_gradient
    out = _solve_batch(sg(pred_boxes), sg(cls_logits), None if obj_logits is None else
                       sg(obj_logits), grid_xy, strides, gt_boxes, gt_classes, gt_mask,
                       gt_buckets=gt_buckets, compact=compact, options=options, finish=_hard)
    return jax.tree_util.tree_map(sg, out)


def _soft(hard, gt_plan, pb, boxes, classes, gt_mask, *, min_share, weight_grad):
    """The soft targets of one image from its hard decision and gt plan [g, A] (module
    docstring)."""
    g = gt_mask.shape[0]
    gt_plan = jnp.where(gt_mask[:, None], gt_plan, 0.0)                        # [g, A]
    share = jnp.clip(jnp.sum(gt_plan, axis=0), 0.0, 1.0)                       # [A]
    fg = jax.lax.stop_gradient(share) >= min_share
    owner = jnp.argmax(jax.lax.stop_gradient(gt_plan), axis=0).astype(jnp.int32)
    matched = jnp.where(fg, owner, 0)
    iou = jax.lax.stop_gradient(jnp.where(gt_mask[:, None], pairwise_iou_cxcywh(
        boxes, pb.astype(jnp.float32)), 0.0))                                  # [g, A]
    matched_iou = jnp.where(fg, jnp.take_along_axis(iou, matched[None], axis=0)[0], 0.0)
    held = jnp.take_along_axis(gt_plan, matched[None], axis=0)[0]              # plan[m(a), a]
    counts = jnp.zeros((g,), jnp.int32).at[matched].add(fg.astype(jnp.int32))
    return Assignment(
        fg_mask=fg, matched_gt=matched, matched_iou=matched_iou,
        num_fg=jnp.sum(fg).astype(jnp.int32),
        matched_class=jnp.where(fg, classes[matched], 0).astype(jnp.int32),
        max_iou=hard.max_iou, dynamic_k=counts, candidate_mask=hard.candidate_mask,
        quality=jnp.where(fg, held * matched_iou, 0.0),
        weight=jnp.where(fg, share if weight_grad else jax.lax.stop_gradient(share), 0.0))


def ota_soft_batch(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes,
                   gt_mask, *, min_share: float = 0.1, weight_grad: bool = False,
                   gt_buckets=DEFAULT_GT_BUCKETS, compact: bool = True,
                   **options) -> Assignment:
    """Differentiable OTA for a batch (module docstring): [B, ...] inputs as in
    ``yolox_jax.assign.registry``; ``options`` as ``yolox_jax.assign.ota`` plus ``min_share``
    (default 0.1), ``weight_grad`` (default False: ``weight`` is held fixed and only
    ``quality`` carries gradients into the predictions; True: both do), ``gt_buckets`` and
    ``compact`` (as ``ota_batch``). ``dynamic_k`` holds the number of foreground anchors of
    each gt."""
    return _solve_batch(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes,
                        gt_classes, gt_mask, gt_buckets=gt_buckets, compact=compact,
                        options=options,
                        finish=partial(_soft, min_share=min_share, weight_grad=bool(weight_grad)))

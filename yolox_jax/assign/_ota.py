"""OTA: label assignment as entropic optimal transport (Ge et al., CVPR 2021), static shapes.

Suppliers are the G (padded) gts, each offering its dynamic-k number of positive labels, plus one
background supplier holding the rest; every anchor demands one label. Sinkhorn-Knopp (ott-jax,
fixed number of iterations, log domain, unrolled for differentiation) gives the plan; each anchor
goes to the supplier with the largest plan entry in its column, background meaning negative.

Two cost models (``ota(..., cost=...)``):

* ``"simota"`` (default, this project's YOLOX OTA): gt -> anchor is the SimOTA cost (class BCE on
  ``sqrt(cls * obj)`` + ``iou_weight`` * IoU cost + centre prior), background -> anchor the class
  BCE against all-zero targets; marginals normalised; raw-plan argmax.
* ``"ota"``: the official OTA assigner (github.com/Megvii-BaseDetection/OTA, commit 2c85b4d,
  ``playground/detection/coco/ota.*/fcos.py``: ``FCOS.get_ground_truth`` and
  ``SinkhornDistance``): focal class cost (alpha 0.25, gamma 2) against the one-hot gt class,
  ``1.5 * -log(IoU)`` (the official cost uses the IoU loss, not the GIoU of its training loss),
  ``1e6`` outside "in box (by 0.01) and within 2.5 strides of the centre", background = focal
  cost against zeros, ``k = max(1, int(sum of the top-20 in-region IoUs))``, supplies/demands in
  the official units, eps 0.1, 50 iterations without a stopping test, and the official decision:
  each plan row divided by its maximum, then the first maximum per anchor. The YOLOX mapping of
  the official score: ``score_from="cls"`` (the official one: FCOS-OTA's class logits only; its
  IoU branch, YOLOX's objectness counterpart, is not in the cost) or ``"joint"``
  (``sigmoid(cls) * sigmoid(obj)``, focal terms on that probability). Anchor points are YOLOX's
  cell centres ``(grid + 0.5) * stride`` (``point_offset``; the official FCOS shifts use 0.0).
  Checked against a NumPy transcription (tests/assign/ota_oracle.py,
  tests/assign/test_ota_reference.py): equal hard decisions, plans within ~1e-5. Decisions can
  only differ where two gts' row-rescaled plan values tie up to float32 rounding in one anchor
  (e.g. two same-class gts with zero IoU at both of their best anchors), which the official
  code also leaves to rounding; exact ties (duplicate gts, rows whose maxima fall on the same
  anchor) go to the first gt as in torch.

Solvers. ``cost="ota"`` uses ott-jax's log-domain Sinkhorn (zero marginal weights exact:
``log 0 = -inf`` potentials, zero plan rows; ``min_iterations = max_iterations = num_iters``, no
stopping test), with the kernel argument formed in the official order
(``_OfficialOrderGeometry``) to match the official plan. ``cost="simota"`` (and with it the
differentiable ``ota_soft`` assigner) uses ``sinkhorn_plan_unrolled``: the same iterations as a
``lax.scan``, differentiated by plain reverse mode. In ott-jax 0.6.0 the gradient of the
unrolled solver (``implicit_diff=None``) with respect to the cost matrix disagrees with finite
differences by 10-30x on small problems, while the scan's agrees to 0.1 %; the two plans agree
to 1e-8.
"""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

from yolox_jax.ops.boxes import pairwise_iou_cxcywh
from yolox_jax.assign._simota import (DEFAULT_RADIUS, Assignment, dynamic_k, geometry as geometry_relation,
                                  sanitize_gts)


@jax.tree_util.register_pytree_node_class
class _OfficialOrderGeometry(geometry.Geometry):
    """ott-jax geometry whose log-kernel argument is formed as ``(f - C) + g`` (the official OTA
    ``-C + u + v``) instead of ott's ``f + g - C``. Same value in exact arithmetic; in float32 it
    keeps the precision of rows whose costs all carry the 1e6 centre penalty (there ``f ~ C ~ 1e6``
    and ``f - C`` is exact, while ``f + g`` rounds to 1/16)."""

    def _center(self, f, g):
        return (f[:, None] - self.cost_matrix) + g[None, :]


def sinkhorn_plan(cost, supply, demand, *, epsilon: float = 0.1, num_iters: int = 50,
                  official_order: bool = False):
    """Entropic OT plan for ``cost`` [M, N] with marginals ``supply`` [M] and ``demand`` [N].

    Zero-supply rows get a zero plan row. Exactly ``num_iters`` Sinkhorn iterations (log domain,
    column potentials first, no stopping test), differentiable by unrolling. ``official_order``:
    form the kernel argument as the official OTA code does (``_OfficialOrderGeometry``).
    Returns [M, N] float32.
    """
    geom_cls = _OfficialOrderGeometry if official_order else geometry.Geometry
    geom = geom_cls(cost_matrix=cost, epsilon=epsilon)
    prob = linear_problem.LinearProblem(geom, a=supply, b=demand)
    solver = sinkhorn.Sinkhorn(lse_mode=True, min_iterations=num_iters, max_iterations=num_iters,
                               inner_iterations=1, threshold=-1.0, implicit_diff=None)
    out = solver(prob)
    return out.matrix


def sinkhorn_plan_unrolled(cost, supply, demand, *, epsilon: float = 0.1, num_iters: int = 50):
    """The same plan as ``sinkhorn_plan`` (log domain, column potentials first, exactly
    ``num_iters`` iterations) written as a ``lax.scan``, so that ``jax.grad`` differentiates the
    iterations themselves: the gradient of the plan with respect to ``cost`` is exact for the
    unrolled iterations (tested against finite differences). Zero-supply rows get a zero row.

    cost [M, N], supply [M], demand [N] -> plan [M, N] float32."""
    cost = cost.astype(jnp.float32)
    log_a = jnp.where(supply > 0, jnp.log(jnp.where(supply > 0, supply, 1.0)), -jnp.inf)
    log_b = jnp.log(demand)

    def step(fg, _):
        f, g = fg
        g = epsilon * log_b - epsilon * jax.nn.logsumexp((f[:, None] - cost) / epsilon, axis=0)
        f = epsilon * log_a - epsilon * jax.nn.logsumexp((g[None, :] - cost) / epsilon, axis=1)
        return (f, g), None

    f0 = jnp.where(supply > 0, 0.0, -jnp.inf)
    (f, g), _ = jax.lax.scan(step, (f0, jnp.zeros_like(demand)), None, length=num_iters)
    return jnp.exp(((f[:, None] - cost) + g[None, :]) / epsilon)


_COSTS = ("simota", "ota")
# Per-cost defaults of the options left at None: (iou_weight, topk_iou, candidate_rule,
# center_radius, rescale_rows, score_from).
_DEFAULTS = {
    "simota": dict(iou_weight=3.0, topk_iou=10, candidate_rule="center", rescale_rows=False),
    "ota": dict(iou_weight=1.5, topk_iou=20, candidate_rule="box_and_center", rescale_rows=True,
                score_from="cls"),
}
OTA_CENTER_RADIUS = 2.5       # the official get_ground_truth's hard-coded center_sampling_radius
OTA_IN_BOX_MARGIN = 0.01      # ``is_in_boxes = deltas.min(dim=-1).values > 0.01``
_F32_EPS = float(jnp.finfo(jnp.float32).eps)


def box_and_center_region(grid_xy, strides, gt_boxes, *, center_radius: float = OTA_CENTER_RADIUS,
                          point_offset: float = 0.5, in_box_margin: float = OTA_IN_BOX_MARGIN):
    """The official OTA region [G, A] bool: the point is inside the gt by more than
    ``in_box_margin`` on every side AND strictly inside the centre box ``(x0 + x1) / 2 +-
    center_radius * stride`` clipped to the gt box. Points are ``(grid + point_offset) * stride``
    (YOLOX: 0.5; the official FCOS shifts: 0.0). Same float32 arithmetic as the official code."""
    strides = strides.astype(jnp.float32)
    pts = (grid_xy.astype(jnp.float32) + point_offset) * strides[:, None]          # [A, 2]
    half = gt_boxes[:, 2:] * 0.5
    lo, hi = gt_boxes[:, :2] - half, gt_boxes[:, :2] + half                        # [G, 2]
    d_box = jnp.minimum(jnp.min(pts[None] - lo[:, None], axis=-1),
                        jnp.min(hi[:, None] - pts[None], axis=-1))                 # [G, A]
    centers = (lo + hi) / 2.0
    radius = (strides * center_radius)[None, :, None]                              # [1, A, 1]
    c_lo = jnp.maximum(centers[:, None] - radius, lo[:, None])                     # [G, A, 2]
    c_hi = jnp.minimum(centers[:, None] + radius, hi[:, None])
    d_ctr = jnp.minimum(jnp.min(pts[None] - c_lo, axis=-1), jnp.min(c_hi - pts[None], axis=-1))
    return (d_box > in_box_margin) & (d_ctr > 0.0)


def pairwise_iou_loss(gt_boxes, pred_boxes, loss_type: str = "iou"):
    """The official OTA ``get_ious_and_iou_loss`` for every (gt, prediction) pair, both cxcywh.

    Returns ``(ious [G, A], loss [G, A])``: ``iou = inter / max(union, eps)`` with widths clamped at
    zero, ``loss = -log(max(iou, eps))`` ("iou", what OTA's cost uses) or ``1 - GIoU`` ("giou");
    ``eps`` = float32 machine epsilon."""
    def xyxy(b):
        half = b[:, 2:] * 0.5
        return jnp.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)

    t = xyxy(gt_boxes)[:, None, :]
    i = xyxy(pred_boxes)[None, :, :]
    i_area = (jnp.maximum(i[..., 2] - i[..., 0], 0.0) * jnp.maximum(i[..., 3] - i[..., 1], 0.0))
    t_area = (jnp.maximum(t[..., 2] - t[..., 0], 0.0) * jnp.maximum(t[..., 3] - t[..., 1], 0.0))
    w = jnp.maximum(jnp.minimum(i[..., 2], t[..., 2]) - jnp.maximum(i[..., 0], t[..., 0]), 0.0)
    h = jnp.maximum(jnp.minimum(i[..., 3], t[..., 3]) - jnp.maximum(i[..., 1], t[..., 1]), 0.0)
    inter = w * h
    union = t_area + i_area - inter
    ious = inter / jnp.maximum(union, _F32_EPS)
    if loss_type == "iou":
        loss = -jnp.log(jnp.maximum(ious, _F32_EPS))
    elif loss_type == "giou":
        gw = jnp.maximum(i[..., 2], t[..., 2]) - jnp.minimum(i[..., 0], t[..., 0])
        gh = jnp.maximum(i[..., 3], t[..., 3]) - jnp.minimum(i[..., 1], t[..., 1])
        enclose = gw * gh
        loss = 1.0 - (ious - (enclose - union) / jnp.maximum(enclose, _F32_EPS))
    else:
        raise ValueError(f"reg_cost must be 'iou' or 'giou', got {loss_type!r}")
    return ious, loss


def _focal_terms(z, *, from_logits: bool, alpha: float, gamma: float):
    """Elementwise focal loss against target 0 and against target 1: ``(neg, pos)``.

    ``from_logits``: ``z`` is a logit, the cross entropy is torch's stable
    ``binary_cross_entropy_with_logits`` (fvcore / cvpods ``sigmoid_focal_loss``); otherwise ``z``
    is a probability and the logs are clamped at -100 (``F.binary_cross_entropy``)."""
    if from_logits:
        p = jax.nn.sigmoid(z)
        m = jnp.maximum(-z, 0.0)
        soft = m + jnp.log(jnp.exp(-m) + jnp.exp(-z - m))          # = bce(z, 1)
        ce0, ce1 = z + soft, soft
    else:
        p = z
        ce0 = -_clamped_log(1.0 - p)
        ce1 = -_clamped_log(p)
    neg = (1.0 - alpha) * (ce0 * p ** gamma)
    pos = alpha * (ce1 * (1.0 - p) ** gamma)
    return neg, pos


def ota_class_cost(cls_logits, obj_logits, gt_classes, *, score_from: str = "cls",
                   alpha: float = 0.25, gamma: float = 2.0):
    """The official OTA class costs without a [G, A, C] array: ``(fg [G, A], bg [A])``.

    ``fg[g, a] = sum_c focal(s[a, c], onehot(class_g)[c])`` = ``bg[a] - neg(s[a, y_g]) +
    pos(s[a, y_g])`` with ``bg[a] = sum_c neg(s[a, c])`` (focal against all-zero targets, the
    official background cost). ``score_from``: "cls" scores the class logits (the official
    FCOS-OTA: its IoU branch is not in the cost), "joint" the probability
    ``sigmoid(cls) * sigmoid(obj)`` (YOLOX's detection score)."""
    x = cls_logits.astype(jnp.float32)
    x_y = jnp.take(x.T, gt_classes, axis=0, mode="clip")                            # [G, A]
    if score_from == "cls":
        z, z_y, from_logits = x, x_y, True
    elif score_from == "joint":
        if obj_logits is None:
            raise ValueError("score_from='joint' needs obj_logits")
        so = jax.nn.sigmoid(obj_logits.astype(jnp.float32))
        z, z_y = jax.nn.sigmoid(x) * so[:, None], jax.nn.sigmoid(x_y) * so[None, :]
        from_logits = False
    else:
        raise ValueError(f"score_from must be 'cls' or 'joint', got {score_from!r}")
    neg, _ = _focal_terms(z, from_logits=from_logits, alpha=alpha, gamma=gamma)
    bg = jnp.sum(neg, axis=-1)                                                      # [A]
    neg_y, pos_y = _focal_terms(z_y, from_logits=from_logits, alpha=alpha, gamma=gamma)
    return bg[None, :] - neg_y + pos_y, bg


def ota(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, gt_mask, *,
        cost: str = "simota", num_iters: int = 50, epsilon: float = 0.1,
        iou_weight: Optional[float] = None, center_radius: Optional[float] = None,
        candidate_rule: Optional[str] = None, center_prior: float = 1e6,
        topk_iou: Optional[int] = None, k_rounding: str = "floor",
        score_from: Optional[str] = None, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
        reg_cost: str = "iou", point_offset: float = 0.5, rescale_rows: Optional[bool] = None):
    """OTA assignment for one image. Returns ``(Assignment, plan)``.

    Args:
      pred_boxes [A, 4] cxcywh, cls_logits [A, C], obj_logits [A] (may be None with
      ``cost="ota", score_from="cls"``), grid_xy [A, 2], strides [A],
      gt_boxes [G, 4] cxcywh, gt_classes [G], gt_mask [G] bool: as for ``simota``.
      cost: "simota" (default; this project's YOLOX cost: class BCE on ``sqrt(cls * obj)`` +
        ``iou_weight * -log(IoU + 1e-8)`` + centre prior, background = BCE against zeros) or
        "ota" (the official OTA repository's cost, see below).
      num_iters: Sinkhorn iterations T (always exactly T: the official solver has no stopping
        test either). epsilon: entropic regularisation (absolute, cost units).
      iou_weight: weight of the regression cost (None: 3.0 for "simota", 1.5 = the official
        ``OTA.REG_WEIGHT`` for "ota").
      center_radius, candidate_rule: the geometry region of each gt. Rules "center" and
        "box_or_center" as ``simota``; "box_and_center" is the official OTA rule
        (``box_and_center_region``). None: "center" for "simota", "box_and_center" for "ota";
        radius None: ``simota``'s per-rule default, 2.5 for "box_and_center".
      center_prior: cost added to pairs outside the gt's region; 1e6 (default, also the official
        value) excludes them in practice, a small value (e.g. 5.0) makes it a soft centre prior.
      topk_iou, k_rounding: dynamic-k supply of each gt, ``max(1, floor(sum of the top-topk IoUs
        inside the region))`` (None: 10 for "simota", 20 = ``OTA.TOP_CANDIDATES`` for "ota").
      score_from ("ota" only): "cls" (default, official) or "joint" (``sigmoid(cls) *
        sigmoid(obj)``); focal_alpha, focal_gamma: the focal class cost (official 0.25, 2.0).
      reg_cost ("ota" only): "iou" (official: ``-log(max(IoU, eps))``) or "giou" (``1 - GIoU``).
      point_offset: anchor points are ``(grid + point_offset) * stride`` in the "box_and_center"
        rule (YOLOX 0.5; the official FCOS shifts use 0.0).
      rescale_rows: hard decision rule. False: each anchor goes to the row with the largest plan
        entry; True (official OTA): each plan row is first divided by its maximum. None: False
        for "simota", True for "ota".

    ``cost="ota"`` (the official ``FCOS.get_ground_truth`` of github.com/Megvii-BaseDetection/OTA):
    gt cost = focal class cost against the one-hot gt class + ``iou_weight`` * IoU cost +
    ``center_prior`` * (outside the region); background cost = focal cost against all zeros;
    supplies ``[k_1 .. k_G, A - sum k]`` and demands 1 in the official units (not normalised),
    each with the official ``+ 1e-8`` inside the log (it only matters for a zero background
    supply); padded gts get supply 0, which removes them exactly (``log 0 = -inf``). The
    official solver starts from potentials (1, 1) and ott-jax from (0, 0), a constant shift
    that leaves the plan unchanged; both update the column potentials first, then the rows,
    in the log domain, without a stopping rule. The rounding differs (ott forms
    ``f + g - C``, the official ``-C + u + v``), so plans agree to float32 tolerance and hard
    decisions only up to exact ties (tests/assign/test_ota_reference.py). Where ``sum k > A``
    the official background supply is negative (NaN plan); here it is clamped at 0.

    Returns:
      assignment: ``Assignment`` from the hard (argmax-per-anchor) decision, under stop_gradient.
      plan: [G + 1, A] float32 transport plan (last row = background; each column sums to 1),
        differentiable wrt the logits and predicted boxes through the cost with ``cost="simota"``
        (the gts and supplies are constants).
    """
    o = resolve_options(cost=cost, num_iters=num_iters, epsilon=epsilon, iou_weight=iou_weight,
                        center_radius=center_radius, candidate_rule=candidate_rule,
                        center_prior=center_prior, topk_iou=topk_iou, k_rounding=k_rounding,
                        score_from=score_from, focal_alpha=focal_alpha, focal_gamma=focal_gamma,
                        reg_cost=reg_cost, point_offset=point_offset, rescale_rows=rescale_rows)
    gt_mask = jax.lax.stop_gradient(gt_mask).astype(bool)
    boxes, classes = sanitize_gts(jax.lax.stop_gradient(gt_boxes), gt_classes, gt_mask,
                                  cls_logits.shape[-1])
    num_anchors = pred_boxes.shape[0]
    g = boxes.shape[0]
    in_region = region(grid_xy, strides, boxes, o)
    iou, fg_cost, bg_cost = pair_costs(pred_boxes, cls_logits, obj_logits, boxes, classes, gt_mask,
                                       in_region, o)
    iou_sg = jax.lax.stop_gradient(iou)
    k = supplies_k(iou_sg, in_region, gt_mask, o)
    cost_matrix = jnp.concatenate([fg_cost, bg_cost[None, :]], axis=0)         # [G + 1, A]
    plan = solve(cost_matrix, k, gt_mask, jnp.ones((num_anchors,), jnp.float32), num_anchors, o)
    owner = decide(jax.lax.stop_gradient(plan), gt_mask, o)
    fg = owner < g
    matched = jnp.where(fg, owner, 0).astype(jnp.int32)
    matched_iou = jnp.where(fg, jnp.take_along_axis(iou_sg, matched[None, :], axis=0)[0], 0.0)
    assignment = Assignment(
        fg_mask=fg,
        matched_gt=matched,
        matched_iou=matched_iou,
        num_fg=jnp.sum(fg).astype(jnp.int32),
        matched_class=jnp.where(fg, classes[matched], 0).astype(jnp.int32),
        max_iou=jnp.max(iou_sg, axis=0, initial=0.0),
        dynamic_k=k,
        candidate_mask=jnp.any(in_region & gt_mask[:, None], axis=0),
    )
    return assignment, plan


def resolve_options(*, cost, num_iters, epsilon, iou_weight, center_radius, candidate_rule,
                    center_prior, topk_iou, k_rounding, score_from, focal_alpha, focal_gamma,
                    reg_cost, point_offset, rescale_rows) -> dict:
    """``ota``'s options with the per-cost defaults filled in (see ``ota``)."""
    if cost not in _COSTS:
        raise ValueError(f"cost must be one of {_COSTS}, got {cost!r}")
    defaults = _DEFAULTS[cost]
    if cost == "simota" and score_from is not None:
        raise ValueError("score_from applies to cost='ota' only")
    candidate_rule = defaults["candidate_rule"] if candidate_rule is None else candidate_rule
    if center_radius is None:
        center_radius = (OTA_CENTER_RADIUS if candidate_rule == "box_and_center"
                         else DEFAULT_RADIUS.get(candidate_rule, 1.5))
    return dict(
        cost=cost, num_iters=int(num_iters), epsilon=float(epsilon),
        iou_weight=defaults["iou_weight"] if iou_weight is None else iou_weight,
        center_radius=center_radius, candidate_rule=candidate_rule, center_prior=center_prior,
        topk_iou=defaults["topk_iou"] if topk_iou is None else topk_iou, k_rounding=k_rounding,
        score_from=defaults.get("score_from") if score_from is None else score_from,
        focal_alpha=focal_alpha, focal_gamma=focal_gamma, reg_cost=reg_cost,
        point_offset=point_offset,
        rescale_rows=defaults["rescale_rows"] if rescale_rows is None else rescale_rows)


def region(grid_xy, strides, boxes, o) -> jax.Array:
    """[G, N] bool: the pairs outside which the centre prior ``o["center_prior"]`` is added."""
    if o["candidate_rule"] == "box_and_center":
        return box_and_center_region(grid_xy, strides, boxes, center_radius=o["center_radius"],
                                     point_offset=o["point_offset"])
    in_region, _ = geometry_relation(grid_xy, strides, boxes, candidate_rule=o["candidate_rule"],
                                     center_radius=o["center_radius"])
    return in_region


def _safe_sqrt(x):
    """``sqrt(x)`` whose gradient is 0 instead of NaN where ``x`` is 0 (saturated logits)."""
    ok = x > 0.0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, x, 1.0)), 0.0)


def _clamped_log(x, floor: float = -100.0):
    """``max(log(x), floor)`` (``F.binary_cross_entropy``'s clamp), the same values, but with a
    zero gradient below the clamp instead of ``0 * inf = NaN`` where ``x`` is 0."""
    ok = x > jnp.float32(math.exp(floor))
    return jnp.where(ok, jnp.maximum(jnp.log(jnp.where(ok, x, 1.0)), floor), floor)


def pair_costs(pred_boxes, cls_logits, obj_logits, boxes, classes, gt_mask, in_region, o):
    """IoU and costs of every (gt, anchor) pair over the N anchors given.

    Returns ``(iou [G, N] (0 on padded rows), fg_cost [G, N] (finite on padded rows),
    bg_cost [N])``; no [G, N, C] array is built."""
    outside = (~in_region).astype(jnp.float32)
    if o["cost"] == "simota":
        iou = pairwise_iou_cxcywh(boxes, pred_boxes.astype(jnp.float32))
        iou = jnp.where(gt_mask[:, None], iou, 0.0)
        # Class costs of the SimOTA form, split so that no [G, A, C] array exists.
        p = _safe_sqrt(jax.nn.sigmoid(cls_logits.astype(jnp.float32))
                       * jax.nn.sigmoid(obj_logits.astype(jnp.float32))[:, None])
        log_p = _clamped_log(p)
        log_1mp = _clamped_log(1.0 - p)
        bg_cost = -jnp.sum(log_1mp, axis=-1)                                      # [N]
        fg_cost = (bg_cost[None, :] + jnp.take(log_1mp, classes, axis=1).T
                   - jnp.take(log_p, classes, axis=1).T
                   + o["iou_weight"] * -jnp.log(iou + 1e-8)
                   + o["center_prior"] * outside)
    else:
        iou, reg = pairwise_iou_loss(boxes, pred_boxes.astype(jnp.float32), o["reg_cost"])
        iou = jnp.where(gt_mask[:, None], iou, 0.0)
        cls_fg, bg_cost = ota_class_cost(cls_logits, obj_logits, classes,
                                         score_from=o["score_from"], alpha=o["focal_alpha"],
                                         gamma=o["focal_gamma"])
        fg_cost = cls_fg + o["iou_weight"] * reg + o["center_prior"] * outside
    # Padded gts have zero supply; give them a finite cost so nothing overflows in the solver.
    return iou, jnp.where(gt_mask[:, None], fg_cost, 0.0), bg_cost


def supplies_k(iou_sg, in_region, gt_mask, o):
    """Dynamic k of every gt [G] int32: SimOTA cost, the top IoUs over all anchors; official
    OTA, ``ious * is_in_boxes``."""
    iou_k = iou_sg if o["cost"] == "simota" else jnp.where(in_region, iou_sg, 0.0)
    return dynamic_k(iou_k, gt_mask, topk_iou=o["topk_iou"], k_rounding=o["k_rounding"])


def solve(cost_matrix, k, gt_mask, column_demand, num_anchors, o):
    """Sinkhorn plan [G + 1, N] of ``cost_matrix`` [G + 1, N] (last row background).

    Supplies: ``k`` [G] for the gts, ``num_anchors - sum k`` for the background; demands:
    ``column_demand`` [N] anchors per column (1 for an anchor; 0 leaves a column out; a column
    may stand for several anchors). ``num_anchors`` is the total demand."""
    k_f = k.astype(jnp.float32)
    bg_supply = jnp.maximum(num_anchors - jnp.sum(k_f), 0.0)
    if o["cost"] == "simota":
        supply = jnp.concatenate([k_f, bg_supply[None]])
        # Sinkhorn needs equal totals; normalise both to 1 (the plan is rescaled back below).
        total = jnp.sum(supply)
        return sinkhorn_plan_unrolled(cost_matrix, supply / total, column_demand / num_anchors,
                                      epsilon=o["epsilon"], num_iters=o["num_iters"]) * num_anchors
    # The official marginals, log(mu + 1e-8) and log(nu + 1e-8); padded rows exactly 0.
    supply = jnp.concatenate([jnp.where(gt_mask, k_f + 1e-8, 0.0), bg_supply[None] + 1e-8])
    demand = jnp.where(column_demand > 0, column_demand * (1.0 + 1e-8), 0.0)
    return sinkhorn_plan(cost_matrix, supply, demand, epsilon=o["epsilon"],
                         num_iters=o["num_iters"], official_order=True)


def decide(hard, gt_mask, o, row_max=None):
    """Owner of every column of the plan ``hard`` [G + 1, N] (no gradient): [N] int in [0, G]
    (G = background). ``row_max`` [G + 1, 1]: the rows' maxima when ``hard`` holds only some of
    the plan's columns (official row rescaling)."""
    if o["rescale_rows"]:
        # Official: pi / pi.max(dim=1), then the first maximum per anchor; padded rows never win.
        row_ok = jnp.concatenate([gt_mask, jnp.ones((1,), bool)])
        if row_max is None:
            row_max = jnp.max(hard, axis=1, keepdims=True)
        ok = row_ok[:, None] & (row_max > 0)
        # A true division (the barrier keeps XLA from turning ``x / broadcast(m)`` into
        # ``x * (1 / m)``, which is not exact: a row maximum must scale to exactly 1.0, since
        # equal-cost gts tie there and the first one wins, as in torch).
        denom = jax.lax.optimization_barrier(jnp.broadcast_to(jnp.where(ok, row_max, 1.0),
                                                              hard.shape))
        hard = jnp.where(ok, hard / denom, -1.0)
    return jnp.argmax(hard, axis=0)

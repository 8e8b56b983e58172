"""OTA: label assignment as entropic optimal transport (Ge et al., CVPR 2021), static shapes.

Suppliers are the G (padded) gts, each offering its dynamic-k number of positive labels, plus one
background supplier holding the rest; every anchor demands one label. The cost of gt -> anchor is
the SimOTA cost (class BCE + ``iou_weight`` * IoU cost + centre prior), background -> anchor is the
class BCE against all-zero targets. Sinkhorn-Knopp (ott-jax, fixed number of iterations, log
domain, unrolled for differentiation) gives the plan; each anchor goes to the supplier with the
largest plan entry in its column, background meaning negative.

Why ott-jax: its log-domain Sinkhorn treats zero marginal weights exactly (``log 0 = -inf``
potentials, zero plan rows), so padded gts simply get zero supply, and it runs under ``jit`` and
``vmap``. It is run with ``min_iterations = max_iterations = num_iters`` and ``implicit_diff=None``,
i.e. exactly T unrolled iterations (the OTA recipe), so the gradient is that of those iterations;
it needs no linear solve and is tested finite with zero-supply (padded) rows.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

from yolox_jax.ops.boxes import pairwise_iou_cxcywh
from yolox_jax.assign._simota import (DEFAULT_RADIUS, Assignment, dynamic_k, geometry as geometry_relation,
                                  sanitize_gts)


def sinkhorn_plan(cost, supply, demand, *, epsilon: float = 0.1, num_iters: int = 50):
    """Entropic OT plan for ``cost`` [M, N] with marginals ``supply`` [M] and ``demand`` [N].

    Zero-supply rows get a zero plan row. Exactly ``num_iters`` Sinkhorn iterations (log domain),
    differentiable by unrolling. Returns [M, N] float32.
    """
    geom = geometry.Geometry(cost_matrix=cost, epsilon=epsilon)
    prob = linear_problem.LinearProblem(geom, a=supply, b=demand)
    solver = sinkhorn.Sinkhorn(lse_mode=True, min_iterations=num_iters, max_iterations=num_iters,
                               inner_iterations=1, threshold=-1.0, implicit_diff=None)
    out = solver(prob)
    return out.matrix


def ota(pred_boxes, cls_logits, obj_logits, grid_xy, strides, gt_boxes, gt_classes, gt_mask, *,
        num_iters: int = 50, epsilon: float = 0.1, iou_weight: float = 3.0,
        center_radius: Optional[float] = None, candidate_rule: str = "center",
        center_prior: float = 1e6, topk_iou: int = 10, k_rounding: str = "floor"):
    """OTA assignment for one image. Returns ``(Assignment, plan)``.

    Args:
      pred_boxes [A, 4] cxcywh, cls_logits [A, C], obj_logits [A], grid_xy [A, 2], strides [A],
      gt_boxes [G, 4] cxcywh, gt_classes [G], gt_mask [G] bool: as for ``simota``.
      num_iters: Sinkhorn iterations T. epsilon: entropic regularisation (absolute, cost units).
      iou_weight: alpha, weight of ``-log(IoU + 1e-8)``.
      center_radius, candidate_rule: the geometry region of each gt (as ``simota``).
      center_prior: cost added to pairs outside the gt's region; 1e6 (default) excludes them in
        practice, a small value (e.g. 5.0) makes it a soft centre prior.
      topk_iou, k_rounding: dynamic-k supply of each gt (as ``simota``; computed over all anchors).

    Returns:
      assignment: ``Assignment`` from the hard (argmax-per-anchor) decision, under stop_gradient.
      plan: [G + 1, A] float32 transport plan (last row = background), differentiable wrt the
        logits and predicted boxes through the cost (the gts and supplies are constants).
    """
    if center_radius is None:
        center_radius = DEFAULT_RADIUS.get(candidate_rule, 1.5)
    gt_mask = jax.lax.stop_gradient(gt_mask).astype(bool)
    num_classes = cls_logits.shape[-1]
    boxes, classes = sanitize_gts(jax.lax.stop_gradient(gt_boxes), gt_classes, gt_mask, num_classes)
    num_anchors = pred_boxes.shape[0]

    in_region, _ = geometry_relation(grid_xy, strides, boxes, candidate_rule=candidate_rule,
                                     center_radius=center_radius)
    iou = pairwise_iou_cxcywh(boxes, pred_boxes.astype(jnp.float32))
    iou = jnp.where(gt_mask[:, None], iou, 0.0)

    # Class costs of the SimOTA form, split so that no [G, A, C] array exists.
    p = jnp.sqrt(jax.nn.sigmoid(cls_logits.astype(jnp.float32))
                 * jax.nn.sigmoid(obj_logits.astype(jnp.float32))[:, None])
    log_p = jnp.maximum(jnp.log(p), -100.0)
    log_1mp = jnp.maximum(jnp.log(1.0 - p), -100.0)
    bg_cost = -jnp.sum(log_1mp, axis=-1)                                      # [A]
    fg_cost = (bg_cost[None, :] + jnp.take(log_1mp, classes, axis=1).T
               - jnp.take(log_p, classes, axis=1).T
               + iou_weight * -jnp.log(iou + 1e-8)
               + center_prior * (~in_region).astype(jnp.float32))
    # Padded gts have zero supply; give them a finite cost so nothing overflows in the solver.
    fg_cost = jnp.where(gt_mask[:, None], fg_cost, 0.0)
    cost = jnp.concatenate([fg_cost, bg_cost[None, :]], axis=0)               # [G + 1, A]

    k = dynamic_k(jax.lax.stop_gradient(iou), gt_mask, topk_iou=topk_iou, k_rounding=k_rounding)
    k_f = k.astype(jnp.float32)
    supply = jnp.concatenate([k_f, jnp.maximum(num_anchors - jnp.sum(k_f), 0.0)[None]])
    demand = jnp.ones((num_anchors,), jnp.float32)
    # Sinkhorn needs equal totals; normalise both to 1 (the plan is rescaled back below).
    total = jnp.sum(supply)
    plan = sinkhorn_plan(cost, supply / total, demand / num_anchors,
                         epsilon=epsilon, num_iters=num_iters) * num_anchors

    hard = jax.lax.stop_gradient(plan)
    owner = jnp.argmax(hard, axis=0)                                          # [A] in [0, G]
    g = boxes.shape[0]
    fg = owner < g
    matched = jnp.where(fg, owner, 0).astype(jnp.int32)
    iou_sg = jax.lax.stop_gradient(iou)
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

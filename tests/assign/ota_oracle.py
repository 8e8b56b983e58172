"""NumPy transcription of the official OTA assigner; reference for ``ota(..., cost="ota")``.

Source: github.com/Megvii-BaseDetection/OTA, commit 2c85b4d0f9031396854aae969330dde2ab5eacbd
(2021-05-11), ``playground/detection/coco/ota.x101.fpn.coco.800size.1x/fcos.py`` (the ``fcos.py``
of the res50, res101 and x101.dcnv2 playgrounds is byte-identical):

* ``FCOS.get_ground_truth`` (lines 232-345): the cost, dynamic k, marginals and the assignment;
* ``SinkhornDistance`` (lines 665-715, same file; there is no ``sinkhorn.py``): the solver;
* ``get_ious_and_iou_loss`` (lines 46-113): the IoU and the regression cost;
* ``config.py`` next to it: ``OTA.REG_WEIGHT=1.5``, ``SINKHORN_EPS=0.1``, ``SINKHORN_ITER=50``,
  ``TOP_CANDIDATES=20``, ``FCOS.FOCAL_LOSS_ALPHA=0.25``, ``FOCAL_LOSS_GAMMA=2.0``.

From cvpods (github.com/Megvii-BaseDetection/cvpods,
commit 2deea5dc659371318c8a570c644201d913a83027):
``sigmoid_focal_loss_jit`` (``cvpods/modeling/losses/focal_loss.py``, fvcore's focal loss),
``Shift2BoxTransform.get_deltas`` (``cvpods/modeling/box_regression.py``:
``(shift - box[:2], box[2:] - shift)``, weights 1) and the FCOS shift generator
(``cvpods/configs/fcos_config.py``: ``SHIFT_GENERATOR.OFFSET=0.0``, i.e. points at ``i * stride``).

What the official code does (per image, everything under ``torch.no_grad``):

1. ``is_in_boxes``: point strictly inside the gt by more than 0.01 on all four sides; AND
   ``is_in_centers``: point strictly inside the gt's centre box, ``centre +- 2.5 * stride``
   (hard-coded radius, not the config's CENTER_SAMPLING_RADIUS) clipped to the gt box, the centre
   being ``(x0 + x1) / 2`` of the xyxy gt.
2. ``loss_cls[g, a] = sum_c focal(logit[a, c], onehot(class_g)[c])`` with alpha 0.25, gamma 2, on
   the classification logits only (the IoU branch is not part of the cost);
   ``loss_cls_bg[a] = sum_c focal(logit[a, c], 0)``.
3. ``ious, loss_delta``: IoU of the predicted box with the gt (``get_ious_and_iou_loss`` in ltrb
   mode relative to the point, i.e. plain xyxy IoU), ``loss_type='iou'``:
   ``-log(clamp(iou, eps))`` with ``eps = float32 eps``; NOT the GIoU of the training loss.
4. ``loss = loss_cls + REG_WEIGHT * loss_delta + 1e6 * (1 - is_in)``.
5. Dynamic k: ``topk(ious * is_in, 20)`` summed, ``.int()`` (truncation), ``clamp(min=1)``.
   Supply ``mu = [k_1 .. k_G, A - sum k]``, demand ``nu = ones(A)``; cost rows
   ``[loss; loss_cls_bg]``.
6. ``SinkhornDistance(eps=0.1, max_iter=50)``: ``u = v = 1``; 50 iterations, no stopping test::

       M(C, u, v) = (-C + u[:, None] + v[None, :]) / eps
       v = eps * (log(nu + 1e-8) - logsumexp(M(C, u, v).T, -1)) + v
       u = eps * (log(mu + 1e-8) - logsumexp(M(C, u, v), -1)) + u
       pi = exp(M(C, u, v))

7. ``pi /= pi.max(dim=1)`` (each row scaled to max 1), then per anchor ``torch.max(pi, dim=0)``
   (first maximum on ties); the background row (index G) means negative.

Inputs differ from the official ones only in form: the oracle takes decoded predicted boxes
(cxcywh, as YOLOX has them) instead of FCOS's (l, t, r, b) distances, and the points in pixels
(the official ones are ``i * stride``; YOLOX's ``(i + 0.5) * stride``); the IoU is computed from
xyxy corners instead of point-relative ltrb (translation by the point, same value up to rounding).
``score_from="joint"`` is this project's YOLOX option (focal terms on the probability
``sigmoid(cls) * sigmoid(obj)``, logs clamped at -100 like ``F.binary_cross_entropy``);
``reg_cost="giou"`` uses the GIoU branch of ``get_ious_and_iou_loss`` (not what OTA uses).

All arithmetic is float32, as in the official code.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32
EPS32 = np.finfo(np.float32).eps


def _xyxy(b):
    b = np.asarray(b, F32).reshape(-1, 4)
    half = b[:, 2:] * F32(0.5)
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def _bce_with_logits(x, t):
    """torch's ``binary_cross_entropy_with_logits`` (its stable form), elementwise."""
    m = np.maximum(-x, F32(0))
    return (F32(1) - t) * x + m + np.log(np.exp(-m) + np.exp(-x - m))


def focal_from_logits(x, t, alpha, gamma):
    """fvcore / cvpods ``sigmoid_focal_loss`` (reduction none)."""
    p = F32(1) / (F32(1) + np.exp(-x))
    ce = _bce_with_logits(x, t)
    p_t = p * t + (F32(1) - p) * (F32(1) - t)
    loss = ce * ((F32(1) - p_t) ** F32(gamma))
    if alpha >= 0:
        loss = (F32(alpha) * t + F32(1 - alpha) * (F32(1) - t)) * loss
    return loss


def focal_from_probs(p, t, alpha, gamma):
    """The same focal loss on a probability (``F.binary_cross_entropy``, logs clamped at -100)."""
    ce = -(t * np.maximum(np.log(p), F32(-100))
           + (F32(1) - t) * np.maximum(np.log(F32(1) - p), F32(-100)))
    p_t = p * t + (F32(1) - p) * (F32(1) - t)
    loss = ce * ((F32(1) - p_t) ** F32(gamma))
    if alpha >= 0:
        loss = (F32(alpha) * t + F32(1 - alpha) * (F32(1) - t)) * loss
    return loss


def ious_and_iou_loss(inputs, targets, loss_type="iou"):
    """``get_ious_and_iou_loss`` in xyxy mode, broadcasting."""
    i, t = inputs, targets
    inputs_area = np.maximum(i[..., 2] - i[..., 0], 0) * np.maximum(i[..., 3] - i[..., 1], 0)
    targets_area = np.maximum(t[..., 2] - t[..., 0], 0) * np.maximum(t[..., 3] - t[..., 1], 0)
    w_i = np.maximum(np.minimum(i[..., 2], t[..., 2]) - np.maximum(i[..., 0], t[..., 0]), 0)
    h_i = np.maximum(np.minimum(i[..., 3], t[..., 3]) - np.maximum(i[..., 1], t[..., 1]), 0)
    area_i = w_i * h_i
    area_u = targets_area + inputs_area - area_i
    ious = area_i / np.maximum(area_u, EPS32)
    if loss_type == "iou":
        loss = -np.log(np.maximum(ious, EPS32))
    elif loss_type == "giou":
        g_w = np.maximum(i[..., 2], t[..., 2]) - np.minimum(i[..., 0], t[..., 0])
        g_h = np.maximum(i[..., 3], t[..., 3]) - np.minimum(i[..., 1], t[..., 1])
        ac = g_w * g_h
        loss = F32(1) - (ious - (ac - area_u) / np.maximum(ac, EPS32))
    else:
        raise ValueError(loss_type)
    return ious.astype(F32), loss.astype(F32)


def _logsumexp(x, axis=-1):
    """torch.logsumexp: max-shifted, a row of -inf gives -inf."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, F32(0))
    return (np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m).squeeze(axis)


def sinkhorn_distance(mu, nu, C, eps=0.1, max_iter=50):
    """``SinkhornDistance.forward``: returns ``(cost, pi)``."""
    eps = F32(eps)
    C = C.astype(F32)
    u = np.ones_like(mu, dtype=F32)
    v = np.ones_like(nu, dtype=F32)

    def M(u, v):
        return (-C + u[:, None] + v[None, :]) / eps

    log_mu = np.log(mu.astype(F32) + F32(1e-8))
    log_nu = np.log(nu.astype(F32) + F32(1e-8))
    for _ in range(max_iter):
        v = eps * (log_nu - _logsumexp(M(u, v).T, axis=-1)) + v
        u = eps * (log_mu - _logsumexp(M(u, v), axis=-1)) + u
    pi = np.exp(M(u, v))
    return np.sum(pi * C), pi


def ota_oracle(pred_boxes, cls_logits, obj_logits, points, strides, gt_boxes, gt_classes, *,
               score_from="cls", alpha=0.25, gamma=2.0, reg_weight=1.5, reg_cost="iou",
               center_radius=2.5, in_box_margin=0.01, center_prior=1e6, top_candidates=20,
               eps=0.1, num_iters=50):
    """Official OTA ``get_ground_truth`` for one image, on the valid gts only.

    pred_boxes [A, 4] cxcywh, cls_logits [A, C], obj_logits [A] or None (needed for
    ``score_from="joint"``), points [A, 2] pixels, strides [A], gt_boxes [G, 4] cxcywh,
    gt_classes [G] int. Returns a dict: ``fg`` [A] bool, ``matched_gt`` [A] (G = background),
    ``matched_class`` [A] (num_classes = background, as the official ``gt_classes``),
    ``matched_iou`` [A] (0 where background), ``pi`` [G + 1, A] (the raw plan),
    ``pi_rescaled``, ``cost`` [G + 1, A], ``k`` [G], ``is_in`` [G, A], ``ious`` [G, A].
    """
    pred = _xyxy(pred_boxes)
    x = np.asarray(cls_logits, F32)
    a, num_classes = x.shape
    gts = _xyxy(gt_boxes)
    g = gts.shape[0]
    gcls = np.asarray(gt_classes, np.int64).reshape(-1)
    pts = np.asarray(points, F32).reshape(-1, 2)
    strides = np.asarray(strides, F32).reshape(-1)

    # 1. in box and centre
    deltas = np.concatenate([pts[None] - gts[:, None, :2], gts[:, None, 2:] - pts[None]], axis=-1)
    is_in_boxes = deltas.min(axis=-1) > F32(in_box_margin)
    centers = (gts[:, :2] + gts[:, 2:]) / F32(2)
    radius = (strides * F32(center_radius))[None, :, None]                         # [1, A, 1]
    center_boxes = np.concatenate([np.maximum(centers[:, None] - radius, gts[:, None, :2]),
                                   np.minimum(centers[:, None] + radius, gts[:, None, 2:])],
                                  axis=-1)
    center_deltas = np.concatenate([pts[None] - center_boxes[..., :2],
                                    center_boxes[..., 2:] - pts[None]], axis=-1)
    is_in = is_in_boxes & (center_deltas.min(axis=-1) > 0)                           # [G, A]

    # 2. classification costs
    onehot = np.eye(num_classes, dtype=F32)[gcls]                                    # [G, C]
    if score_from == "cls":
        loss_cls = focal_from_logits(np.broadcast_to(x[None], (g, a, num_classes)),
                                     np.broadcast_to(onehot[:, None], (g, a, num_classes)),
                                     alpha, gamma).sum(-1)
        loss_cls_bg = focal_from_logits(x, np.zeros_like(x), alpha, gamma).sum(-1)
    elif score_from == "joint":
        sig = lambda z: F32(1) / (F32(1) + np.exp(-z))                               # noqa: E731
        p = sig(x) * sig(np.asarray(obj_logits, F32))[:, None]
        loss_cls = focal_from_probs(np.broadcast_to(p[None], (g, a, num_classes)),
                                    np.broadcast_to(onehot[:, None], (g, a, num_classes)),
                                    alpha, gamma).sum(-1)
        loss_cls_bg = focal_from_probs(p, np.zeros_like(p), alpha, gamma).sum(-1)
    else:
        raise ValueError(score_from)

    # 3-4. regression cost and total
    ious, loss_delta = ious_and_iou_loss(pred[None], gts[:, None], reg_cost)
    loss = (loss_cls + F32(reg_weight) * loss_delta
            + F32(center_prior) * (F32(1) - is_in.astype(F32)))

    # 5. dynamic k and marginals
    masked = ious * is_in.astype(F32)
    kk = min(top_candidates, a)
    topk = -np.sort(-masked, axis=1)[:, :kk]
    k = np.maximum(topk.sum(1).astype(np.int32), 1).astype(F32)        # .int() truncates; >= 0 here
    mu = np.ones(g + 1, F32)
    mu[:-1] = k
    mu[-1] = F32(a) - mu[:-1].sum()
    nu = np.ones(a, F32)
    cost = np.concatenate([loss, loss_cls_bg[None]], axis=0).astype(F32)

    # 6. Sinkhorn
    _, pi = sinkhorn_distance(mu, nu, cost, eps=eps, max_iter=num_iters)

    # 7. rescale rows, argmax per anchor
    pi_rescaled = pi / pi.max(axis=1, keepdims=True)
    matched = np.argmax(pi_rescaled, axis=0)
    fg = matched != g
    matched_class = np.full(a, num_classes, np.int64)
    matched_class[fg] = gcls[matched[fg]]
    matched_iou = np.zeros(a, F32)
    matched_iou[fg] = ious[matched[fg], np.nonzero(fg)[0]]
    return dict(fg=fg, matched_gt=matched, matched_class=matched_class, matched_iou=matched_iou,
                pi=pi, pi_rescaled=pi_rescaled, cost=cost, k=k.astype(np.int64), is_in=is_in,
                ious=ious)

"""Ground-truth buckets: run a batched assigner on as few gt rows as the batch needs.

Ground truths are padded to a fixed ``G`` (static shapes), but a batch rarely fills it: 30 gts
padded to 120 makes every ``[B, G, A]`` array of an assigner four times larger than needed.
``in_gt_buckets`` moves the valid rows of every image to the front (a stable sort, so the
relative order of valid gts, and with it every tie rule, is kept), picks on device the smallest
bucket size ``g`` that holds the batch's largest gt count, and runs the assigner on the first
``g`` rows only, one ``lax.cond`` branch per bucket (one compiled program, no host round trip).
``matched_gt`` and ``dynamic_k`` are mapped back to the caller's rows.

Exact for any assigner in which padded rows take no anchor and influence no other row (every
built-in): the result equals the assigner run on all ``G`` rows.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp

from yolox_jax.assign._simota import Assignment, _switch_by_conds

# Row counts to specialise for; the padded size G is always the last bucket.
DEFAULT_GT_BUCKETS = (8, 32)


def bucket_sizes(buckets: Sequence[int], g_pad: int) -> list[int]:
    """Sorted bucket sizes below ``g_pad``, then ``g_pad`` itself."""
    return sorted({int(s) for s in buckets if 0 < int(s) < g_pad} | {int(g_pad)})


def in_gt_buckets(core: Callable[..., Assignment], gt_boxes, gt_classes, gt_mask,
                  buckets: Sequence[int] = DEFAULT_GT_BUCKETS) -> Assignment:
    """``core(gt_boxes, gt_classes, gt_mask)`` on the first ``g`` valid-first rows.

    core: a function of gts ``[B, g, 4]``, ``[B, g]``, ``[B, g]`` (any ``g``) returning a batched
      ``Assignment`` whose ``matched_gt`` indexes those rows and whose ``dynamic_k`` is ``[B, g]``.
    gt_boxes [B, G, 4], gt_classes [B, G], gt_mask [B, G] (False rows: anything).
    buckets: row counts to specialise for (``()``: always all ``G`` rows, no reordering).

    Returns the ``Assignment`` with ``matched_gt`` (0 where not fg) and ``dynamic_k`` [B, G] in
    the caller's row order.
    """
    b, g_pad = gt_mask.shape
    sizes = bucket_sizes(buckets, g_pad)
    if len(sizes) == 1:
        return core(gt_boxes, gt_classes, gt_mask)
    gt_mask = jnp.asarray(gt_mask).astype(bool)
    perm = jnp.argsort(~gt_mask, axis=1, stable=True).astype(jnp.int32)       # valid rows first
    boxes = jnp.take_along_axis(gt_boxes, perm[..., None], axis=1)
    classes = jnp.take_along_axis(gt_classes, perm, axis=1)
    mask = jnp.take_along_axis(gt_mask, perm, axis=1)

    def branch(g):
        def run(ops):
            bx, cs, mk = ops
            out = core(bx[:, :g], cs[:, :g], mk[:, :g])
            return out._replace(dynamic_k=jnp.pad(out.dynamic_k.astype(jnp.int32),
                                                  ((0, 0), (0, g_pad - g))))
        return run

    n_gt = jnp.max(jnp.sum(mask, axis=1))
    which = jnp.searchsorted(jnp.asarray(sizes, jnp.int32), n_gt, side="left")
    out = _switch_by_conds(which, [branch(s) for s in sizes], (boxes, classes, mask))
    rows = jnp.arange(b)[:, None]
    matched = jnp.where(out.fg_mask, jnp.take_along_axis(perm, out.matched_gt, axis=1), 0)
    k = jnp.zeros((b, g_pad), jnp.int32).at[rows, perm].set(out.dynamic_k)
    return out._replace(matched_gt=matched.astype(jnp.int32), dynamic_k=k)

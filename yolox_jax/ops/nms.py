"""Hard NMS and Soft-NMS for one image, with a fixed output size.

Everything is static-shape: the output always has ``max_output`` rows and a ``valid`` mask says
which are real. Two kernels:

* **Hard NMS** (greedy, torchvision ``nms`` / ``batched_nms`` semantics): candidates are taken in
  descending score order, ties broken by the **lower index first** (``lax.top_k`` is stable; this
  is also what torchvision's CPU kernel gives, since it sorts with ``stable=True``). A box is
  suppressed when its IoU with an already kept box is **strictly greater** than the threshold.
  The sorted candidates are processed in tiles of ``_TILE`` boxes inside a ``lax.while_loop``:
  each tile is first suppressed by the boxes already kept (a ``[K, T]`` IoU), then resolved
  among itself with a ``[T, T]`` IoU by fixed-point iteration (see ``_resolve_tile``). The loop
  stops as soon as ``max_output`` boxes are kept or the candidates run out, so the work is
  ``O(tiles_visited * T * (T + K))`` and no ``[N, N]`` matrix is ever built. This beats a
  one-box-per-iteration loop (``K`` sequential steps of ``O(N)`` each) on CPU, where every
  ``while_loop`` step has a fixed cost, and on GPU, where ``[T, T]`` blocks fill the device.
* **Soft-NMS** (Bodla et al. 2017): a ``lax.while_loop`` of at most ``max_output`` steps. Each
  step selects the box with the highest current score (ties: lower index), records it with that
  (decayed) score, and decays the others (same class only when ``classes`` is given):

  - ``method="linear"``: ``s <- s * (1 - iou)`` where ``iou > iou_threshold``;
  - ``method="gaussian"``: ``s <- s * exp(-iou**2 / sigma)`` for all boxes;
  - ``method="gaussian", sigma="mean"``: the variant of the seed write-up (shared/seeds/002):
    ``sigma`` is the mean current score of the remaining candidates (of the selected box's
    class when class-aware) and the decay is applied only where ``iou > iou_threshold``.

  A box whose decayed score falls below ``score_threshold`` is dropped. Scores only decrease,
  so the recorded rows come out sorted by score.

Class-aware NMS (``classes`` given) is exactly "run the class-agnostic algorithm on each class
separately and merge the outputs by score": IoU between boxes of different classes is treated as
zero. That is what torchvision's ``batched_nms`` computes; we mask by class instead of offsetting
coordinates, so the IoU arithmetic stays on the original coordinates (the offset trick can
change the last bits of an IoU that sits right at the threshold).

Candidates: a box takes part iff its score is finite and ``>= score_threshold``; NaN and +-inf
scores are never selected. IoU uses torchvision's ``box_iou`` arithmetic; an IoU of 0/0 (two
zero-area boxes) counts as 0, so zero-area boxes never suppress and are never suppressed
(torchvision gets the same result because ``NaN > t`` is false). Identical boxes with positive
area have IoU 1 and suppress each other under hard NMS for any threshold < 1.

Pre-NMS compaction: the (usually few) candidates are first compacted into the smallest of a few
static bucket sizes that holds them all, chosen per call with ``lax.switch`` (a real branch when
the call is not itself vmapped), so the loops run over hundreds of boxes instead of all N. The
bucket always holds every candidate, so the compaction can never change the result. When
``nms`` itself is ``vmap``-ed the switch becomes a select and every bucket runs; batch callers
should use :func:`nms_batched` (what ``postprocess`` uses), which picks one bucket for the batch.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_TILE = 128
_BUCKETS = (256, 1024, 4096)
_METHODS = ("hard", "linear", "gaussian")


def _areas(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou(a, b, area_a, area_b):
    """IoU of a [P, 4] with b [Q, 4] (xyxy) -> [P, Q]; torchvision arithmetic, 0/0 -> 0."""
    lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
    rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = jnp.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area_a[:, None] + area_b[None, :] - inter)
    return jnp.where(jnp.isnan(iou), 0.0, iou)


def _same_class(ca, cb):
    return ca[:, None] == cb[None, :]


def _resolve_tile(base, over):
    """Greedy keep-mask inside one tile.

    base [T] bool: candidates not suppressed by earlier tiles; over [T, T] bool: over[i, j] means
    box i (earlier in score order, i < j) would suppress box j. The greedy answer is the unique
    fixed point of ``keep[j] = base[j] and not any_i(keep[i] and over[i, j])``; iterating from
    ``keep = base`` makes entry j final once entries < j are, so it converges in at most
    (length of the longest suppression chain + 1) steps, typically 2-4.
    """

    def step(keep):
        return base & ~jnp.any(keep[:, None] & over, axis=0)

    def cond(c):
        return c[1]

    def body(c):
        keep, _ = c
        new = step(keep)
        return new, jnp.any(new != keep)

    keep, _ = lax.while_loop(cond, body, (base, jnp.array(True)))
    return keep


def _hard_sorted(boxes, classes, cand, iou_threshold, max_output):
    """Greedy NMS over boxes already sorted by descending score.

    boxes [M, 4] xyxy, classes [M] int32, cand [M] bool (candidates form a prefix), M a multiple
    of _TILE. Returns positions [K] int32 into the sorted arrays (-1 padding) and valid [K].
    """
    m = boxes.shape[0]
    k = max_output
    n_tiles = m // _TILE
    areas = _areas(boxes)
    upper = jnp.triu(jnp.ones((_TILE, _TILE), bool), 1)
    offsets = jnp.arange(_TILE, dtype=jnp.int32)

    def cond(st):
        t, count, *_ = st
        start = jnp.minimum(t, n_tiles - 1) * _TILE
        return (t < n_tiles) & (count < k) & cand[start]

    def body(st):
        t, count, pos, kb, ka, kc, kv = st
        start = t * _TILE
        tb = lax.dynamic_slice_in_dim(boxes, start, _TILE)
        ta = lax.dynamic_slice_in_dim(areas, start, _TILE)
        tc = lax.dynamic_slice_in_dim(classes, start, _TILE)
        tv = lax.dynamic_slice_in_dim(cand, start, _TILE)
        prev = (_iou(kb, tb, ka, ta) > iou_threshold) & _same_class(kc, tc) & kv[:, None]
        base = tv & ~jnp.any(prev, axis=0)
        over = (_iou(tb, tb, ta, ta) > iou_threshold) & _same_class(tc, tc) & upper
        keep = _resolve_tile(base, over)
        rank = count + jnp.cumsum(keep) - 1
        slot = jnp.where(keep & (rank < k), rank, k)  # slot k is out of range: dropped
        pos = pos.at[slot].set(start + offsets, mode="drop")
        kb = kb.at[slot].set(tb, mode="drop")
        ka = ka.at[slot].set(ta, mode="drop")
        kc = kc.at[slot].set(tc, mode="drop")
        kv = kv.at[slot].set(True, mode="drop")
        count = jnp.minimum(count + jnp.sum(keep, dtype=jnp.int32), k)
        return t + 1, count, pos, kb, ka, kc, kv

    init = (jnp.int32(0), jnp.int32(0), jnp.full((k,), -1, jnp.int32),
            jnp.zeros((k, 4), boxes.dtype), jnp.zeros((k,), areas.dtype),
            jnp.zeros((k,), jnp.int32), jnp.zeros((k,), bool))
    _, _, pos, *_, kv = lax.while_loop(cond, body, init)
    return pos, kv


def _soft(boxes, scores, classes, cand, iou_threshold, max_output, score_threshold, method,
          sigma):
    """Soft-NMS over M candidates (any order; ties go to the lower position).

    Returns positions [K] int32 (-1 padding), decayed scores [K] (0 padding), valid [K].
    """
    k = max_output
    areas = _areas(boxes)
    s0 = jnp.where(cand, scores, -jnp.inf)

    def cond(st):
        i, s, best, *_ = st
        return (i < k) & (s[best] > -jnp.inf)

    def body(st):
        i, s, best, pos, out_s, out_v = st
        pos = pos.at[i].set(best)
        out_s = out_s.at[i].set(s[best])
        out_v = out_v.at[i].set(True)
        s = s.at[best].set(-jnp.inf)
        alive = s > -jnp.inf
        affected = alive & (classes == classes[best])
        iou = _iou(boxes[best][None], boxes, areas[best][None], areas)[0]
        if method == "linear":
            decay = jnp.where(iou > iou_threshold, 1.0 - iou, 1.0)
        elif isinstance(sigma, str):  # "mean": the seed variant
            n = jnp.sum(affected)
            mean = jnp.sum(jnp.where(affected, s, 0.0)) / jnp.maximum(n, 1)
            decay = jnp.where(iou > iou_threshold, jnp.exp(-(iou * iou) / mean), 1.0)
        else:
            decay = jnp.exp(-(iou * iou) / sigma)
        # where(), not a product over all boxes: -inf * 0 would give NaN.
        s = jnp.where(affected, s * decay, s)
        s = jnp.where(alive & (s < score_threshold), -jnp.inf, s)
        return i + 1, s, jnp.argmax(s).astype(jnp.int32), pos, out_s, out_v

    init = (jnp.int32(0), s0, jnp.argmax(s0).astype(jnp.int32), jnp.full((k,), -1, jnp.int32),
            jnp.zeros((k,), scores.dtype), jnp.zeros((k,), bool))
    _, _, _, pos, out_s, out_v = lax.while_loop(cond, body, init)
    return pos, out_s, out_v


def _bucket_sizes(n):
    sizes = sorted({b for b in _BUCKETS if b < n} | {n})
    return tuple(sizes)


def _one_image(boxes, scores, classes, cand, *, size, iou_threshold, max_output,
               score_threshold, method, sigma):
    """Compact the candidates of one image into ``size`` rows and run the kernel."""
    n = scores.shape[0]
    if method == "hard":
        # top_k is stable (lower index first among equal scores): the greedy visiting order.
        masked = jnp.where(cand, scores, -jnp.inf)
        _, order = lax.top_k(masked, size)
        padded = -(-size // _TILE) * _TILE
        order = jnp.pad(order, (0, padded - size), constant_values=0)
        c_cand = jnp.pad(cand[order[:size]], (0, padded - size))
        pos, valid = _hard_sorted(boxes[order], classes[order], c_cand, iou_threshold,
                                  max_output)
        idx = jnp.where(valid, order[jnp.maximum(pos, 0)], -1)
        out_scores = jnp.where(valid, scores[jnp.maximum(idx, 0)], 0.0)
        return idx.astype(jnp.int32), out_scores, valid
    # Soft-NMS: keep the original index order so ties in decayed scores go to the lower index.
    if size < n:
        (order,) = jnp.nonzero(cand, size=size, fill_value=0)
    else:
        order = jnp.arange(n)
    c_cand = cand[order] & (jnp.arange(size) < jnp.sum(cand)) if size < n else cand
    pos, out_scores, valid = _soft(boxes[order], scores[order], classes[order], c_cand,
                                   iou_threshold, max_output, score_threshold, method, sigma)
    idx = jnp.where(valid, order[jnp.maximum(pos, 0)], -1)
    return idx.astype(jnp.int32), out_scores, valid


def _check_args(method, sigma, max_output):
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if isinstance(sigma, str) and (sigma != "mean" or method != "gaussian"):
        raise ValueError('sigma may be a string only as sigma="mean" with method="gaussian"')
    if int(max_output) < 1:
        raise ValueError(f"max_output must be >= 1, got {max_output}")


@functools.partial(jax.jit, static_argnames=("max_output", "method", "sigma"))
def nms_batched(boxes_xyxy, scores, iou_threshold, *, max_output, classes=None,
                score_threshold=0.0, method="hard", sigma=0.5):
    """:func:`nms` for a batch, choosing one compaction bucket for the whole batch.

    Jitted; max_output, method and sigma are static, the thresholds are traced (no recompile
    when they change).

    boxes_xyxy [B, N, 4], scores [B, N], classes [B, N] int or None.
    Returns indices [B, K] int32 (-1 padding), scores [B, K] (0 padding), valid [B, K] bool.
    """
    _check_args(method, sigma, max_output)
    boxes_xyxy = jnp.asarray(boxes_xyxy)
    scores = jnp.asarray(scores)
    b, n = scores.shape
    if classes is None:
        classes = jnp.zeros((b, n), jnp.int32)
    classes = jnp.asarray(classes).astype(jnp.int32)
    cand = jnp.isfinite(scores) & (scores >= score_threshold)
    kernel = functools.partial(_one_image, iou_threshold=iou_threshold,
                               max_output=int(max_output), score_threshold=score_threshold,
                               method=method, sigma=sigma)
    sizes = _bucket_sizes(n)
    branches = [
        lambda ops, size=size: jax.vmap(functools.partial(kernel, size=size))(*ops)
        for size in sizes
    ]
    ops = (boxes_xyxy, scores, classes, cand)
    if len(sizes) == 1:
        return branches[0](ops)
    most = jnp.max(jnp.sum(cand, axis=1))
    which = jnp.sum(jnp.asarray(sizes[:-1]) < most)
    return lax.switch(which, branches, ops)


@functools.partial(jax.jit, static_argnames=("max_output", "method", "sigma"))
def nms(boxes_xyxy, scores, iou_threshold, *, max_output, classes=None, score_threshold=0.0,
        method="hard", sigma=0.5):
    """Non-maximum suppression for one image, fixed output size (see the module docstring).

    Args:
      boxes_xyxy: [N, 4] x1, y1, x2, y2.
      scores: [N]; NaN/inf never selected; candidates need ``score >= score_threshold``.
      iou_threshold: suppress (hard) / decay (linear, seed variant) where IoU > this.
      max_output: K, the number of output rows (static).
      classes: [N] int, optional; when given, NMS runs independently per class.
      score_threshold: minimum score of a candidate; Soft-NMS also drops boxes whose decayed
        score falls below it (Bodla et al. use 0.001; at 0.0 Soft-NMS never drops a box).
      method: "hard", "linear" or "gaussian".
      sigma: Gaussian Soft-NMS parameter (float), or "mean" for the seed variant.

    Returns:
      indices [K] int32 into the inputs (-1 padding), scores [K] (the original score for hard
      NMS, the decayed score for Soft-NMS; 0 padding), valid [K] bool. Rows are sorted by
      descending score; valid rows come first.
    """
    boxes_xyxy = jnp.asarray(boxes_xyxy)
    scores = jnp.asarray(scores)
    cls = None if classes is None else jnp.asarray(classes)[None]
    idx, out_scores, valid = nms_batched(
        boxes_xyxy[None], scores[None], iou_threshold, max_output=max_output, classes=cls,
        score_threshold=score_threshold, method=method, sigma=sigma)
    return idx[0], out_scores[0], valid[0]

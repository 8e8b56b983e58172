"""Hard NMS and Soft-NMS for one image, with a fixed output size.

Everything is static-shape: the output always has ``max_output`` rows and a ``valid`` mask says
which are real. Two kernels:

* **Hard NMS** (greedy, torchvision ``nms`` / ``batched_nms`` semantics): candidates are taken in
  descending score order, ties broken by the **lower index first** (``lax.top_k`` is stable; this
  is also what torchvision's CPU kernel gives, since it sorts with ``stable=True``). A box is
  suppressed when its IoU with an already kept box is **strictly greater** than the threshold.
  Candidates are visited in tiles of ``_TILE`` (128) inside a ``lax.while_loop``: each step
  takes the next 128 best unvisited candidates with ``lax.top_k`` (no full sort: XLA:CPU's sort
  of 8400 scores alone costs more than the whole NMS), drops those with IoU > t against the
  boxes already kept (scanning only the filled part of the kept buffer, ``[T, T]`` blocks),
  then resolves the tile among itself with a ``[T, T]`` IoU by fixed-point iteration (see
  ``_resolve_tile``). The loop stops as soon as ``max_output`` boxes are kept or the candidates
  run out, so the work is ``O(tiles_visited * T * (N / T + T + kept))`` and no ``[N, N]``
  matrix is built; no pre-NMS top-k cap is needed, so nothing can change the result. This beat
  a one-box-per-step loop (``K`` steps of ``O(N)``) on CPU, where every loop step has a fixed
  cost; on GPU the ``[T, T]`` blocks are the natural unit as well (not yet measured on a GPU).
* **Soft-NMS** (Bodla et al. 2017): a ``lax.while_loop`` of at most ``max_output`` steps. Each
  step selects the box with the highest current score (ties: lower index), records it with that
  (decayed) score, and decays the others (same class only when ``classes`` is given):

  - ``method="linear"``: ``s <- s * (1 - iou)`` where ``iou > iou_threshold``;
  - ``method="gaussian"``: ``s <- s * exp(-iou**2 / sigma)`` for all boxes;
  - ``method="gaussian", sigma="mean"``: a common write-up's variant (adaptive sigma):
    ``sigma`` is the mean current score of the remaining candidates (of the selected box's
    class when class-aware) and the decay is applied only where ``iou > iou_threshold``.

  A box whose decayed score falls below ``score_threshold`` is dropped. Scores only decrease,
  so the recorded rows come out sorted by score. The Gaussian method with a fixed sigma decays
  log-scores (``log s -= iou**2 / sigma``, no ``exp`` in the loop; the reported scores are
  ``exp(log s)``, equal to the product form to a few float32 ulps; scores <= 0 rank last and
  are reported as 0). Each step finds the first maximum in two levels (block maxima, then one
  block), so only one pass reads all candidates (see ``_soft``, ``first_max_rows``).

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

Compaction (both kernels): every Soft-NMS step touches every candidate and every hard-NMS tile
takes a ``top_k`` over them, so the (usually few) candidates are first compacted, in index
order, into the smallest of a few static bucket sizes
that holds them all, chosen with ``lax.switch`` (a real branch when the call is not itself
vmapped). The bucket always holds every candidate, so this never changes the result. When
``nms`` itself is ``vmap``-ed the switch becomes a select and every bucket runs; batch callers
should use :func:`nms_batched` (what ``postprocess`` uses), which picks one bucket per batch.
The running count behind the compaction is an exact block-matmul cumsum (``_integer_cumsum``).
Hard NMS keeps its class labels lazy through the compaction's index map (``src_index``).
Class labels and candidate counts must be exactly representable as float32 (< 2**24).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_TILE = 128
_BUCKETS = (256, 512, 1024, 2048, 4096)
_METHODS = ("hard", "linear", "gaussian")


def _areas(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _min(a, b):
    """min(a, b) as one compare-and-select. jnp.minimum propagates NaN, which XLA:CPU pays for
    with two extra instructions per element; the IoU callers make NaN coordinates harmless
    themselves (see _iou and _soft). Equal to jnp.minimum for non-NaN inputs (up to the sign
    of a zero)."""
    return jnp.where(a < b, a, b)


def _max(a, b):
    """max(a, b) as one compare-and-select (see _min)."""
    return jnp.where(a > b, a, b)


def _iou(a, b, area_a, area_b):
    """IoU of a [P, 4] with b [Q, 4] (xyxy) -> [P, Q]; torchvision arithmetic, 0/0 -> 0.

    A NaN coordinate in either box makes its area, hence the union and the IoU, NaN, which maps
    to 0 like 0/0: such a box neither suppresses nor is suppressed.
    """
    lt = _max(a[:, None, :2], b[None, :, :2])
    rb = _min(a[:, None, 2:], b[None, :, 2:])
    wh = _max(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area_a[:, None] + area_b[None, :] - inter)
    return jnp.where(jnp.isnan(iou), 0.0, iou)


def first_argmax(x):
    """jnp.argmax(x, axis=-1) (first index of the maximum), as int32.

    Written as max + min: on CPU, XLA's argmax (a variadic value/index reduce) is several times
    slower, which showed when it ran over all 8400 x 80 class probabilities.
    """
    n = x.shape[-1]
    # Positions as float32 where exact (n < 2**24): XLA:CPU's float min-reduce is faster.
    dtype = jnp.float32 if n < 2 ** 24 else jnp.int32
    top = jnp.max(x, axis=-1, keepdims=True)
    iota = jnp.arange(n, dtype=dtype)
    return jnp.min(jnp.where(x == top, iota, jnp.asarray(n, dtype)), axis=-1).astype(jnp.int32)


def first_max_rows(s, block=64):
    """Per row of s [B, M]: (first index of the maximum [B] int32, the maximum [B]).

    Two levels, so that only one pass reads all of s: the maxima of blocks of ``block``
    columns [B, M / block], then the first block holding the row maximum, then the first
    position inside that one gathered block. (One full max plus a full first-index pass
    cost about twice as much per Soft-NMS step on XLA:CPU.) A row of -inf gives index 0.
    """
    b, m = s.shape
    if m <= block:
        return first_argmax(s), jnp.max(s, axis=1)
    nb = -(-m // block)
    if nb * block != m:
        s = jnp.pad(s, ((0, 0), (0, nb * block - m)), constant_values=-jnp.inf)
    blocks = s.reshape(b, nb, block)
    block_max = jnp.max(blocks, axis=2)                                            # [B, nb]
    # The barrier stops XLA from folding max(max(blocks)) back into a second full pass over s.
    top = jnp.max(lax.optimization_barrier(block_max), axis=1)                     # [B]
    jb = jnp.min(jnp.where(block_max == top[:, None], jnp.arange(nb, dtype=jnp.int32), nb - 1),
                 axis=1)
    row = jnp.take_along_axis(blocks, jb[:, None, None], axis=1)[:, 0]             # [B, block]
    w = jnp.min(jnp.where(row == top[:, None], jnp.arange(block, dtype=jnp.int32), block - 1),
                axis=1)
    return (jb * block + w).astype(jnp.int32), top


def _labels(class_src, idx, class_start=0):
    """Class labels of rows ``idx`` of class_src: [N, 1] int labels, or [N, D] float rows whose
    columns from ``class_start`` on are class scores (label = best class). Only the visited
    rows are reduced over classes, never all N, so a caller can pass its [N, 5 + C] array
    without materialising the class scores of every row."""
    if jnp.issubdtype(class_src.dtype, jnp.integer):
        return class_src[idx][..., 0].astype(jnp.int32)
    # Slice, then gather: XLA fuses the two into one dense [..., C] result (gathering whole
    # rows and slicing afterwards made a second copy).
    return first_argmax(class_src[..., class_start:][idx])


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


def _suppressed_by_kept(tb, ta, tc, kb, ka, kc, kv, count, t_size, iou_threshold):
    """[T] bool: tile boxes with IoU > threshold (same class) against any kept box.

    Only the first ceil(count / T) chunks of the kept buffer hold boxes, so the scan stops there:
    the cost follows the number kept so far, not max_output.
    """

    def body(j, sup):
        sl = functools.partial(lax.dynamic_slice_in_dim, start_index=j * t_size,
                               slice_size=t_size)
        hit = (_iou(sl(kb), tb, sl(ka), ta) > iou_threshold) & _same_class(sl(kc), tc)
        return sup | jnp.any(hit & sl(kv)[:, None], axis=0)

    n_chunks = (count + t_size - 1) // t_size
    return lax.fori_loop(0, n_chunks, body, jnp.zeros(tb.shape[0], bool))


def _hard(boxes, scores, class_src, cand, iou_threshold, max_output, tile, class_start,
          src_index=None):
    """Greedy NMS, visiting candidates tile by tile in (score desc, index asc) order.

    boxes [N, 4] xyxy, scores [N], class_src [N, 1] int / [N, C] float (see _labels),
    cand [N] bool; src_index [N] int, optional: row of class_src for each candidate (when the
    candidates were compacted but the class source was not). Each step takes the next
    ``tile`` best unvisited candidates with ``lax.top_k`` (stable: lower index first on ties),
    which on CPU costs a small fraction of a full sort, and stops once K boxes are kept or the
    candidates run out. Returns indices [K] int32 (-1 padding), scores [K] (0 padding), valid [K].
    """
    t_size = min(tile, scores.shape[0])
    # The kept-box buffer is padded to whole tiles so it can be scanned tile by tile.
    k = max_output
    k_pad = -(-k // t_size) * t_size
    areas = _areas(boxes)
    upper = jnp.triu(jnp.ones((t_size, t_size), bool), 1)

    def cond(st):
        count, done = st[1], st[2]
        return (count < k) & ~done

    def body(st):
        remaining, count, _, idx, out_s, kb, ka, kc, kv = st
        ts, ti = lax.top_k(remaining, t_size)
        tv = ts > -jnp.inf
        remaining = remaining.at[ti].set(-jnp.inf)
        rows = ti if src_index is None else src_index[ti]   # class_src rows of the tile
        tb, ta, tc = boxes[ti], areas[ti], _labels(class_src, rows, class_start)
        base = tv & ~_suppressed_by_kept(tb, ta, tc, kb, ka, kc, kv, count, t_size,
                                         iou_threshold)
        over = (_iou(tb, tb, ta, ta) > iou_threshold) & _same_class(tc, tc) & upper
        keep = _resolve_tile(base, over)
        rank = count + jnp.cumsum(keep) - 1
        slot = jnp.where(keep & (rank < k), rank, k_pad)  # out of range: dropped
        idx = idx.at[slot].set(ti, mode="drop")
        out_s = out_s.at[slot].set(ts, mode="drop")
        kb = kb.at[slot].set(tb, mode="drop")
        ka = ka.at[slot].set(ta, mode="drop")
        kc = kc.at[slot].set(tc, mode="drop")
        kv = kv.at[slot].set(True, mode="drop")
        count = jnp.minimum(count + jnp.sum(keep, dtype=jnp.int32), k)
        # A tile that is not full of candidates was the last one.
        return remaining, count, ~tv[-1], idx, out_s, kb, ka, kc, kv

    init = (jnp.where(cand, scores, -jnp.inf), jnp.int32(0), ~jnp.any(cand),
            jnp.full((k,), -1, jnp.int32), jnp.zeros((k,), scores.dtype),
            jnp.zeros((k_pad, 4), boxes.dtype), jnp.zeros((k_pad,), areas.dtype),
            jnp.zeros((k_pad,), jnp.int32), jnp.zeros((k_pad,), bool))
    _, _, _, idx, out_s, *_, kv = lax.while_loop(cond, body, init)
    return idx.astype(jnp.int32), out_s, kv[:k]


def _soft(boxes, scores, classes, cand, iou_threshold, max_output, score_threshold, method,
          sigma):
    """Soft-NMS over M candidates of each of B images (any order; ties go to the lower position).

    boxes [B, M, 4], scores / classes / cand [B, M]. One ``lax.while_loop`` for the whole batch
    (not a vmapped one: a batched loop predicate would wrap every state update in a select);
    an image that has run out of candidates just idles (its selection is -inf, nothing changes).
    Returns positions [B, K] int32 (-1 padding), decayed scores [B, K] (0 padding), valid [B, K].

    The Gaussian decay with a fixed sigma runs on log-scores: ``log s -= iou**2 / sigma`` is
    the same update as ``s *= exp(-iou**2 / sigma)`` without an ``exp`` per candidate and step
    (the exp was a quarter of the step on XLA:CPU); scores come back as ``exp(log s)``, equal
    to the product form to a few float32 ulps. Candidates with a score <= 0 (possible only with
    ``score_threshold <= 0``) have no logarithm: they rank after every positive score, in
    index order, and are reported with score 0.
    """
    k = max_output
    b, m = scores.shape
    log_domain = method == "gaussian" and not isinstance(sigma, str)
    # One [B, 6, M] table, so each step fetches the selected boxes with a single gather; its
    # rows are then plain [B, M] arrays and the one-to-many IoU below is purely elementwise.
    table = jnp.stack([boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3],
                       _areas(boxes), classes.astype(boxes.dtype)], axis=1)
    x1, y1, x2, y2, areas, cls_f = (table[:, j] for j in range(6))
    rows = jnp.arange(b)
    if log_domain:
        lowest = jnp.finfo(scores.dtype).min
        floor = jnp.log(jnp.asarray(score_threshold, scores.dtype))  # -inf at 0, NaN below
        inv_sigma = 1.0 / jnp.asarray(sigma, scores.dtype)

    def cond(st):
        i, _, _, any_live = st
        return (i < k) & any_live

    def body(st):
        # Select, record, decay: the selection is made at the top of the step, so the loop
        # carries only the scores and one [B, K, 2] record (position as float32, exact below
        # 2**24, and score): fewer loop-carried buffers, fewer copies per step on XLA:CPU.
        i, s, record, _ = st
        best, top = first_max_rows(s)                                                # [B]
        live = top > -jnp.inf
        entry = jnp.stack([jnp.where(live, best, -1).astype(s.dtype),
                           jnp.where(live, top, -jnp.inf if log_domain else 0.0)], axis=1)
        record = lax.dynamic_update_slice_in_dim(record, entry[:, None, :], i, 1)
        # One element per image: a scatter, not a compare-and-select over all M candidates
        # (an idle image "removes" position 0, which is already -inf).
        s = s.at[rows, best].set(-jnp.inf)
        sel = jnp.take_along_axis(table, best[:, None, None], axis=2)
        bx1, by1, bx2, by2, barea, bcls = (sel[:, j] for j in range(6))              # [B, 1]
        # A selected box with a NaN coordinate becomes an empty box (x1 = y1 = +inf, x2 = y2 =
        # -inf) that intersects nothing, so it decays nothing (the select-based _min/_max
        # would otherwise drop its NaN). A candidate's own NaN coordinate gives w or h NaN,
        # which _max(., 0) turns into 0: never decayed. Both as with NaN-propagating min/max.
        bad = jnp.isnan(bx1) | jnp.isnan(by1) | jnp.isnan(bx2) | jnp.isnan(by2)
        bx1, by1 = jnp.where(bad, jnp.inf, bx1), jnp.where(bad, jnp.inf, by1)
        bx2, by2 = jnp.where(bad, -jnp.inf, bx2), jnp.where(bad, -jnp.inf, by2)
        # Same arithmetic as _iou (torchvision's), one row. Where the boxes do not intersect
        # the decay is exactly 1 (so 0/0 for two zero-area boxes needs no special value there).
        w = _max(_min(bx2, x2) - _max(bx1, x1), 0.0)
        h = _max(_min(by2, y2) - _max(by1, y1), 0.0)
        inter = w * h
        iou = inter / (barea + areas - inter)
        if log_domain:
            # No liveness test needed: a removed box (-inf) stays -inf under "- finite >= 0",
            # and "< floor" leaves it -inf too. Two fewer operations on every candidate.
            s = jnp.where((cls_f == bcls) & (inter > 0), s - (iou * iou) * inv_sigma, s)
            s = jnp.where(s < floor, -jnp.inf, s)
        else:
            alive = s > -jnp.inf
            affected = alive & (cls_f == bcls)
            iou = jnp.where(jnp.isnan(iou), 0.0, iou)
            if method == "linear":
                decay = jnp.where(iou > iou_threshold, 1.0 - iou, 1.0)
            elif isinstance(sigma, str):  # "mean": the adaptive-sigma variant
                n = jnp.sum(affected, axis=1, keepdims=True)
                mean = (jnp.sum(jnp.where(affected, s, 0.0), axis=1, keepdims=True)
                        / jnp.maximum(n, 1))
                decay = jnp.where(iou > iou_threshold, jnp.exp(-(iou * iou) / mean), 1.0)
            else:
                decay = jnp.exp(-(iou * iou) / sigma)
            # where(), not a product over all boxes: -inf * 0 would give NaN.
            s = jnp.where(affected, s * decay, s)
            s = jnp.where(alive & (s < score_threshold), -jnp.inf, s)
        # An image whose last candidate went this step idles from the next one on; the loop
        # ends when no image selected anything (at most one step late).
        return i + 1, s, record, jnp.any(live)

    if log_domain:
        s0 = jnp.where(scores > 0, jnp.log(jnp.maximum(scores, jnp.finfo(scores.dtype).tiny)),
                       lowest)
        s0 = jnp.where(cand, s0, -jnp.inf)
    else:
        s0 = jnp.where(cand, scores, -jnp.inf)
    record = jnp.zeros((b, k, 2), scores.dtype).at[..., 0].set(-1.0)
    _, _, record, _ = lax.while_loop(cond, body, (jnp.int32(0), s0, record, jnp.array(True)))
    pos = record[..., 0].astype(jnp.int32)
    out_s = record[..., 1]
    if log_domain:
        out_s = jnp.where(pos >= 0, jnp.exp(out_s), 0.0)
    return pos, out_s, pos >= 0


def _bucket_sizes(n):
    sizes = sorted({b for b in _BUCKETS if b < n} | {n})
    return tuple(sizes)


def _integer_cumsum(x, block=16):
    """Inclusive cumulative sum over the last axis of integer-valued float32 x [..., N] ->
    float32 [..., N] (exact while the total is below 2**24).

    Blocks of ``block`` summed with one small triangular matmul each, then the block totals the
    same way (recursively): on XLA:CPU a few small dots beat both ``jnp.cumsum`` (a
    reduce-window) and ``lax.associative_scan`` (~30 slice/add kernels) by 2-4x. HIGHEST
    precision keeps the dot exact on TPU/GPU too (no bf16 / TF32 passes).
    """
    *lead, n = x.shape
    nb = -(-n // block)
    xb = jnp.pad(x, [(0, 0)] * len(lead) + [(0, nb * block - n)]).reshape(*lead, nb, block)
    upper = jnp.triu(jnp.ones((block, block), x.dtype))
    within = jnp.matmul(xb, upper, precision=lax.Precision.HIGHEST)          # [..., nb, block]
    if nb > 1:
        totals = within[..., -1]
        within = within + (_integer_cumsum(totals, block) - totals)[..., None]
    return within.reshape(*lead, nb * block)[..., :n]


def _compact(boxes, scores, class_src, cand, count, *, size, class_start, with_labels=True):
    """Each image's candidates, in index order, in ``size`` rows.

    boxes [B, N, 4], scores [B, N], class_src [B, N, D] (see _labels), cand [B, N], count
    [B, N] int32: the inclusive running count of candidates (see _running_count) ->
    (order [B, S] int32, boxes [B, S, 4], scores [B, S], labels [B, S], cand [B, S]).
    Order-preserving, so ties still go to the lower index. The scatter and the gathers run on
    the flattened batch (one index column, no batch-index pairs to build).
    """
    b, n = scores.shape
    if size < n:
        # Stable compaction: candidate i goes to row (number of candidates before i).
        rank = count - 1                                                             # [B, N]
        base = jnp.arange(b, dtype=jnp.int32)[:, None]
        slot = jnp.where(cand, base * size + rank, b * size)
        source = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
        order = jnp.zeros(b * size, jnp.int32).at[slot.reshape(-1)].set(
            source.reshape(-1), mode="drop").reshape(b, size)
        c_cand = jnp.arange(size)[None, :] <= rank[:, -1:]
    else:  # the bucket is all N: nothing to move
        order = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
        labels = (_labels(class_src.reshape(b * n, -1), order.reshape(-1), class_start)
                  .reshape(b, n) if with_labels else None)
        return order, boxes, scores, labels, cand
    flat = (order + jnp.arange(b, dtype=jnp.int32)[:, None] * n).reshape(-1)
    labels = (_labels(class_src.reshape(b * n, -1), flat, class_start).reshape(b, -1)
              if with_labels else None)
    # Separate gathers: gathering [B*N, 5] rows would first need a concatenated copy of all
    # B*N boxes and scores, which cost more than the second gather.
    c_boxes = boxes.reshape(b * n, 4)[flat].reshape(b, -1, 4)
    c_scores = scores.reshape(b * n)[flat].reshape(b, -1)
    return order, c_boxes, c_scores, labels, c_cand


def _running_count(cand):
    """Inclusive running count of the candidates of each row: cand [B, N] bool -> [B, N] int32."""
    return _integer_cumsum(cand.astype(jnp.float32)).astype(jnp.int32)


def _original_index(order, pos, valid):
    """Positions in the compacted rows [B, K] -> indices into the inputs (-1 where not valid)."""
    idx = jnp.where(valid, jnp.take_along_axis(order, jnp.maximum(pos, 0), axis=1), -1)
    return idx.astype(jnp.int32)


def _soft_compacted(boxes, scores, class_src, cand, count, *, size, iou_threshold, max_output,
                    score_threshold, method, sigma, class_start):
    """Soft-NMS on a batch after compacting each image's candidates into ``size`` rows.

    Compaction keeps the original index order, so ties in decayed scores go to the lower index.
    """
    order, c_boxes, c_scores, labels, c_cand = _compact(
        boxes, scores, class_src, cand, count, size=size, class_start=class_start)
    pos, out_scores, valid = _soft(c_boxes, c_scores, labels, c_cand, iou_threshold,
                                   max_output, score_threshold, method, sigma)
    return _original_index(order, pos, valid), out_scores, valid


def _hard_compacted(boxes, scores, class_src, cand, count, *, size, iou_threshold, max_output,
                    class_start):
    """Hard NMS on a batch after the same compaction: every tile's ``lax.top_k`` then runs over
    the bucket instead of all N anchors (top_k was a quarter of the stage over 8400 anchors).
    Order-preserving, so ties still go to the lower index: the kept boxes are unchanged."""
    hard = jax.vmap(functools.partial(_hard, iou_threshold=iou_threshold,
                                      max_output=max_output, tile=_TILE,
                                      class_start=class_start))
    if size >= scores.shape[1]:
        # The largest bucket is all N: no compaction, and the labels stay lazy (only the
        # visited rows of a [N, C] class-score array are reduced over classes).
        return hard(boxes, scores, class_src, cand)
    # Labels stay lazy here too: each tile reduces only its own rows of class_src.
    order, c_boxes, c_scores, _, c_cand = _compact(
        boxes, scores, class_src, cand, count, size=size, class_start=class_start,
        with_labels=False)
    pos, out_scores, valid = hard(c_boxes, c_scores, class_src, c_cand, src_index=order)
    return _original_index(order, pos, valid), out_scores, valid


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
    scores = jnp.asarray(scores)
    if classes is None:
        class_src = jnp.zeros(scores.shape + (1,), jnp.int32)
    else:
        class_src = jnp.asarray(classes).astype(jnp.int32)[..., None]
    return nms_core(boxes_xyxy, scores, class_src, iou_threshold, max_output=max_output,
                    score_threshold=score_threshold, method=method, sigma=sigma)


def nms_core(boxes_xyxy, scores, class_src, iou_threshold, *, max_output, score_threshold,
             method, sigma, class_start=0):
    """nms_batched with classes given as class_src [B, N, 1] int labels, or [B, N, D] float
    rows whose columns class_start: are class scores (label = first best class, computed only
    for the rows NMS visits; e.g. decoded [B, A, 5 + C] with class_start=5). Not jitted."""
    _check_args(method, sigma, max_output)
    boxes_xyxy = jnp.asarray(boxes_xyxy)
    scores = jnp.asarray(scores)
    n = scores.shape[1]
    cand = jnp.isfinite(scores) & (scores >= score_threshold)
    common = dict(iou_threshold=iou_threshold, max_output=int(max_output),
                  class_start=class_start)
    kernel = (functools.partial(_hard_compacted, **common) if method == "hard" else
              functools.partial(_soft_compacted, **common, score_threshold=score_threshold,
                                method=method, sigma=sigma))
    sizes = _bucket_sizes(n)
    branches = [lambda ops, size=size: functools.partial(kernel, size=size)(*ops)
                for size in sizes]
    # The running count serves both the bucket choice (its last column) and the compaction.
    count = _running_count(cand)
    ops = (boxes_xyxy, scores, class_src, cand, count)
    if len(sizes) == 1:
        return branches[0](ops)
    # Soft-NMS visits every candidate at every step, hard NMS takes a top_k over them per tile:
    # run on the smallest bucket that holds all candidates of every image (a real branch, since
    # the index is not batched here).
    most = jnp.max(count[:, -1])
    which = jnp.sum(jnp.asarray(sizes[:-1]) < most)
    return lax.switch(which, branches, ops)


@functools.partial(jax.jit, static_argnames=("max_output", "method", "sigma"))
def nms(boxes_xyxy, scores, iou_threshold, *, max_output, classes=None, score_threshold=0.0,
        method="hard", sigma=0.5):
    """Non-maximum suppression for one image, fixed output size (see the module docstring).

    Args:
      boxes_xyxy: [N, 4] x1, y1, x2, y2.
      scores: [N]; NaN/inf never selected; candidates need ``score >= score_threshold``.
      iou_threshold: suppress (hard) / decay (linear, adaptive-sigma variant) where IoU > this.
      max_output: K, the number of output rows (static).
      classes: [N] int, optional; when given, NMS runs independently per class.
      score_threshold: minimum score of a candidate; Soft-NMS also drops boxes whose decayed
        score falls below it (Bodla et al. use 0.001; at 0.0 Soft-NMS never drops a box).
      method: "hard", "linear" or "gaussian".
      sigma: Gaussian Soft-NMS parameter (float), or "mean" for the adaptive-sigma variant.

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

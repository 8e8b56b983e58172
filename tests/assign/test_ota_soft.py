"""The differentiable OT assignment: soft targets from the Sinkhorn plan, gradients through the
cost into the predictions (finite, non-zero, equal to finite differences), and the loss using them."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from yolox_jax.assign import registry
from yolox_jax.losses import yolox_loss
from yolox_jax.ops.anchors import anchor_grid

HW = (64, 96)      # 96 + 24 + 6 = 126 anchors
C = 3


def problem(seed=0, b=2, g=4):
    """Raw head outputs and labels: b images, up to 3 boxes each (the last row padded)."""
    rng = np.random.default_rng(seed)
    grid_xy, strides = anchor_grid(HW)
    a = len(strides)
    raw = rng.normal(0, 0.5, (b, a, 5 + C)).astype(np.float32)
    labels = np.zeros((b, g, 5), np.float32)
    mask = np.zeros((b, g), bool)
    for i in range(b):
        n = 2 + i % 2
        wh = rng.uniform(12, 40, (n, 2))
        cxy = rng.uniform(wh / 2, np.array([HW[1], HW[0]]) - wh / 2)
        labels[i, :n] = np.concatenate([rng.integers(0, C, (n, 1)), cxy, wh], 1)
        mask[i, :n] = True
    labels[~mask] = np.nan  # junk behind the mask
    return raw, labels, mask, np.asarray(grid_xy), np.asarray(strides)


def _inputs(raw, labels, mask, grid_xy, strides):
    from yolox_jax.ops.anchors import decode_boxes

    pred = decode_boxes(raw[..., :4], grid_xy, strides)
    gt_classes = jnp.where(mask, jnp.nan_to_num(labels[..., 0]), 0).astype(jnp.int32)
    return pred, raw[..., 5:], raw[..., 4], jnp.nan_to_num(labels[..., 1:5]), gt_classes


# The plan's gradient is checked through both soft targets (``weight_grad=True``); the default,
# gradient through ``quality`` only, is test_default_holds_the_weight_fixed.
OPTIONS = dict(epsilon=0.5, num_iters=30, center_prior=5.0, weight_grad=True)


@functools.lru_cache(maxsize=None)
def _soft_sum(weight_grad=True):
    """A scalar of the soft targets: sum(weight * u) + sum(quality * v) for fixed u, v."""
    fn = registry.get_assigner("ota_soft")
    options = dict(OPTIONS, weight_grad=weight_grad)

    def f(raw, labels, mask, grid_xy, strides, u, v):
        pred, cls, obj, boxes, classes = _inputs(raw, labels, mask, grid_xy, strides)
        asg = fn(pred, cls, obj, grid_xy, strides, boxes, classes, mask, **options)
        return jnp.sum(asg.weight * u) + jnp.sum(asg.quality * v)
    return jax.jit(jax.value_and_grad(f), static_argnums=())


def test_soft_targets_gradient_matches_finite_differences():
    raw, labels, mask, grid_xy, strides = problem()
    rng = np.random.default_rng(1)
    u = rng.uniform(0.5, 1.5, raw.shape[:2]).astype(np.float32)
    v = rng.uniform(0.5, 1.5, raw.shape[:2]).astype(np.float32)
    f = _soft_sum()
    value, grad = f(raw, labels, mask, grid_xy, strides, u, v)
    grad = np.asarray(grad)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # The plan depends on the class and objectness logits and on the boxes (IoU term).
    for channels in (slice(0, 4), slice(4, 5), slice(5, None)):
        assert np.abs(grad[..., channels]).max() > 1e-4
    # Directional derivatives. Along the logits, of the whole scalar; along the boxes, of the
    # weights only (v = 0): the IoU factor of ``quality`` carries no gradient by design.
    eps = 1e-2
    zero = np.zeros_like(v)
    for seed, (channels, vv) in enumerate([(slice(4, None), v), (slice(4, None), v),
                                           (slice(0, 4), zero), (slice(0, 4), zero)]):
        d = np.zeros_like(raw)
        d[..., channels] = np.random.default_rng(10 + seed).normal(size=raw[..., channels].shape)
        d /= np.linalg.norm(d)
        g = np.asarray(f(raw, labels, mask, grid_xy, strides, u, vv)[1])
        up = f(raw + eps * d, labels, mask, grid_xy, strides, u, vv)[0]
        down = f(raw - eps * d, labels, mask, grid_xy, strides, u, vv)[0]
        fd = (float(up) - float(down)) / (2 * eps)
        assert abs(fd) > 1e-3
        np.testing.assert_allclose(float(np.sum(g * d)), fd, rtol=3e-2, atol=2e-4)


def test_default_holds_the_weight_fixed():
    """By default (``weight_grad=False``) the targets are the same, ``weight`` carries no
    gradient and ``quality`` carries the same gradient as with ``weight_grad=True``."""
    raw, labels, mask, grid_xy, strides = problem()
    rng = np.random.default_rng(1)
    u = rng.uniform(0.5, 1.5, raw.shape[:2]).astype(np.float32)
    zero = np.zeros_like(u)
    held, both = _soft_sum(False), _soft_sum(True)
    for uu, vv in ((u, zero), (zero, u), (u, u)):
        (v0, g0), (v1, _) = held(raw, labels, mask, grid_xy, strides, uu, vv), \
            both(raw, labels, mask, grid_xy, strides, uu, vv)
        np.testing.assert_allclose(float(v0), float(v1), rtol=1e-6)
        g0 = np.asarray(g0)
        if vv is zero:
            assert np.all(g0 == 0)
        else:
            assert np.abs(g0).max() > 1e-4
    # The quality part alone is the same either way.
    g_q0 = np.asarray(held(raw, labels, mask, grid_xy, strides, zero, u)[1])
    g_q1 = np.asarray(both(raw, labels, mask, grid_xy, strides, zero, u)[1])
    np.testing.assert_allclose(g_q0, g_q1, rtol=1e-5, atol=1e-7)


def test_soft_targets_are_shares_of_the_plan():
    raw, labels, mask, grid_xy, strides = problem(seed=2)
    pred, cls, obj, boxes, classes = _inputs(raw, labels, mask, grid_xy, strides)
    asg = jax.jit(functools.partial(registry.get_assigner("ota_soft"), **OPTIONS))(
        pred, cls, obj, grid_xy, strides, boxes, classes, mask)
    w, q, fg = (np.asarray(x) for x in (asg.weight, asg.quality, asg.fg_mask))
    assert np.all((w >= 0) & (w <= 1 + 1e-5)) and np.all(w[~fg] == 0) and np.all(w[fg] >= 0.1)
    # quality = share held by the matched gt x its IoU <= the foreground share x 1
    assert np.all(q <= w + 1e-6) and np.all(q >= 0)
    assert fg.sum() > 0 and np.all(np.asarray(asg.matched_gt)[fg] < mask.sum(1).max())
    assert np.array_equal(np.asarray(asg.num_fg), fg.sum(1))
    assert np.all(mask[np.arange(len(fg))[:, None].repeat(fg.shape[1], 1)[fg],
                       np.asarray(asg.matched_gt)[fg]])


@functools.lru_cache(maxsize=None)
def _loss_grad(assigner):
    def loss(raw, labels, mask):
        return yolox_loss(raw, labels, mask, HW, assigner=assigner,
                          assign_kwargs=OPTIONS)["total_loss"]
    return jax.jit(jax.value_and_grad(loss))


def test_loss_gradient_flows_through_the_plan():
    """With ``ota_soft`` the loss gradient is finite, and differs from the gradient of the same
    loss with the soft targets held fixed (the part through plan, cost and predictions)."""
    raw, labels, mask, _, _ = problem(seed=3)
    fixed = registry.get_assigner("ota_soft")
    registry.register("ota_soft_fixed", lambda *a, **k: fixed(*a, **k))  # not differentiable
    try:
        value, grad = _loss_grad("ota_soft")(raw, labels, mask)
        value_fixed, grad_fixed = _loss_grad("ota_soft_fixed")(raw, labels, mask)
    finally:
        registry._REGISTERED.pop("ota_soft_fixed")
    grad, grad_fixed = np.asarray(grad), np.asarray(grad_fixed)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(float(value), float(value_fixed), rtol=1e-6)
    through_plan = np.abs(grad - grad_fixed)
    assert through_plan.max() > 1e-3 * np.abs(grad).max()


def test_gradient_is_finite_where_the_scores_saturate():
    """Logits whose sigmoid is 0 or 1 in float32 (a trained head's background anchors) leave the
    gradient finite: the clamped logs and the square root of the class cost pass 0, not NaN."""
    raw, labels, mask, grid_xy, strides = problem(seed=3)
    raw[0, :40, 4] = -120.0          # objectness 0
    raw[0, 40:80, 5:] = -120.0       # class scores 0
    raw[1, :, 4:] = 40.0             # objectness and class scores 1
    fn = registry.get_assigner("ota_soft")

    def f(raw):
        pred, cls, obj, gt_boxes, gt_classes = _inputs(raw, labels, mask, grid_xy, strides)
        out = fn(pred, cls, obj, grid_xy, strides, gt_boxes, gt_classes, mask, num_iters=10,
                 weight_grad=True)
        return jnp.sum(out.weight ** 2) + jnp.sum(out.quality)

    grad = np.asarray(jax.jit(jax.grad(f))(raw))
    assert np.isfinite(grad).all()
    assert np.abs(grad).max() > 0


def test_ota_class_cost_gradient_is_finite_where_the_joint_score_saturates():
    """The official OTA class cost on the joint score (``score_from="joint"``, probabilities):
    where the score is 0 or 1 in float32 the clamped logs pass a zero gradient, not
    ``0 * inf = NaN``; the values are those of the plain clamp."""
    from yolox_jax.assign._ota import ota_class_cost

    rng = np.random.default_rng(0)
    cls = rng.normal(size=(30, 4)).astype(np.float32)
    obj = rng.normal(size=30).astype(np.float32)
    cls[:10] = -120.0       # class scores 0
    obj[10:20] = 40.0       # objectness 1
    cls[10:20] = 40.0       # class scores 1
    classes = jnp.array([0, 2, 3])

    def total(cls, obj):
        fg, bg = ota_class_cost(cls, obj, classes, score_from="joint")
        return jnp.sum(fg) + jnp.sum(bg), (fg, bg)

    grads, (fg, bg) = jax.jit(jax.grad(total, argnums=(0, 1), has_aux=True))(cls, obj)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    assert np.abs(np.asarray(grads[0][20:])).max() > 0
    # The same values as the plain clamped logs (F.binary_cross_entropy's clamp at -100).
    s = (1 / (1 + np.exp(-cls.astype(np.float64)))) * (1 / (1 + np.exp(-obj.astype(np.float64))))[:, None]
    s = s.astype(np.float32).astype(np.float64)
    with np.errstate(divide="ignore"):
        neg = 0.75 * -np.maximum(np.log(1 - s), -100) * s ** 2
        pos = 0.25 * -np.maximum(np.log(s), -100) * (1 - s) ** 2
    want_bg = neg.sum(1)
    want_fg = want_bg[None, :] - neg[:, classes].T + pos[:, classes].T
    np.testing.assert_allclose(np.asarray(bg), want_bg, rtol=2e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(fg), want_fg, rtol=2e-5, atol=1e-4)

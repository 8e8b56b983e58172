"""Compare label assigners: the same model, data and budget trained with each assigner over
several seeds, summarised as a Markdown table, JSON and a plot (``yolox-jax study-assign``).

Per run (``yolox_jax.train.loop.train``, one run folder each under ``<out>/runs``): the final
AP50 and AP50:95, the foreground anchors per gt of the last logged step (``train/num_fg``, the
loss's fg / gts), the step time and the wall time of the run.

Step time: ``global batch / images_per_s`` from the run's ``metrics.jsonl``, the median over
the logged intervals after the first (the first one includes compilation; a run that logged
only one interval reports that one, marked in the JSON by ``step_time_includes_compile``).

Share of the step in assignment, measured once per assigner after its first seed, on one batch
of that run's data at the run's input size with the run's final parameters:

* ``t_step``: a jitted train-mode forward pass + loss (assignment inside) + gradient;
* ``t_assign``: the jitted assignment alone (decode + assigner) on that forward pass's outputs;
* ``assign_share = t_assign / t_step``, each the median of ``repeats`` timed calls after a
  compile-and-warm-up call.

Both programs run on the same inputs and shapes, but XLA compiles them separately, so the share
is an estimate of the assignment's cost inside the fused step (the optimizer update and the EMA,
not in ``t_step``, add a few per cent to a real step).
"""
from __future__ import annotations

import copy
import json
import math
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

# Columns of the table: key in a run summary, header, format.
METRICS = (("AP50", "AP50", "{:.3f}"), ("AP50_95", "AP50:95", "{:.3f}"),
           ("fg_per_gt", "fg anchors / gt", "{:.2f}"), ("step_ms", "step (ms)", "{:.0f}"),
           ("assign_share", "assignment share of step", "{:.1%}"),
           ("wall_s", "run wall time (s)", "{:.0f}"))


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_time(records: list[dict], global_batch: int) -> tuple[float, bool]:
    """(seconds per step, includes_compile) from the ``train/images_per_s`` records: the median
    over the intervals after the first, or the first alone when it is the only one."""
    ips = [r["train/images_per_s"] for r in records if "train/images_per_s" in r]
    if not ips:
        return float("nan"), False
    use = ips[1:] if len(ips) > 1 else ips
    return global_batch / statistics.median(use), len(ips) == 1


def _median_time(fn: Callable, args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def assignment_share(cfg, state, repeats: int = 5) -> dict:
    """Time one training-size batch of ``cfg``'s data: forward + loss + gradient vs the
    assignment alone (module docstring). ``state``: a TrainState (its params and batch stats)."""
    import jax
    import jax.numpy as jnp

    from yolox_jax.assign._simota import sanitize_gts
    from yolox_jax.assign.registry import get_assigner, is_differentiable, loss_assign_kwargs
    from yolox_jax.losses import yolox_loss
    from yolox_jax.ops.anchors import anchor_grid, decode_boxes
    from yolox_jax.train import inputs
    from yolox_jax.train.loop import close_iterator, loss_options, model_from_config

    model = model_from_config(cfg)
    source = inputs.build_sources(cfg.data)[0]
    iterator = inputs.train_iterator(cfg, source, "no_aug", cfg.data.batch_size)
    try:
        batch = next(iterator)
    finally:
        close_iterator(iterator)
    images = jnp.asarray(batch["images"], jnp.float32)
    labels = jnp.asarray(batch["labels"], jnp.float32)
    mask = jnp.asarray(batch["label_mask"], bool)
    image_hw = tuple(images.shape[1:3])
    options = loss_options(cfg)
    params, stats = state.params, state.batch_stats

    def loss_fn(params, images, labels, mask):
        raw, _ = model.apply({"params": params, "batch_stats": stats}, images, train=True,
                             mutable=["batch_stats"])
        return yolox_loss(raw.astype(jnp.float32), labels, mask, image_hw, **options)["total_loss"]

    step = jax.jit(jax.value_and_grad(loss_fn))
    raw = jax.jit(lambda p, x: model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                           mutable=["batch_stats"])[0])(params, images)
    fn = get_assigner(options["assigner"])
    kwargs = loss_assign_kwargs(fn, options["assign_kwargs"], options["obj_target"])  # as the loss
    num_classes = raw.shape[-1] - 5

    def assign(raw, labels, mask):
        grid_xy, strides = anchor_grid(image_hw)
        gt_boxes, gt_classes = jax.vmap(sanitize_gts, in_axes=(0, 0, 0, None))(
            labels[..., 1:5], jnp.where(mask, labels[..., 0], 0.0).astype(jnp.int32), mask,
            num_classes)
        boxes = decode_boxes(raw[..., :4], grid_xy, strides)
        return fn(boxes, raw[..., 5:], raw[..., 4], grid_xy, strides, gt_boxes, gt_classes, mask,
                  **kwargs)

    if is_differentiable(options["assigner"]):
        # The loss differentiates through this assigner: time its forward and backward.
        def assign_sum(raw, labels, mask):
            a = assign(raw, labels, mask)
            return jnp.sum(a.weight) + jnp.sum(a.quality)
        assign_timed = jax.jit(jax.grad(assign_sum))
    else:
        assign_timed = jax.jit(assign)
    t_step = _median_time(step, (params, images, labels, mask), repeats)
    t_assign = _median_time(assign_timed, (raw, labels, mask), repeats)
    return {"t_step_s": t_step, "t_assign_s": t_assign, "assign_share": t_assign / t_step,
            "timed_batch": int(images.shape[0]), "timed_size": list(image_hw)}


def run_one(cfg, assigner: str, seed: int, runs_dir: Path, precompile: bool = True) -> dict:
    """Train ``cfg`` with ``assigner`` and ``seed`` into ``runs_dir/<assigner>_seed<seed>``;
    return its summary (and the final state under "state")."""
    from yolox_jax.train.loop import preflight, train

    c = copy.deepcopy(cfg)
    c.train.assigner = assigner
    c.train.seed = seed
    c.run.output_dir = str(runs_dir)
    c.run.experiment = f"{assigner.replace(':', '_')}_seed{seed}"
    c.run.resume = False
    preflight(c)
    if precompile:
        from yolox_jax.cpu import precompile as pre

        if pre.wanted(c):
            pre.precompile_in_child(c)
    t0 = time.perf_counter()
    out = train(c)
    wall = time.perf_counter() - t0
    seconds, with_compile = step_time(read_metrics(out["run_dir"]), c.data.batch_size)
    ev = out.get("eval") or {}
    return {"assigner": assigner, "seed": seed, "run_dir": out["run_dir"], "step": out["step"],
            "AP50": float(ev.get("AP50", float("nan"))),
            "AP50_95": float(ev.get("AP50_95", float("nan"))),
            "fg_per_gt": float(out["train"].get("num_fg", float("nan"))),
            "step_ms": 1000.0 * seconds, "step_time_includes_compile": with_compile,
            "wall_s": wall, "config": c, "state": out["state"]}


def _mean_std(values) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def summarise(runs: list[dict], shares: dict[str, dict]) -> list[dict]:
    """One row per assigner (in first-seen order): mean and std over its seeds of each metric."""
    rows = []
    for name in dict.fromkeys(r["assigner"] for r in runs):
        mine = [r for r in runs if r["assigner"] == name]
        row = {"assigner": name, "seeds": [r["seed"] for r in mine]}
        for key, _, _ in METRICS:
            if key == "assign_share":
                share = shares.get(name, {}).get("assign_share", float("nan"))
                row[key] = {"mean": float(share), "std": 0.0}
                continue
            mean, std = _mean_std(r[key] for r in mine)
            row[key] = {"mean": mean, "std": std}
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    header = "| assigner | seeds | " + " | ".join(h for _, h, _ in METRICS) + " |"
    lines = [header, "|" + "---|" * (2 + len(METRICS))]
    for row in rows:
        cells = []
        for key, _, fmt in METRICS:
            m, s = row[key]["mean"], row[key]["std"]
            if not math.isfinite(m):
                cells.append("n/a")
            elif key == "assign_share":
                cells.append(fmt.format(m))
            else:
                cells.append(f"{fmt.format(m)} ± {fmt.format(s)}")
        lines.append(f"| {row['assigner']} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> str:
    """Bars of AP50, AP50:95 and step time per assigner (error bars: std over seeds) into
    ``path``; matplotlib when installed, else plain PIL bars. Returns the backend used."""
    names = [r["assigner"] for r in rows]
    panels = (("AP50", "AP50"), ("AP50_95", "AP50:95"), ("step_ms", "step time (ms)"),
              ("fg_per_gt", "fg anchors / gt"))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_pil(rows, panels, path)
        return "PIL"
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for ax, (key, label) in zip(axes, panels):
        means = [r[key]["mean"] for r in rows]
        stds = [r[key]["std"] for r in rows]
        ax.bar(names, np.nan_to_num(means), yerr=np.nan_to_num(stds), capsize=4,
               color=[f"C{i}" for i in range(len(names))])
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return "matplotlib"


def _plot_pil(rows, panels, path: Path) -> None:
    from PIL import Image, ImageDraw

    pw, ph, pad = 220, 200, 24
    img = Image.new("RGB", (pw * len(panels), ph + 2 * pad), "white")
    draw = ImageDraw.Draw(img)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    for p, (key, label) in enumerate(panels):
        x0 = p * pw
        draw.text((x0 + 8, 4), label, fill="black")
        means = np.nan_to_num([r[key]["mean"] for r in rows])
        top = max(float(np.max(means)), 1e-9)
        bw = (pw - 16) / max(1, len(rows))
        for i, (row, m) in enumerate(zip(rows, means)):
            h = (ph - 10) * m / top
            bx = x0 + 8 + i * bw
            draw.rectangle([bx + 2, pad + ph - h, bx + bw - 2, pad + ph], fill=colours[i % 5])
            draw.text((bx + 2, pad + ph + 4), row["assigner"][:10], fill="black")
    img.save(path)


def run_study(cfg, assigners: list[str], seeds: int, out_dir, *, measure_share: bool = True,
              precompile: bool = True, repeats: int = 5,
              log: Optional[Callable[[str], None]] = print) -> dict:
    """Train every (assigner, seed) pair, then write ``study.md``, ``study.json`` and
    ``study.png`` in ``out_dir``; returns the JSON content. Seeds are ``train.seed``,
    ``train.seed + 1``, ... (the same for every assigner)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, shares = [], {}
    base_seed = cfg.train.seed
    for name in assigners:
        for i in range(seeds):
            seed = base_seed + i
            if log:
                log(f"study: {name} seed {seed}")
            result = run_one(cfg, name, seed, out / "runs", precompile=precompile)
            if measure_share and name not in shares:
                shares[name] = assignment_share(result["config"], result["state"], repeats)
            result.pop("state")
            result.pop("config")
            runs.append(result)
            if log:
                log(f"study: {name} seed {seed}: AP50 {result['AP50']:.3f} AP50:95 "
                    f"{result['AP50_95']:.3f} fg/gt {result['fg_per_gt']:.2f} "
                    f"step {result['step_ms']:.0f} ms")
    rows = summarise(runs, shares)
    table = markdown_table(rows)
    import platform

    import jax

    info = {"date": time.strftime("%Y-%m-%d"), "jax": jax.__version__,
            "backend": jax.default_backend(), "machine": platform.processor() or platform.machine(),
            "cpus": __import__("os").cpu_count()}
    result = {"assigners": list(assigners), "seeds": seeds, "rows": rows, "runs": runs,
              "assign_timing": shares, "info": info,
              "budget": {"max_epoch": cfg.train.max_epoch,
                         "steps_per_epoch": cfg.train.steps_per_epoch,
                         "batch_size": cfg.data.batch_size,
                         "input_size": list(cfg.data.input_size),
                         "model": cfg.model.name, "width": cfg.model.width}}
    (out / "study.md").write_text(
        f"# Assigner study\n\n{len(assigners)} assigners x {seeds} seeds; mean ± std over seeds "
        f"(assignment share: first seed).\n\n{table}")
    (out / "study.json").write_text(json.dumps(result, indent=2, default=str))
    result["plot_backend"] = plot(rows, out / "study.png")
    result["table"] = table
    return result

"""Train the same model on the same data and budget with several label assigners over several
seeds; write <out>/study.md (a Markdown table of mean ± std over seeds), study.json (every run)
and study.png.

    yolox-jax study-assign -f synthetic --assigners simota,tal,dsl --seeds 2 train.max_epoch=4
    yolox-jax study-assign -f synthetic --assigners simota,ota_soft --out outputs/study

Each run is ``yolox-jax train`` with train.assigner and train.seed set (seeds train.seed,
train.seed + 1, ...), in <out>/runs/<assigner>_seed<k>. Per assigner: AP50 and AP50:95 of the
final evaluation, foreground anchors per gt (train/num_fg of the last logged step), step time
(metrics.jsonl train/images_per_s after the first interval), and the share of the step spent in
assignment (a jitted forward + loss + gradient vs the jitted assignment alone, on one batch at
the run's input size: yolox_jax/train/study.py).
"""
from __future__ import annotations

from yolox_jax.cli import common

HELP = "compare label assigners: train each over several seeds, tabulate AP, fg/gt, step time"


def add_arguments(p):
    common.add_config_arguments(p)
    p.add_argument("--assigners", default="simota,tal",
                   help="comma-separated assigner names (default simota,tal)")
    p.add_argument("--seeds", type=int, default=2, help="runs per assigner (default 2)")
    p.add_argument("--out", default="outputs/study",
                   help="output folder (default outputs/study)")
    p.add_argument("--no-share", action="store_true",
                   help="skip measuring the share of the step spent in assignment")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed calls per program when measuring that share (default 5)")


def run(args) -> int:
    from yolox_jax.cli.assign_vis import assigner_list
    from yolox_jax.errors import UserError

    common.tune()
    cfg = common.load(args)
    names = assigner_list(args.assigners)
    if args.seeds < 1:
        raise UserError("must be at least 1", "--seeds")
    if args.repeats < 1:
        raise UserError("must be at least 1", "--repeats")
    from yolox_jax.train.study import run_study

    result = run_study(cfg, names, args.seeds, args.out, measure_share=not args.no_share,
                       repeats=args.repeats)
    print(result["table"], end="")
    print(f"{args.out}/study.md, study.json, study.png ({result['plot_backend']})")
    return 0

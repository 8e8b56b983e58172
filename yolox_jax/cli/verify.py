"""Check every checkpoint step of a run: each array against the checksum written when it was
saved, and the config and meta records.

    yolox-jax verify outputs/synthetic

Exit status 0 when every step is intact, 1 when one is damaged (``--resume``, ``eval`` and
``predict`` then use the newest intact step).
"""
from __future__ import annotations

HELP = "check every checkpoint step of a run against its checksums"


def add_arguments(p):
    p.add_argument("ckpt", help="a run folder, its checkpoints folder or a latest/best folder")


def run(args) -> int:
    from pathlib import Path

    from yolox_jax.errors import UserError
    from yolox_jax.train.checkpoint import verify

    if not Path(args.ckpt).is_dir():
        raise UserError("no such checkpoint folder", args.ckpt)
    report = verify(args.ckpt)
    if not report:
        raise UserError("no checkpoint steps found", args.ckpt)
    for manager, step, status in report:
        print(f"{manager}/{step}: {'ok' if status == 'ok' else 'DAMAGED: ' + status}")
    return 0 if all(status == "ok" for _, _, status in report) else 1

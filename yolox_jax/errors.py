"""The one exception type for mistakes in what the user gave us (paths, files, config values,
checkpoints). The command line prints it as one line, ``yolox-jax: <message>``, and exits 2;
everything else is a bug and keeps its traceback."""
from __future__ import annotations


class UserError(ValueError):
    """``what`` went wrong with ``where`` (a file, a config key, a checkpoint path).

    ``str(err)`` is ``"<what> (<where>)"``. A ValueError, so code that catches ValueError
    (e.g. around config parsing) keeps working.
    """

    def __init__(self, what: str, where: object | None = None):
        self.what = what
        self.where = None if where is None else str(where)
        super().__init__(what if where is None else f"{what} ({where})")

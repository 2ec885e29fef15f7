"""Where named benchmark data lives, and which splits a source offers.

Named data (``routerbench``, ``llmrouter``) is looked for in ``$ORCHESTRA_DATA_DIR``, then
``$ORCHESTRA_SHARED_DATA``; the library never guesses a folder from where it is installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestra.errors import UserError

__all__ = ["data_dirs", "find_data_dir"]


def data_dirs() -> list[Path]:
    """Folders searched for named benchmark data, first match wins.

    ``$ORCHESTRA_DATA_DIR``, then ``$ORCHESTRA_SHARED_DATA`` (where the project's CI points at
    its shared recorded data). Only existing folders are listed; the library never guesses a
    folder from where it is installed.
    """
    dirs = [os.environ.get("ORCHESTRA_DATA_DIR", ""), os.environ.get("ORCHESTRA_SHARED_DATA", "")]
    out: list[Path] = []
    for d in (Path(x) for x in dirs if x):
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_data_dir(name: str) -> Path | None:
    """The first ``<data dir>/<name>`` folder that exists (e.g. ``routerbench``), or None."""
    for d in data_dirs():
        if (d / name).is_dir():
            return d / name
    return None


def _check_split(split: str | None, allowed: Sequence[str], what: str) -> Any:
    """``split`` when it is one of ``allowed`` (typed Any: callers narrow it to their Literal)."""
    if split not in allowed:
        raise UserError(f"split={split!r} for {what}: expected one of {list(allowed)!r}")
    return split

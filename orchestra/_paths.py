"""Where named pools (``agents/``), policy recipes (``policies/``) and the training job files
(``training/``) are looked up."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["bundled_dir", "data_home", "find_named_file", "named_files", "search_dirs"]

_PACKAGE = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE.parent
_ENV = {"agents": "ORCHESTRA_AGENTS_DIR", "policies": "ORCHESTRA_POLICIES_DIR"}


def bundled_dir(kind: str) -> Path:
    """The copy of the top-level ``<kind>/`` folder shipped inside the installed package.

    A wheel carries ``agents/``, ``policies/`` and ``training/`` as ``orchestra/_bundled/<kind>``
    (copied there by ``setup.py`` at build time); a source checkout has no such folder.
    """
    return _PACKAGE / "_bundled" / kind


def _checkout_dir(kind: str) -> Path | None:
    """``<kind>/`` of the source checkout this package runs from (an editable install or
    ``PYTHONPATH``), or None when it runs from an installed wheel (no ``pyproject.toml`` beside)."""
    return _REPO_ROOT / kind if (_REPO_ROOT / "pyproject.toml").is_file() else None


def search_dirs(kind: str) -> list[Path]:
    """Folders searched for ``kind`` ("agents", "policies" or "training"), first match wins.

    ``$ORCHESTRA_AGENTS_DIR`` / ``$ORCHESTRA_POLICIES_DIR`` (``os.pathsep``-separated), then
    ``./<kind>`` in the working directory, then the ``<kind>/`` folder of the source checkout
    when the package runs from one, then the copy shipped inside the installed package
    (:func:`bundled_dir`). Only existing folders are listed.
    """
    dirs: list[Path] = []
    env = os.environ.get(_ENV.get(kind, ""), "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(Path.cwd() / kind)
    checkout = _checkout_dir(kind)
    if checkout is not None:
        dirs.append(checkout)
    dirs.append(bundled_dir(kind))
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def named_files(kind: str) -> dict[str, Path]:
    """Name → YAML file for every file of ``kind`` on the search path."""
    out: dict[str, Path] = {}
    for d in reversed(search_dirs(kind)):
        for f in sorted(d.glob("*.y*ml")):
            out[f.stem] = f
    return out


def find_named_file(kind: str, name: str) -> Path | None:
    """The YAML file called ``name`` of ``kind``, or None."""
    return named_files(kind).get(name)


def data_home() -> Path:
    """The user's orchestra data folder (traces, checkpoints): ``$ORCHESTRA_HOME`` or the
    platform's user data dir."""
    env = os.environ.get("ORCHESTRA_HOME")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("orchestra", appauthor=False))

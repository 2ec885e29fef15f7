"""Where named pools (``agents/``) and policy recipes (``policies/``) are looked up."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["search_dirs", "find_named_file", "named_files", "data_home"]

_REPO_ROOT = Path(__file__).resolve().parent.parent
_ENV = {"agents": "ORCHESTRA_AGENTS_DIR", "policies": "ORCHESTRA_POLICIES_DIR"}


def search_dirs(kind: str) -> list[Path]:
    """Folders searched for ``kind`` ("agents" or "policies"), first match wins.

    ``$ORCHESTRA_AGENTS_DIR`` / ``$ORCHESTRA_POLICIES_DIR``, then ``./<kind>`` in the working
    directory, then the ``<kind>/`` folder of the source checkout the package was installed from.
    """
    dirs: list[Path] = []
    env = os.environ.get(_ENV.get(kind, ""), "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(Path.cwd() / kind)
    dirs.append(_REPO_ROOT / kind)
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

"""Where router artifacts live: ``<data home>/artifacts/<data>-<kind>`` by default.

:func:`resolve_artifact` finds one by path or by name (``routerbench-knn``) and, when there is
none, names the ``orchestra train`` command (:func:`train_command`) that writes it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from orchestra.errors import UserError

__all__ = ["artifacts_home", "default_artifact_dir", "resolve_artifact", "train_command"]


def artifacts_home() -> Path:
    """``<data home>/artifacts``: where ``orchestra train`` writes by default."""
    from orchestra._paths import data_home

    return data_home() / "artifacts"


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).stem if ("/" in text or "\\" in text)
               else text.replace(":train", "")).strip("-.")
    return s or "data"


def default_artifact_dir(data: str, kind: str) -> Path:
    """``<data home>/artifacts/<data>-<kind>``, e.g. ``.../artifacts/routerbench-knn``."""
    return artifacts_home() / f"{_slug(data)}-{kind}"


def train_command(kind: str, name: str | None = None) -> str:
    """The ``orchestra train`` command that writes the artifact ``name`` (``<data>-<kind>``)."""
    data = "routerbench"
    if name:
        stem = Path(name).name
        if stem.endswith(f"-{kind}") and stem[: -len(kind) - 1]:
            data = stem[: -len(kind) - 1]
        else:
            data = "<outcome table>"
    return f"orchestra train {kind} --data {data}"


def resolve_artifact(path: str | os.PathLike[str] | None, kind: str) -> Path:
    """Find an artifact directory.

    ``path`` is used as given when it holds an artifact; otherwise its last component is looked
    up in :func:`artifacts_home` (so a recipe can name ``routerbench-knn``). ``None`` means
    ``routerbench-<kind>``.

    Raises:
        UserError: nothing found; the message names the ``orchestra train`` command to run.
    """
    name = str(path) if path is not None else f"routerbench-{kind}"
    p = Path(name).expanduser()
    if (p / "config.json").is_file():
        return p
    alt = artifacts_home() / p.name
    if (alt / "config.json").is_file():
        return alt
    cmd = train_command(kind, p.name)
    # A conventional name (<data>-<kind>) is what `orchestra train` writes to the artifacts
    # folder by default, where this lookup finds it by name; other names need --out.
    target = alt
    if "<" in cmd:
        target = alt if len(p.parts) == 1 else p
        cmd += f" --out {target}"
    raise UserError(
        f"no trained {kind} router at {name!r} (looked in {[str(p), str(alt)]}); train one "
        f"with `{cmd}` (it writes {str(target)!r}), or pass path=<artifact dir>"
    )

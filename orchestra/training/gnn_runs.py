"""A GNN training run's record in its artifact directory, so that ``--resume`` finds it.

``run.json`` holds the run's name, where Ray keeps its checkpoints, its config and its status
(``running``, then ``finished`` or ``stopped``); ``history.jsonl`` gets a line per epoch
(written by the driver's progress display, :mod:`orchestra.training.gnn_progress`).
:func:`resumed_run` reads a run back, with the options given again checked against it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestra.errors import UserError
from orchestra.training.gnn_config import GNNTrainConfig

__all__ = ["clear_run", "new_run_name", "resumed_run", "write_run"]


def _run_file(out: Path) -> Path:
    return out / "run.json"


def new_run_name() -> str:
    """A new run's name (Ray's name for it under its storage), from the current time."""
    return "gnn-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")


def resumed_run(out: Path, given: Mapping[str, Any] | None) -> tuple[GNNTrainConfig, str, str]:
    """The config, name and Ray storage of the run recorded in ``out``.

    Args:
        out: the run's artifact directory.
        given: the options given again: ``epochs`` / ``patience`` / ``min_epochs`` replace the
            saved ones; any other must equal the saved value.

    Raises:
        UserError: no run recorded in ``out``, or an option that may not change.
    """
    run_file = _run_file(out)
    if not run_file.is_file():
        raise UserError(
            f"nothing to resume in {str(out)!r} (no run.json); start a run with the same "
            "--out and without --resume"
        )
    run = json.loads(run_file.read_text(encoding="utf-8"))
    saved = GNNTrainConfig.model_validate(run["config"])
    allowed = {"epochs", "patience", "min_epochs"}
    given = dict(given or {})
    old = saved.model_dump()
    bad = sorted(k for k, v in given.items() if k not in allowed and old.get(k) != v)
    if bad:
        raise UserError(
            f"--resume continues the saved run's config; only {sorted(allowed)} may change "
            f"(got {', '.join(f'{k}={given[k]!r} (saved {old.get(k)!r})' for k in bad)}); "
            "drop those options, or start a new run with a new --out"
        )
    config = GNNTrainConfig.model_validate({**old, **{k: given[k] for k in given if k in allowed}})
    return config, run["run_name"], run["storage"]


def write_run(out: Path, run_name: str, storage: str, config: GNNTrainConfig, status: str,
              **extra: Any) -> None:
    """Record the run in ``out/run.json`` (``extra``: more fields, such as ``last_epoch``)."""
    _run_file(out).write_text(json.dumps({
        "run_name": run_name, "storage": storage, "config": config.model_dump(),
        "status": status, "updated": time.time(), **extra,
    }, indent=2), encoding="utf-8")


def clear_run(out: str | Path) -> None:
    """Remove a run's Ray storage and records from ``out`` (keeps the artifact)."""
    o = Path(out)
    shutil.rmtree(o / "ray", ignore_errors=True)
    for name in ("run.json", "history.jsonl"):
        (o / name).unlink(missing_ok=True)

"""The bandit's state on disk: one ``.npz`` file, written atomically, checked when read.

The file holds the learner's arrays (``A``, ``bq``, ``bc``, ``n``, ``cost_sse``, ``q_prior``)
and a JSON header (``header``): the format name and version, the arms, the feature settings
(:meth:`~orchestra.policies.bandit.features.QueryFeatures.describe`) and the learner's settings.
It is written to a temporary file beside the target and renamed over it, so a reader never sees
half a file and a crash mid-write leaves the previous state. No pickled objects: the file is
read with ``allow_pickle=False``.

A file that cannot be read, or that was written for other arms or features, is a ``UserError``
naming the file, what differs and the fix (delete or move it to start cold, or route with the
settings it was learned with).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from orchestra.errors import UserError
from orchestra.policies.bandit.learner import LinearBandit

__all__ = ["FORMAT", "VERSION", "load_state", "save_state"]

FORMAT = "orchestra-bandit"
VERSION = 1
_ARRAYS = ("A", "bq", "bc", "n", "cost_sse", "q_prior")


def save_state(path: str | os.PathLike[str], learner: LinearBandit, features: dict[str, Any]
               ) -> Path:
    """Write the learner's state to ``path`` atomically; the path written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "version": VERSION, "arms": learner.arms, "features": features,
              "learner": {"ridge": learner.ridge, "cost_z": learner.cost_z,
                          "min_cost_obs": learner.min_cost_obs, "updates": learner.updates}}
    arrays = {k: getattr(learner, k) for k in _ARRAYS}
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, header=np.array(json.dumps(header)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _fix(p: Path) -> str:
    return (f"delete or move {str(p)!r} to start the bandit cold, or give path= another file")


def load_state(path: str | os.PathLike[str], arms: list[str], features: dict[str, Any]
               ) -> LinearBandit:
    """Read a state written by :func:`save_state` for these ``arms`` and ``features``.

    Raises:
        UserError: the file is unreadable or not a bandit state, or its arms or features differ
            from those given (the message names the file, the difference and the fix).
    """
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            arrays = {k: np.asarray(z[k]) for k in _ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError,
            EOFError) as e:
        raise UserError(f"{str(p)!r} is not a readable bandit state ({type(e).__name__}: "
                        f"{e}); {_fix(p)}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise UserError(f"{str(p)!r} is not a bandit state (format "
                        f"{header.get('format') if isinstance(header, dict) else header!r}); "
                        f"{_fix(p)}")
    if header.get("version") != VERSION:
        raise UserError(f"{str(p)!r} has bandit state version {header.get('version')!r}; this "
                        f"orchestra reads version {VERSION}; {_fix(p)}")
    if header.get("arms") != arms:
        raise UserError(f"{str(p)!r} was learned for models {header.get('arms')!r}, not this "
                        f"pool's {arms!r}; {_fix(p)}, or route over the same models")
    if header.get("features") != features:
        raise UserError(f"{str(p)!r} was learned with features {header.get('features')!r}, not "
                        f"{features!r}; {_fix(p)}, or use the same embedder, dim and task_slots")
    cfg = header.get("learner") or {}
    m, d = len(arms), int(arrays["A"].shape[-1]) if arrays["A"].ndim == 3 else -1
    shapes = {"A": (m, d, d), "bq": (m, d), "bc": (m, d), "n": (m,), "cost_sse": (m,),
              "q_prior": (m,)}
    bad = [k for k, s in shapes.items() if arrays[k].shape != s]
    if d < 1 or bad or not all(np.isfinite(arrays[k]).all() for k in _ARRAYS):
        raise UserError(f"{str(p)!r} holds arrays of the wrong shape or non-finite values "
                        f"({bad or 'non-finite'}); {_fix(p)}")
    try:
        learner = LinearBandit(arms, d, q_prior=arrays["q_prior"], ridge=float(cfg["ridge"]),
                               cost_z=float(cfg["cost_z"]),
                               min_cost_obs=int(cfg["min_cost_obs"]))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{str(p)!r} has a malformed learner header ({e!r}); {_fix(p)}") from None
    learner.A = arrays["A"].astype(np.float64)
    learner.bq = arrays["bq"].astype(np.float64)
    learner.bc = arrays["bc"].astype(np.float64)
    learner.n = arrays["n"].astype(np.int64)
    learner.cost_sse = arrays["cost_sse"].astype(np.float64)
    learner.updates = int(cfg.get("updates", int(learner.n.sum())))
    try:
        learner._refresh()
    except np.linalg.LinAlgError:
        raise UserError(f"{str(p)!r} holds a singular design matrix; {_fix(p)}") from None
    return learner

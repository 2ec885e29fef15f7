"""The ``escalate`` artifact: a directory ``orchestra train escalate`` writes and the policy loads.

``config.json``: format and version, models, tasks, task priors, the cost model, ``cost_scale``,
the training record (CV table, λ calibration curve, compact λ grid, default λ, max calls).
``weights.npz``: the scorer's and the gain model's arrays (``scorer.*``, ``up.*``, ``down.*``,
``agree.*``). Default
location: ``<data home>/artifacts/<data>-escalate``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from orchestra.errors import UserError
from orchestra.policies.escalate.cascade import Escalator
from orchestra.policies.escalate.mlp import NumpyMLP
from orchestra.policies.learned.cost import CostModel
from orchestra.policies.learned.locations import resolve_artifact

__all__ = ["ESCALATE_VERSION", "load_escalator", "save_escalator"]

#: Version of the layout written by :func:`save_escalator`.
ESCALATE_VERSION = 1
_FORMAT = "orchestra.escalate"


def save_escalator(esc: Escalator, path: str | os.PathLike[str]) -> Path:
    """Write ``config.json`` and ``weights.npz`` under ``path`` (created)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    cfg = dict(esc.config)
    cfg.update({"format": _FORMAT, "version": ESCALATE_VERSION, "kind": "escalate",
                "models": esc.models, "tasks": esc.tasks, "prior": esc.prior.tolist(),
                "cost_model": esc.cost.to_dict(), "cost_scale": esc.cost_scale,
                "lookahead": esc.lookahead,
                "weights": "weights.npz"})
    arrays: dict[str, Any] = {**esc.scorer.state("scorer"), **esc.up.state("up"),
                              **esc.down.state("down"), **esc.agree.state("agree")}
    np.savez_compressed(p / "weights.npz", **arrays)
    (p / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    esc.config = cfg
    esc.path = p
    return p


_LOADED: dict[tuple[str, float], Escalator] = {}


def load_escalator(path: str | os.PathLike[str] | None) -> Escalator:
    """Load an artifact (a directory, or a name under ``<data home>/artifacts``; ``None``:
    ``routerbench-escalate``), memoised per directory and modification time.

    Raises:
        UserError: missing, unreadable or foreign artifact (naming the command that makes one).
    """
    p = resolve_artifact(path, "escalate")
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"no escalate artifact at {str(p)!r} (expected {str(cfg_path)!r}); "
                        "train one with `orchestra train escalate --data routerbench`")
    key = (str(p.resolve()), cfg_path.stat().st_mtime)
    if key in _LOADED:
        return _LOADED[key]
    try:
        cfg: dict[str, Any] = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_path}: expected JSON ({e.msg})") from None
    if cfg.get("format") != _FORMAT or cfg.get("version") != ESCALATE_VERSION:
        raise UserError(
            f"{cfg_path}: expected an escalate artifact version {ESCALATE_VERSION} (got format "
            f"{cfg.get('format')!r}, version {cfg.get('version')!r}); retrain it with "
            "`orchestra train escalate`"
        )
    with np.load(p / cfg["weights"]) as st:
        arrays = {k: st[k] for k in st.files}
    esc = Escalator(models=cfg["models"], tasks=cfg["tasks"], prior=np.asarray(cfg["prior"]),
                    cost=CostModel.from_dict(cfg["cost_model"]), cost_scale=cfg["cost_scale"],
                    scorer=NumpyMLP.from_state(arrays, "scorer"),
                    up=NumpyMLP.from_state(arrays, "up"), down=NumpyMLP.from_state(arrays, "down"),
                    agree=NumpyMLP.from_state(arrays, "agree"),
                    lookahead=bool(cfg.get("lookahead", True)), config=cfg)
    esc.path = p
    _LOADED[key] = esc
    return esc

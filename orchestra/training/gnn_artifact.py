"""The GNN router's serving artifact, read by :mod:`orchestra.policies.gnn.policy`.

:func:`save_artifact` writes ``config.json`` (the run's config, the network's shape, cost
scaling, λ calibration on validation, the training history), ``model.pt`` (the best weights)
and ``graph.npz`` (the training graph, served as context).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestra.training.gnn_config import GNNTrainConfig
from orchestra.training.gnn_data import Bundle
from orchestra.training.gnn_eval import calibrate

__all__ = ["ARTIFACT_VERSION", "save_artifact"]

ARTIFACT_VERSION = 1


def save_artifact(out: str | Path, bundle: Bundle, config: GNNTrainConfig,
                  state: Mapping[str, Any]) -> Path:
    """Write the serving artifact: ``config.json``, ``model.pt`` (best weights), ``graph.npz``.

    Uses the state's ``calibration`` (computed by the worker for the best weights) when there
    is one, else computes it here (:func:`~orchestra.training.gnn_eval.calibrate`).
    """
    import torch

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    best = state.get("best_model") or state["model"]
    cal = state.get("calibration")
    if cal is None:
        from orchestra.policies.gnn.model import GNNRouter

        net = GNNRouter(config.model_shape(bundle.data))
        net.load_state_dict(best)
        cal = calibrate(net, bundle, config)
    d = bundle.data
    torch.save(best, out_dir / "model.pt")
    d.save(out_dir / "graph.npz")
    meta = {
        "kind": "gnn",
        "version": ARTIFACT_VERSION,
        "train": config.model_dump(),
        "model": config.model_shape(d).to_dict(),
        "norm": bundle.norm.__dict__,
        "cost_scale": bundle.cost_scale,
        "cost_high_ratio": cal["cost_high_ratio"],
        "models": d.model_names,
        "tasks": d.task_names,
        "embedder": d.embedder,
        "cost_estimated": d.cost_estimated,
        "k": config.k,
        "default_lam": cal["default_lam"],
        "lambdas": cal["lambdas"],
        "calibration": cal["sweep"],
        "best_val_aiq": state.get("best_val_aiq"),
        "best_epoch": state.get("best_epoch"),
        "last_epoch": state.get("epoch"),
        "history": state.get("history", []),
        "saved": time.time(),
    }
    (out_dir / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out_dir

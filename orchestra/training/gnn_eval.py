"""Judging a GNN router on the validation split: predictions, AIQ, λ calibration.

The validation queries are never context during training; they are predicted from the whole
training graph (:func:`validation_graph`). :func:`validate` gives the validation loss and the
**validation AIQ** of a λ sweep, which decides early stopping; :func:`calibrate` gives what the
artifact stores about λ for the weights finally kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from orchestra.policies.gnn.graph import EdgeSet, build_graph
from orchestra.policies.learned.chooser import fine_lambda_grid
from orchestra.training.gnn_config import GNNTrainConfig
from orchestra.training.gnn_data import Bundle
from orchestra.training.lambdas import compact_lambdas, router_aiq, sweep_points

__all__ = ["calibrate", "predict_targets", "to_device", "validate", "validation_graph"]


def to_device(graph: Any, device: Any) -> Any:
    """``graph`` on ``device`` (left as it is on the CPU)."""
    return graph.to(device) if str(device) != "cpu" else graph


def validation_graph(bundle: Bundle, config: GNNTrainConfig) -> Any:
    """The whole training graph as context: every training outcome visible, every agent able
    to run every model."""
    d = bundle.data
    nq, nm = d.score.shape
    context = np.zeros(nq, dtype=bool)
    context[bundle.train_idx] = True
    edges = EdgeSet(context=context, visible=np.ones((nq, nm), dtype=bool),
                    task_known=np.ones(nq, dtype=bool),
                    agent_model=np.ones((len(d.agent_names), nm), dtype=bool), k=config.k,
                    vote_k=config.vote_k)
    return build_graph(d, bundle.norm, edges, bundle.neighbours)


def predict_targets(model: Any, graph: Any, targets: NDArray[np.int64], n_models: int,
                    agent: int = 0) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Predicted scores and standardised log costs ``(len(targets), n_models)`` (agent ``agent``)."""
    import torch

    net = getattr(model, "module", model)
    device = next(net.parameters()).device
    q = np.repeat(targets, n_models)
    m = np.tile(np.arange(n_models), len(targets))
    a = np.full_like(q, agent)
    pairs = torch.from_numpy(np.stack([q, m, a]).astype(np.int64)).to(device)
    was = net.training
    net.eval()
    with torch.no_grad():
        logit, cz = net(to_device(graph, device), pairs)
    net.train(was)
    return (torch.sigmoid(logit).cpu().numpy().reshape(len(targets), n_models),
            cz.cpu().numpy().reshape(len(targets), n_models))


def validate(model: Any, bundle: Bundle, config: GNNTrainConfig, graph: Any) -> dict[str, float]:
    """Validation loss and AIQ of the current model (no gradient)."""
    d = bundle.data
    v = bundle.val_idx
    ps, cz = predict_targets(model, graph, v, d.n_models)
    s, c = d.score[v], d.cost[v]
    obs = np.isfinite(s) & np.isfinite(c)
    p = np.clip(ps[obs].astype(np.float64), 1e-6, 1 - 1e-6)
    y = s[obs].astype(np.float64)
    bce = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    cmse = float(np.mean((cz[obs] - bundle.norm.cost(c[obs])) ** 2))
    pc = bundle.norm.usd(cz.astype(np.float64))
    return {
        "val_bce": bce,
        "val_cost_mse": cmse,
        "val_loss": bce + config.cost_weight * cmse,
        "val_aiq": router_aiq(ps.astype(np.float64), pc, s.astype(np.float64),
                              c.astype(np.float64), bundle.cost_scale),
    }


def calibrate(net: Any, bundle: Bundle, config: GNNTrainConfig) -> dict[str, Any]:
    """λ calibration of a trained network on the validation split.

    Returns the compact λ grid (:func:`orchestra.training.lambdas.compact_lambdas`), the default
    λ (the largest whose validation quality is within 0.01 of the best), the full sweep, and the
    ratio that turns a predicted cost into a cautious one for budget checks (95th percentile of
    actual/predicted).
    """
    d = bundle.data
    ps, cz = predict_targets(net, validation_graph(bundle, config), bundle.val_idx, d.n_models)
    pc = bundle.norm.usd(cz.astype(np.float64))
    s = d.score[bundle.val_idx].astype(np.float64)
    c = d.cost[bundle.val_idx].astype(np.float64)
    lam = fine_lambda_grid()
    pts = sweep_points(ps.astype(np.float64), pc, s, c, lam, bundle.cost_scale)
    n_val = max(1, len(bundle.val_idx))
    quality = pts[:, 1]
    curve = {"lam": lam.tolist(), "cost_per_query": (pts[:, 0] / n_val).tolist(),
             "quality": quality.tolist()}
    ratio = c / np.maximum(pc, 1e-12)
    ratio = ratio[np.isfinite(ratio)]
    return {
        "default_lam": float(lam[np.flatnonzero(quality >= quality.max() - 0.01).max()]),
        "lambdas": compact_lambdas(curve),
        "cost_high_ratio": max(1.0, float(np.quantile(ratio, 0.95)) if ratio.size else 2.0),
        "sweep": curve,
    }

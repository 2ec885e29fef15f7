"""λ sweeps of a learned router over a table: operating points, AIQ and λ calibration.

:func:`sweep_points` routes every query to its best model per λ and scores the decisions with
the recorded outcomes; :func:`router_aiq` is the area under their (cost, quality) hull.

The selected configuration's out-of-fold predictions give the λ calibration curve stored in the
artifact (:func:`lambda_calibration`: training mean cost per query, share of calls to the most
expensive model and quality per λ), from which ``target_cost=`` / ``target_strong_share=`` pick
λ at load time, the compact λ grid (:func:`compact_lambdas`) and the default λ
(:func:`default_lambda`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from orchestra.policies.learned.chooser import fine_lambda_grid
from orchestra.policies.learned.features import FloatArray

if TYPE_CHECKING:
    from orchestra.training.router_data import RouterData

__all__ = ["compact_lambdas", "cost_scale_of", "default_lambda", "lambda_calibration",
           "router_aiq", "sweep_points"]


def sweep_points(pred_scores: FloatArray, pred_costs: FloatArray, scores: FloatArray,
                 costs: FloatArray, lambdas: Iterable[float], cost_scale: float,
                 *, strong: int | None = None) -> FloatArray:
    """(total cost, mean score, strong share) of routing each query to its best model per λ.

    Args:
        pred_scores, pred_costs: ``(n, m)`` predictions.
        scores, costs: ``(n, m)`` the recorded outcomes (missing score counts 0, cost 0).
        lambdas: λ values.
        cost_scale: as in :func:`~orchestra.policies.learned.chooser.choose_models`.
        strong: the index of the "strong" model for the share column (default: the priciest).

    Returns:
        ``(len(lambdas), 3)`` rows ``(total cost, mean score, share of calls to strong)``.
    """
    lam = np.asarray(list(lambdas), dtype=np.float64)
    s_true = np.nan_to_num(scores, nan=0.0)
    c_true = np.nan_to_num(costs, nan=0.0)
    if strong is None:
        strong = int(np.argmax(c_true.mean(axis=0)))
    util = pred_scores[:, :, None] - lam[None, None, :] * (pred_costs / cost_scale)[:, :, None]
    # Ties go to the cheaper predicted cost: nudge by a tiny cost-proportional amount.
    util -= 1e-9 * (pred_costs / cost_scale)[:, :, None]
    pick = np.argmax(util, axis=1)  # (n, L)
    rows = np.arange(len(scores))[:, None]
    return np.column_stack([c_true[rows, pick].sum(axis=0), s_true[rows, pick].mean(axis=0),
                            (pick == strong).mean(axis=0)])


def router_aiq(pred_scores: FloatArray, pred_costs: FloatArray, scores: FloatArray,
               costs: FloatArray, cost_scale: float, lambdas: Iterable[float] | None = None
               ) -> float:
    """AIQ of a λ sweep (:func:`orchestra.eval.metrics.aiq`), cost normalised by the total cost
    of the most expensive single model on these queries."""
    from orchestra.eval.metrics import aiq

    pts = sweep_points(pred_scores, pred_costs, scores, costs,
                       fine_lambda_grid() if lambdas is None else lambdas, cost_scale)
    max_cost = float(np.nan_to_num(costs, nan=0.0).sum(axis=0).max())
    if max_cost <= 0:
        return float(pts[:, 1].max())
    return aiq(pts[:, :2], max_cost)


def cost_scale_of(costs: NDArray[np.floating[Any]]) -> float:
    """Mean cost per query of the most expensive model: the λ normalisation (λ = 1 prices one
    point of score at one average call of the priciest model; see
    :func:`~orchestra.policies.learned.chooser.choose_models`).

    Unrecorded (NaN) and infinite costs are left out of the means; 1.0 when no model has a
    positive mean. Each mean is rounded to the precision of ``costs`` (the GNN's float32
    matrices give a float32 mean, the other routers' float64 a float64 one).
    """
    c = np.asarray(costs)
    seen = np.isfinite(c)
    means = (np.where(seen, c, 0).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)).astype(c.dtype)
    scale = float(means.max()) if means.size else 0.0
    return scale if scale > 0 else 1.0


def lambda_calibration(oof_scores: FloatArray, oof_costs: FloatArray, data: RouterData,
                       cost_scale: float) -> dict[str, list[float]]:
    """Per λ of the fine grid: training mean cost per query, quality and share of calls to the
    most expensive model, from out-of-fold predictions and the actual training outcomes."""
    lam = fine_lambda_grid()
    pts = sweep_points(oof_scores, oof_costs, data.scores, data.costs, lam, cost_scale)
    return {"lam": lam.tolist(), "cost_per_query": (pts[:, 0] / data.n).tolist(),
            "quality": pts[:, 1].tolist(), "strong_share": pts[:, 2].tolist()}


def compact_lambdas(cal: Mapping[str, Sequence[float]], n: int = 20) -> list[float]:
    """Up to ``n`` λ of the fine grid at distinct operating points of the training (OOF) sweep.

    First every λ whose (cost, quality) point is a vertex of the training hull (those are what
    AIQ integrates), then λ spread evenly in log cost, then λ = 0 and the largest λ.
    """
    from orchestra.eval.metrics import pareto_hull

    lam = np.asarray(cal["lam"])
    cost = np.asarray(cal["cost_per_query"])
    quality = np.asarray(cal["quality"])
    # Drop λ giving the same cost as a smaller λ (the same decisions on the training queries).
    keep = [0]
    for i in range(1, len(lam)):
        if not math.isclose(cost[i], cost[keep[-1]], rel_tol=1e-9, abs_tol=1e-15):
            keep.append(i)
    lam, cost, quality = lam[keep], cost[keep], quality[keep]
    if len(lam) <= n:
        return [float(v) for v in lam]
    pick = {0, len(lam) - 1}
    hull = pareto_hull(np.column_stack([cost, quality]))
    on_hull = [i for i in range(len(lam))
               if any(np.isclose(cost[i], hc) and np.isclose(quality[i], hq) for hc, hq in hull)]
    # Hull vertices first (evenly thinned if there are too many), then even spread in log cost.
    if len(on_hull) > n - 2:
        on_hull = [on_hull[int(j)] for j in np.linspace(0, len(on_hull) - 1, n - 2).round()]
    pick |= set(on_hull)
    logc = np.log(np.maximum(cost, 1e-300))
    for t in np.linspace(logc.min(), logc.max(), 4 * n):
        if len(pick) >= n:
            break
        pick.add(int(np.argmin(np.abs(logc - t))))
    return [float(lam[i]) for i in sorted(pick)]


def default_lambda(cal: Mapping[str, Sequence[float]], tolerance: float = 0.01) -> float:
    """The largest λ (cheapest) whose training (OOF) quality is within ``tolerance`` of the best."""
    lam = np.asarray(cal["lam"])
    q = np.asarray(cal["quality"])
    ok = np.flatnonzero(q >= q.max() - tolerance)
    return float(lam[ok.max()])

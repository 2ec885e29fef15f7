"""How every learned router chooses (CARROT's rule), and the λ grid it is swept over.

For one query, with every model's predicted score and cost::

    utility(m) = predicted_score(m) - lam * predicted_cost(m) / cost_scale

maximised over the models whose (high) predicted cost fits the budget left; ``k > 1`` returns
the top-k for fan-out (:func:`choose_models`).

``cost_scale`` is the mean training cost per query of the most expensive model (the largest
per-model mean). ``lam = 1`` therefore prices one full point of score at one average call of the
priciest model, whatever the currency scale of the dataset, so λ grids compare across datasets.
"""

from __future__ import annotations

import numpy as np

from orchestra.policies.learned.features import FloatArray

__all__ = ["choose_models", "fine_lambda_grid"]


def fine_lambda_grid() -> FloatArray:
    """λ values for sweeps on arrays: 0 and 60 values log-spaced over [1e-3, 1e4]."""
    return np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 60)])


def choose_models(pred_scores: FloatArray, pred_costs: FloatArray, lam: float,
                  cost_scale: float, *, k: int = 1, budget_usd: float | None = None,
                  high_costs: FloatArray | None = None) -> list[int]:
    """The models one query goes to: top-``k`` by ``score - lam * cost / cost_scale`` that fit.

    Models are taken in order of decreasing utility; a model is skipped when its high cost
    (``high_costs``, else its predicted cost), added to those of the models already chosen,
    would exceed ``budget_usd``. When none fits on its high cost, the models whose *predicted*
    cost fits are tried the same way (the runtime shrinks ``max_tokens`` to what is left).

    Args:
        pred_scores: ``(m,)`` predicted scores.
        pred_costs: ``(m,)`` predicted costs in USD.
        lam: the cost weight λ >= 0.
        cost_scale: the cost normalisation (mean cost of the priciest model).
        k: how many models to return at most.
        budget_usd: USD left, or None for no limit.
        high_costs: ``(m,)`` cautious costs used for the budget check.

    Returns:
        Model indices, best first; empty when nothing fits.
    """
    util = np.asarray(pred_scores) - lam * np.asarray(pred_costs) / cost_scale
    order = np.lexsort((np.asarray(pred_costs), -util))  # best utility, then cheaper
    if budget_usd is None:
        return [int(j) for j in order[:k]]
    for guard in ([high_costs, pred_costs] if high_costs is not None else [pred_costs]):
        chosen: list[int] = []
        spent = 0.0
        for j in order:
            c = float(np.asarray(guard)[j])
            if spent + c <= budget_usd + 1e-15:
                chosen.append(int(j))
                spent += c
                if len(chosen) == k:
                    break
        if chosen:
            return chosen
    return []

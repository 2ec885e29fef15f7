"""Choosing a learned router's hyperparameters by k-fold cross-validation.

Chosen over the **training** queries only (:func:`cross_validate`): every configuration of the
grid gets out-of-fold (OOF) predictions for every training query; the selected configuration
maximises the **OOF AIQ**, the area under the (cost, quality) hull of a λ sweep over the OOF
predictions, with the actual training costs and scores — the metric the router is judged by.
The OOF binary cross-entropy of the score predictions is recorded beside it (and breaks ties): a
lower loss does not always route better, because AIQ rewards ranking the models right on each
query at each price, not calibration on average.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError
from orchestra.policies.learned.cost import CostModel
from orchestra.policies.learned.features import FloatArray, TaskEncoder, scorer_inputs
from orchestra.policies.learned.scorers import (
    ROUTER_KINDS,
    RouterKind,
    knn_vote,
    make_scorer,
    task_mean_scores,
)
from orchestra.policies.learned.torch_scorers import Progress
from orchestra.training.lambdas import cost_scale_of, router_aiq
from orchestra.training.router_data import RouterData

__all__ = ["DEFAULT_GRIDS", "CVResult", "cross_validate"]

#: Hyperparameter grids searched by :func:`cross_validate` (every combination is tried).
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "knn": {
        "k": [10, 20, 40, 80, 160, 320],
        "weighting": ["uniform", "distance"],
        "task_weight": [0.0, 2.0],
        "prior": [0.0, 0.25, 0.5, 1.0],
    },
    "mlp": {
        "hidden": [256],
        "dropout": [0.1, 0.3],
        "weight_decay": [1e-4],
        "lr": [1e-3],
        "ensemble": [1],
    },
    "mf": {
        "dim": [16, 64],
        "weight_decay": [1e-4, 1e-2],
        "lr": [3e-3],
        "ensemble": [1],
    },
}


@dataclass
class _Fold:
    """Precomputed pieces of one CV fold."""

    tr: NDArray[np.intp]
    te: NDArray[np.intp]
    tasks: TaskEncoder
    tr_task: NDArray[np.intp]
    te_task: NDArray[np.intp]
    pred_costs: FloatArray
    sims: FloatArray | None = None
    orders: dict[float, NDArray[np.intp]] = field(default_factory=dict)


def _kfold(n: int, folds: int, seed: int) -> list[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(perm, folds)
    return [(np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i])), np.sort(parts[i]))
            for i in range(folds)]


def _prepare_fold(data: RouterData, tr: NDArray[np.intp], te: NDArray[np.intp]) -> _Fold:
    x = data.embeddings
    tasks = TaskEncoder.fit([data.tasks[i] for i in tr], x[tr])
    tr_task, _ = tasks.indices([data.tasks[i] for i in tr], x[tr])
    te_task, _ = tasks.indices([data.tasks[i] for i in te], x[te])
    cost = CostModel.fit(data.lengths[tr], tasks.onehot(tr_task), data.costs[tr])
    return _Fold(tr, te, tasks, tr_task, te_task, cost.predict(data.lengths[te],
                                                               tasks.onehot(te_task)))


def _bce(pred: FloatArray, scores: FloatArray) -> float:
    p = np.clip(pred, 1e-6, 1 - 1e-6)
    seen = ~np.isnan(scores)
    y = np.where(seen, scores, 0.0)
    ll = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(ll[seen].mean()) if seen.any() else float("nan")


def _fold_predict(kind: str, params: Mapping[str, Any], data: RouterData, fold: _Fold,
                  seed: int) -> FloatArray:
    x = data.embeddings
    if kind == "knn":
        if fold.sims is None:
            fold.sims = (x[fold.te] @ x[fold.tr].T).astype(np.float64)
        tw = float(params.get("task_weight", 0.0))
        if tw not in fold.orders:
            eff = fold.sims + tw * (fold.te_task[:, None] == fold.tr_task[None, :]) \
                if tw else fold.sims
            fold.orders[tw] = np.argsort(-eff, axis=1, kind="stable")
        means = task_mean_scores(data.scores[fold.tr], fold.tr_task, len(fold.tasks.vocab))
        return knn_vote(fold.sims, fold.te_task, fold.tr_task, data.scores[fold.tr], means,
                         int(params["k"]), str(params["weighting"]), tw,
                         float(params.get("prior", 0.0)), order=fold.orders[tw])
    scorer = make_scorer(kind, params, seed)
    feats_tr = scorer_inputs(x[fold.tr], fold.tasks.onehot(fold.tr_task))
    feats_te = scorer_inputs(x[fold.te], fold.tasks.onehot(fold.te_task))
    scorer.fit(feats_tr, data.scores[fold.tr])
    return np.asarray(scorer.predict(feats_te))


@dataclass
class CVResult:
    """What :func:`cross_validate` found.

    Attributes:
        best: the selected hyperparameters.
        table: one entry per configuration: ``params``, ``oof_aiq``, ``oof_bce``.
        oof_scores: ``(n, m)`` out-of-fold score predictions of the selected configuration.
        oof_costs: ``(n, m)`` out-of-fold cost predictions.
        folds: the number of folds.
    """

    best: dict[str, Any]
    table: list[dict[str, Any]]
    oof_scores: FloatArray
    oof_costs: FloatArray
    folds: int
    selected_by: str = "aiq"

    def summary(self) -> dict[str, Any]:
        best = next(r for r in self.table if r["params"] == self.best)
        how = ("oof_aiq (tie-break: oof_bce)" if self.selected_by == "aiq" else
               "oof_bce on the observed cells (logged feedback; tie-break: oof_aiq with "
               "unobserved cells predicted)")
        return {"folds": self.folds, "selected_by": how,
                "best": self.best, "best_oof_aiq": best["oof_aiq"], "best_oof_bce": best["oof_bce"],
                "grid": self.table}


def _grid_configs(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, vals, strict=True)) for vals in product(*(grid[k] for k in keys))]


def cross_validate(kind: RouterKind, data: RouterData, *,
                   grid: Mapping[str, Sequence[Any]] | None = None, folds: int = 5,
                   seed: int = 0, progress: Progress | None = None,
                   select_by: str | None = None) -> CVResult:
    """Choose a router's hyperparameters by k-fold CV over the training queries.

    Every configuration of ``grid`` (every combination of the listed values) is trained on
    ``folds - 1`` folds and predicts the held-out one; the configuration with the highest AIQ
    of the pooled out-of-fold predictions (:func:`~orchestra.training.lambdas.router_aiq`,
    actual training costs and scores) wins, the lower OOF binary cross-entropy breaking ties.
    Settings that cannot matter are dropped from the grid (``task_weight`` with a single task).

    Args:
        kind: ``knn``, ``mlp`` or ``mf``.
        data: the training data (never a test split).
        grid: hyperparameter name → values; default :data:`DEFAULT_GRIDS` ``[kind]``.
        folds: CV folds (>= 2).
        seed: shuffles the folds and seeds the networks.
        progress: callback ``(stage, done, total)``.
        select_by: ``"aiq"`` (the default for a full table) or ``"bce"`` (the default for
            logged feedback, ``data.logged``: the AIQ of a routing choice whose outcome no one
            observed is unknown, while the log-loss on observed cells is measured). With logged
            feedback the reported ``oof_aiq`` fills each unobserved cell with the configuration's
            own out-of-fold prediction (the direct method), for information only.

    Raises:
        UserError: fewer than ``folds`` queries, ``folds < 2``, an empty grid or an unknown
            ``select_by``.
    """
    select = select_by or ("bce" if data.logged else "aiq")
    if select not in ("aiq", "bce"):
        raise UserError(f"select_by must be 'aiq' or 'bce' (got {select_by!r})")
    if kind not in ROUTER_KINDS:
        raise UserError(f"unknown router kind {kind!r}; expected one of {list(ROUTER_KINDS)}")
    if folds < 2 or data.n < folds:
        raise UserError(f"expected 2 <= folds <= number of queries ({data.n}) (got {folds!r})")
    g = dict(DEFAULT_GRIDS[kind] if grid is None else grid)
    if kind == "knn" and len(set(data.tasks)) < 2:
        g["task_weight"] = [0.0]
    configs = _grid_configs(g)
    if not configs:
        raise UserError(f"expected a non-empty hyperparameter grid (got {grid!r})")
    splits = _kfold(data.n, folds, seed)
    prepared = [_prepare_fold(data, tr, te) for tr, te in splits]
    oof_costs = np.zeros_like(data.scores)
    for f in prepared:
        oof_costs[f.te] = f.pred_costs
    cost_scale = cost_scale_of(data.costs)
    rows: list[dict[str, Any]] = []
    preds: list[FloatArray] = []
    total, done = len(configs) * folds, 0
    for params in configs:
        oof = np.zeros_like(data.scores)
        for fi, f in enumerate(prepared):
            oof[f.te] = _fold_predict(kind, params, data, f, seed + fi)
            done += 1
            if progress is not None:
                progress("cross-validation", done, total)
        s_eval, c_eval = ((data.scores, data.costs) if not data.logged
                          else filled_outcomes(data, oof, oof_costs))
        rows.append({"params": params,
                     "oof_aiq": router_aiq(oof, oof_costs, s_eval, c_eval, cost_scale),
                     "oof_bce": _bce(oof, data.scores)})
        preds.append(oof)
    if select == "aiq":
        best_i = max(range(len(rows)), key=lambda i: (round(rows[i]["oof_aiq"], 6),
                                                      -rows[i]["oof_bce"]))
    else:
        best_i = min(range(len(rows)), key=lambda i: (round(rows[i]["oof_bce"], 9),
                                                      -rows[i]["oof_aiq"]))
    return CVResult(best=dict(configs[best_i]), table=rows, oof_scores=preds[best_i],
                    oof_costs=oof_costs, folds=folds, selected_by=select)


def filled_outcomes(data: RouterData, pred_scores: FloatArray, pred_costs: FloatArray
                    ) -> tuple[FloatArray, FloatArray]:
    """Observed scores and costs, with each unobserved cell filled by the prediction (the
    direct method of off-policy evaluation), for sweeps over logged feedback."""
    seen = ~np.isnan(data.scores)
    return (np.where(seen, data.scores, np.clip(pred_scores, 0.0, 1.0)),
            np.where(seen, data.costs, np.maximum(pred_costs, 0.0)))

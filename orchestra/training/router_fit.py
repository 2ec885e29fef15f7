"""Training a learned router (kNN, MLP or MF) on a table's training split.

:func:`train_router` chooses the hyperparameters by cross-validation
(:mod:`orchestra.training.cv`), fits the final scorer, the cost model and the task encoder on
all the training queries, calibrates λ on the out-of-fold predictions
(:mod:`orchestra.training.lambdas`) and returns a
:class:`~orchestra.policies.learned.artifact.TrainedRouter`, which the ``knn`` / ``mlp`` /
``mf`` policies (:mod:`orchestra.policies.learned`) load and serve.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from orchestra.errors import UserError
from orchestra.policies.learned.artifact import TrainedRouter
from orchestra.policies.learned.cost import CostModel
from orchestra.policies.learned.features import TaskEncoder, scorer_inputs
from orchestra.policies.learned.scorers import ROUTER_KINDS, RouterKind, make_scorer
from orchestra.policies.learned.torch_scorers import Progress
from orchestra.training.cv import DEFAULT_GRIDS, cross_validate, filled_outcomes
from orchestra.training.lambdas import (
    compact_lambdas,
    cost_scale_of,
    default_lambda,
    lambda_calibration,
)
from orchestra.training.router_data import RouterData

__all__ = ["train_router"]


def train_router(kind: RouterKind, data: RouterData, *, params: Mapping[str, Any] | None = None,
                 grid: Mapping[str, Sequence[Any]] | None = None, folds: int = 5, seed: int = 0,
                 ensemble: int | None = None, progress: Progress | None = None) -> TrainedRouter:
    """Train a router on ``data`` (the training split).

    With ``params`` the hyperparameters are fixed (CV still runs, on that single configuration,
    to get the out-of-fold predictions the λ calibration needs); otherwise they are chosen by
    :func:`~orchestra.training.cv.cross_validate` over ``grid``. The final scorer is then fit on
    all of ``data``.

    Args:
        kind: ``knn``, ``mlp`` or ``mf``.
        data: training data from :func:`~orchestra.training.router_data.prepare_data`.
        params: fixed hyperparameters (skip the search).
        grid: the search grid (default :data:`~orchestra.training.cv.DEFAULT_GRIDS`).
        folds: CV folds.
        seed: seeds folds and networks.
        ensemble: MLP / MF only: members of the final fit, overriding the selected
            configuration's (CV compares single members, which is 3x cheaper; averaging members
            of the final fit only lowers its variance).
        progress: callback ``(stage, done, total)``.
    """
    if kind not in ROUTER_KINDS:
        raise UserError(f"unknown router kind {kind!r}; expected one of {list(ROUTER_KINDS)}")
    if ensemble is not None and int(ensemble) < 1:
        raise UserError(f"ensemble must be >= 1 (got {ensemble!r})")
    t0 = time.time()
    search = {k: [v] for k, v in params.items()} if params is not None else grid
    if params is not None and kind in DEFAULT_GRIDS:
        # Fill unspecified hyperparameters with the first value of the default grid.
        search = {k: v[:1] for k, v in DEFAULT_GRIDS[kind].items()} | dict(search or {})
    cv = cross_validate(kind, data, grid=search, folds=folds, seed=seed, progress=progress)
    x = data.embeddings
    tasks = TaskEncoder.fit(data.tasks, x)
    tidx, _ = tasks.indices(data.tasks, x)
    onehot = tasks.onehot(tidx)
    cost = CostModel.fit(data.lengths, onehot, data.costs)
    final = dict(cv.best)
    if ensemble is not None and kind != "knn":
        final["ensemble"] = int(ensemble)
    scorer = make_scorer(kind, final, seed)
    if kind == "knn":
        scorer.fit(x, tidx, len(tasks.vocab), data.scores)
    else:
        scorer.fit(scorer_inputs(x, onehot), data.scores,
                   progress=(lambda s, d, t: progress(f"final fit, {s}", d, t))
                   if progress else None)
    cost_scale = cost_scale_of(data.costs)
    cal_data = data
    if data.logged:
        # Logged feedback: a λ's choice may be a model no one observed on that query; its
        # out-of-fold prediction stands in for the outcome (the direct method).
        filled_s, filled_c = filled_outcomes(data, cv.oof_scores, cv.oof_costs)
        cal_data = dataclasses.replace(data, scores=filled_s, costs=filled_c)
    cal = lambda_calibration(cv.oof_scores, cv.oof_costs, cal_data, cost_scale)
    config = {
        "data": data.source, "n_train": data.n, "seed": seed,
        "feedback": "logged" if data.logged else "full",
        "observed_cells": int((~np.isnan(data.scores)).sum()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "train_seconds": round(time.time() - t0, 1),
        "cv": cv.summary(), "calibration": cal, "lambdas": compact_lambdas(cal),
        "default_lam": default_lambda(cal), "strong_model": data.models[int(np.argmax(cost.mean))],
        "cost_normalisation": "cost / mean training cost per query of the most expensive model",
    }
    return TrainedRouter(kind=kind, scorer=scorer, cost=cost, tasks=tasks, models=data.models,
                         cost_scale=cost_scale, embedder=data.embedder,
                         embedder_key=data.embedder_key,
                         embedder_dim=int(x.shape[1]) // len(data.views), config=config,
                         views=data.views, tail_chars=data.tail_chars)

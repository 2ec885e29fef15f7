"""Score models of the learned routers: every model's expected score for a query.

* :class:`KNNScorer` — cosine similarity over embeddings (plus ``task_weight`` when the two
  queries share a task, which with ``task_weight >= 2`` restricts the neighbours to the same
  task); the ``k`` most similar training queries vote with uniform, inverse-distance or softmax
  weights; the vote is blended with the per-task mean score (``prior`` in [0, 1]).
* :class:`~orchestra.policies.learned.torch_scorers.MLPScorer` and
  :class:`~orchestra.policies.learned.torch_scorers.MFScorer` — torch networks over
  ``[embedding, task one-hot]`` (see :mod:`orchestra.policies.learned.torch_scorers`).

:func:`make_scorer` builds one by kind (``knn``, ``mlp`` or ``mf``) from its hyperparameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError
from orchestra.policies.learned.features import FloatArray, col_means
from orchestra.policies.learned.torch_scorers import MFScorer, MLPScorer

__all__ = ["ROUTER_KINDS", "KNNScorer", "MFScorer", "MLPScorer", "RouterKind", "knn_vote",
           "make_scorer", "task_mean_scores"]

RouterKind = Literal["knn", "mlp", "mf"]
ROUTER_KINDS: tuple[RouterKind, ...] = ("knn", "mlp", "mf")


class KNNScorer:
    """k nearest training queries by cosine similarity vote each model's score.

    ``sim(q, i) = cos(e_q, e_i) + task_weight * [task_q == task_i]``; the ``k`` most similar
    training queries vote with weights ``1`` (``uniform``), ``1 / (1 - cos + 0.01)``
    (``distance``) or ``exp(cos / 0.05)`` (``softmax``); missing scores are skipped. The vote is
    blended with the per-task mean score: ``(1 - prior) * vote + prior * task_mean``.

    Args:
        k: neighbours.
        weighting: ``uniform``, ``distance`` or ``softmax``.
        task_weight: similarity bonus for a shared task (``>= 2`` keeps neighbours within the
            task whenever it has ``k`` training queries).
        prior: weight of the per-task mean score, in [0, 1].
    """

    kind = "knn"

    def __init__(self, k: int = 20, weighting: str = "distance", task_weight: float = 0.0,
                 prior: float = 0.0, **_: Any) -> None:
        if int(k) < 1:
            raise UserError(f"knn k must be >= 1 (got {k!r})")
        if weighting not in ("uniform", "distance", "softmax"):
            raise UserError(
                f"knn weighting must be 'uniform', 'distance' or 'softmax' (got {weighting!r})"
            )
        if not 0.0 <= float(prior) <= 1.0:
            raise UserError(f"knn prior must be in [0, 1] (got {prior!r})")
        self.k, self.weighting = int(k), weighting
        self.task_weight, self.prior = float(task_weight), float(prior)
        self.x = np.zeros((0, 0), dtype=np.float32)
        self.task_idx = np.zeros(0, dtype=np.intp)
        self.scores = np.zeros((0, 0))
        self.task_means = np.zeros((0, 0))

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "weighting": self.weighting, "task_weight": self.task_weight,
                "prior": self.prior}

    def fit(self, x: NDArray[np.float32], task_idx: NDArray[np.intp], n_tasks: int,
            scores: FloatArray, **_: Any) -> KNNScorer:
        self.x = np.asarray(x, dtype=np.float32)
        self.task_idx = np.asarray(task_idx, dtype=np.intp)
        self.scores = np.asarray(scores, dtype=np.float64)
        self.task_means = task_mean_scores(self.scores, self.task_idx, n_tasks)
        return self

    def similarities(self, x: NDArray[np.float32], task_idx: NDArray[np.intp]) -> FloatArray:
        sims = (np.asarray(x, dtype=np.float32) @ self.x.T).astype(np.float64)
        return sims

    def predict(self, x: NDArray[np.float32], task_idx: NDArray[np.intp]) -> FloatArray:
        sims = self.similarities(x, task_idx)
        return knn_vote(sims, task_idx, self.task_idx, self.scores, self.task_means,
                         self.k, self.weighting, self.task_weight, self.prior)

    def state(self) -> dict[str, NDArray[Any]]:
        return {"x": self.x, "task_idx": self.task_idx, "scores": self.scores,
                "task_means": self.task_means}

    def load_state(self, st: Mapping[str, NDArray[Any]]) -> KNNScorer:
        self.x = np.asarray(st["x"], dtype=np.float32)
        self.task_idx = np.asarray(st["task_idx"], dtype=np.intp)
        self.scores = np.asarray(st["scores"], dtype=np.float64)
        self.task_means = np.asarray(st["task_means"], dtype=np.float64)
        return self


def task_mean_scores(scores: FloatArray, task_idx: NDArray[np.intp], n_tasks: int) -> FloatArray:
    """Per-task mean score of each model, shrunk towards the global mean (10 pseudo-queries)."""
    glob = col_means(scores)
    out = np.tile(glob, (max(n_tasks, 1), 1))
    seen = ~np.isnan(scores)
    filled = np.where(seen, scores, 0.0)
    for t in range(n_tasks):
        rows = task_idx == t
        cnt = seen[rows].sum(axis=0)
        out[t] = (filled[rows].sum(axis=0) + 10.0 * glob) / (cnt + 10.0)
    return out


def knn_vote(sims: FloatArray, q_task: NDArray[np.intp], tr_task: NDArray[np.intp],
              scores: FloatArray, task_means: FloatArray, k: int, weighting: str,
              task_weight: float, prior: float, *, order: NDArray[np.intp] | None = None
              ) -> FloatArray:
    """The kNN prediction for each query row of ``sims`` (``(nq, ntrain)`` cosines)."""
    eff = sims + task_weight * (q_task[:, None] == tr_task[None, :]) if task_weight else sims
    k = min(k, sims.shape[1])
    if order is None:
        part = np.argpartition(-eff, k - 1, axis=1)[:, :k]
    else:
        part = order[:, :k]
    rows = np.arange(sims.shape[0])[:, None]
    cos = sims[rows, part]
    if weighting == "uniform":
        w = np.ones_like(cos)
    elif weighting == "distance":
        w = 1.0 / (1.0 - cos + 0.01)
    else:
        w = np.exp((cos - cos.max(axis=1, keepdims=True)) / 0.05)
    s = scores[part]  # (nq, k, m)
    seen = ~np.isnan(s)
    ww = w[:, :, None] * seen
    num = (ww * np.where(seen, s, 0.0)).sum(axis=1)
    den = ww.sum(axis=1)
    base = task_means[np.clip(q_task, 0, len(task_means) - 1)]
    vote = np.divide(num, den, out=base.copy(), where=den > 0)
    return (1.0 - prior) * vote + prior * base


def make_scorer(kind: str, params: Mapping[str, Any], seed: int = 0) -> Any:
    """An unfitted scorer of ``kind`` (``knn``, ``mlp`` or ``mf``) with hyperparameters
    ``params``."""
    if kind == "knn":
        return KNNScorer(**params)
    if kind == "mlp":
        return MLPScorer(**params, seed=seed)
    if kind == "mf":
        return MFScorer(**params, seed=seed)
    raise UserError(f"unknown router kind {kind!r}; expected one of {list(ROUTER_KINDS)}")

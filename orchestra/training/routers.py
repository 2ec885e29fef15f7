"""Learned routers over query embeddings: kNN, MLP and matrix factorisation (MF).

Every router predicts, for one query, **every model's expected score and expected cost**, and
chooses with one rule (CARROT's)::

    utility(m) = predicted_score(m) - lam * predicted_cost(m) / cost_scale

maximised over the models whose (high) predicted cost fits the budget left; ``k > 1`` returns
the top-k for fan-out.

Features
========
* the query's sentence embedding (:mod:`orchestra.embed`; MiniLM by default) in two *views*
  (:func:`embed_queries`): the text as the embedder reads it (MiniLM: its first 256 word
  pieces) and its last 800 characters, concatenated. Few-shot prompts (RouterBench's ARC and
  Winogrande) open with the same examples, so the first view alone is the same for every
  query of a task; the tail is where the question is;
* the query's **task** as a one-hot vector when the training table has more than one task
  (RouterBench ``eval_name``, LLMRouter ``task_name``). At inference the task comes from the
  run's metadata (``view.meta["task"]``); when it is absent or was not seen in training it is
  *inferred* as the training task whose mean embedding (centroid) is the most similar, so a
  router never sees an input it was not trained on;
* the query's length in characters (only for the cost model).

Score models (one per router kind)
==================================
* :class:`KNNScorer` — cosine similarity over embeddings (plus ``task_weight`` when the two
  queries share a task, which with ``task_weight >= 2`` restricts the neighbours to the same
  task); the ``k`` most similar training queries vote with uniform, inverse-distance or softmax
  weights; the vote is blended with the per-task mean score (``prior`` in [0, 1]).
* :class:`MLPScorer` — a one-hidden-layer MLP, input ``[embedding, task one-hot]``, one sigmoid
  output per model, trained with binary cross-entropy on every recorded (query, model) score
  (fractional scores are soft targets; missing ones are masked), AdamW, early stopping on an
  inner validation fold (10 % of the training queries), ``ensemble`` independently seeded
  members averaged.
* :class:`MFScorer` — RouteLLM's matrix factorisation generalised to N models: the features are
  projected to ``dim`` dimensions, ``q = W x``, and the logit of model ``m`` is the bilinear score
  ``<q, v_m> + b_m`` with a learned model embedding ``v_m`` and a per-model bias ``b_m``; same loss,
  optimiser and early stopping as the MLP.

Cost model
==========
The cost a model will charge for a query is predicted from the training outcomes only
(:class:`CostModel`): per model, a ridge regression of ``log(cost)`` on ``[1, log(1 + chars),
task one-hot]``, turned into the expected cost with the log-normal mean
``exp(mu + sigma^2 / 2)``. Long prompts and verbose tasks are thus predicted to cost more, the
way recorded costs behave. Its **high** prediction (the 95th percentile of actual / predicted on
the training queries, times the prediction) is what must fit the budget left.

Cost normalisation
==================
``cost_scale`` is the mean training cost per query of the most expensive model (the largest
per-model mean). ``lam = 1`` therefore prices one full point of score at one average call of the
priciest model, whatever the currency scale of the dataset, so λ grids compare across datasets.

Hyperparameters
===============
Chosen by k-fold cross-validation over the **training** queries only (:func:`cross_validate`):
every configuration of the grid gets out-of-fold (OOF) predictions for every training query;
the selected configuration maximises the **OOF AIQ**, the area under the (cost, quality) hull of
a λ sweep over the OOF predictions, with the actual training costs and scores — the metric the
router is judged by. The OOF binary cross-entropy of the score predictions is recorded beside it
(and breaks ties): a lower loss does not always route better, because AIQ rewards ranking the
models right on each query at each price, not calibration on average.

The selected configuration's OOF predictions also give the λ calibration curve stored in the
artifact (training mean cost per query, share of calls to the most expensive model and quality
per λ), from which ``target_cost=`` / ``target_strong_share=`` pick λ at load time, and the
compact λ grid :meth:`TrainedRouter.default_lambdas` returns.

Artifacts
=========
A directory: ``config.json`` (kind, format version, models, embedder, task vocabulary and
centroids, cost model, ``cost_scale``, hyperparameters, CV results, calibration curve, training
data name and seed) and ``weights.npz`` (kNN: training embeddings, task ids and scores) or
``weights.pt`` (MLP / MF: ``torch.save`` of the state dicts). The default location is
``<data home>/artifacts/<data>-<kind>`` (:func:`default_artifact_dir`; ``$ORCHESTRA_HOME`` or the
user data dir).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError

if TYPE_CHECKING:
    from orchestra.embed import Embedder
    from orchestra.outcomes.table import OutcomeTable

__all__ = [
    "ARTIFACT_VERSION",
    "DEFAULT_GRIDS",
    "ROUTER_KINDS",
    "VIEWS",
    "CVResult",
    "CostModel",
    "KNNScorer",
    "MFScorer",
    "MLPScorer",
    "RouterData",
    "RouterKind",
    "TaskEncoder",
    "TrainedRouter",
    "artifacts_home",
    "choose_models",
    "cross_validate",
    "default_artifact_dir",
    "embed_queries",
    "fine_lambda_grid",
    "load_router",
    "prepare_data",
    "resolve_artifact",
    "router_aiq",
    "sweep_points",
    "tail_text",
    "train_command",
    "train_router",
]

RouterKind = Literal["knn", "mlp", "mf"]
ROUTER_KINDS: tuple[RouterKind, ...] = ("knn", "mlp", "mf")
#: Version of the artifact layout written by :meth:`TrainedRouter.save`.
ARTIFACT_VERSION = 1

FloatArray = NDArray[np.float64]
#: Predictions a :class:`TrainedRouter` keeps in memory (per query and task).
MEMO_SIZE = 100_000
Progress = Callable[[str, int, int], None]
"""A progress callback: ``(stage, done, total)``."""

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


def fine_lambda_grid() -> FloatArray:
    """λ values for sweeps on arrays: 0 and 60 values log-spaced over [1e-3, 1e4]."""
    return np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 60)])


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class RouterData:
    """Everything a router trains on, as arrays over the same query order.

    Attributes:
        embeddings: ``(n, d)`` float32 unit rows.
        tasks: the task name of each query.
        lengths: ``(n,)`` characters of each query text.
        scores: ``(n, m)`` recorded scores in [0, 1]; NaN where not recorded.
        costs: ``(n, m)`` recorded costs in USD; NaN where not recorded.
        models: the ``m`` model names (column order).
        embedder: the embedder's name (identifies model and settings).
        embedder_key: ``"minilm"`` / ``"hashing"`` when it came from :func:`get_embedder`.
        source: where the data came from (a table name or path), for the artifact's record.
    """

    embeddings: NDArray[np.float32]
    tasks: list[str]
    lengths: FloatArray
    scores: FloatArray
    costs: FloatArray
    models: list[str]
    embedder: str
    embedder_key: str | None = None
    source: str = ""
    views: tuple[str, ...] = ("full", "tail")
    tail_chars: int = 800

    @property
    def n(self) -> int:
        return int(self.scores.shape[0])

    def subset(self, idx: NDArray[np.intp]) -> RouterData:
        return RouterData(
            embeddings=self.embeddings[idx], tasks=[self.tasks[i] for i in idx.tolist()],
            lengths=self.lengths[idx], scores=self.scores[idx], costs=self.costs[idx],
            models=self.models, embedder=self.embedder, embedder_key=self.embedder_key,
            source=self.source, views=self.views, tail_chars=self.tail_chars,
        )


def _embedder_key(embedder: Embedder) -> str | None:
    from orchestra.embed import CachedEmbedder, HashingEmbedder, MiniLMEmbedder

    inner = embedder.inner if isinstance(embedder, CachedEmbedder) else embedder
    if isinstance(inner, MiniLMEmbedder):
        return "minilm"
    if isinstance(inner, HashingEmbedder) and inner.name == HashingEmbedder().name:
        return "hashing"
    return None


VIEWS = ("full", "tail")


def tail_text(text: str, chars: int = 800) -> str:
    """The last ``chars`` characters of ``text``, starting at a line or word boundary.

    Returns ``text`` itself when it is not longer than ``chars``.
    """
    if len(text) <= chars:
        return text
    s = text[-chars:]
    i = s.find("\n")
    if 0 <= i < chars // 4:
        return s[i + 1:]
    j = s.find(" ")
    return s[j + 1:] if 0 <= j < 40 else s


def embed_queries(embedder: Embedder, texts: Sequence[str], *,
                  views: Sequence[str] = VIEWS, tail_chars: int = 800) -> NDArray[np.float32]:
    """Embed queries as the concatenation of one unit vector per *view*, scaled to unit norm.

    Views: ``full`` embeds the text as the embedder sees it (MiniLM reads only its first 256
    word pieces), ``tail`` its last ``tail_chars`` characters (:func:`tail_text`). Prompts put
    the actual question last (few-shot prompts repeat the same examples first), so for long
    prompts the tail is what tells queries apart; for a text no longer than ``tail_chars`` the
    tail *is* the text and its vector is reused. The cosine of two such vectors is the mean of
    the per-view cosines.

    Shapes:
        ``(len(texts), embedder.dim * len(views))``.
    """
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise UserError(f"expected views among {list(VIEWS)} (got {list(views)!r})")
    texts = list(texts)
    blocks: list[NDArray[np.float32]] = []
    full = _unit(np.asarray(embedder.embed(texts), dtype=np.float32))
    for v in views:
        if v == "full":
            blocks.append(full)
        else:
            tails = full.copy()
            long = [i for i, t in enumerate(texts) if len(t) > tail_chars]
            if long:
                tails[long] = _unit(np.asarray(
                    embedder.embed([tail_text(texts[i], tail_chars) for i in long]),
                    dtype=np.float32))
            blocks.append(tails)
    out = np.concatenate(blocks, axis=1) / np.sqrt(len(views))
    return out.astype(np.float32)


def prepare_data(table: OutcomeTable, embedder: Embedder, *, source: str = "",
                 views: Sequence[str] = VIEWS, tail_chars: int = 800) -> RouterData:
    """Embed a table's queries (:func:`embed_queries`) and collect its score and cost matrices.

    Args:
        table: the (training) outcome table.
        embedder: turns query texts into vectors (a cached one avoids recomputing).
        source: a name for the artifact's record (e.g. ``"routerbench:train"``).
        views: which views of each query to embed (see :func:`embed_queries`).
        tail_chars: characters of the ``tail`` view.

    Raises:
        UserError: the table has no queries or no models.
    """
    if table.n_queries == 0 or table.n_models == 0:
        raise UserError(
            f"expected a table with queries and models to train on (got {table.n_queries} "
            f"queries x {table.n_models} models)"
        )
    texts = table.query_texts
    x = embed_queries(embedder, texts, views=views, tail_chars=tail_chars)
    return RouterData(
        embeddings=x, tasks=list(table.query_tasks),
        lengths=np.array([len(t) for t in texts], dtype=np.float64),
        scores=np.asarray(table.score_matrix(), dtype=np.float64),
        costs=np.asarray(table.cost_matrix(), dtype=np.float64),
        models=list(table.models), embedder=embedder.name, embedder_key=_embedder_key(embedder),
        source=source, views=tuple(views), tail_chars=int(tail_chars),
    )


def _unit(x: NDArray[Any]) -> NDArray[np.float32]:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


# --------------------------------------------------------------------------------------------
# Tasks


class TaskEncoder:
    """Task names → indices / one-hot rows, with nearest-centroid inference for unknown tasks.

    With a single training task the one-hot is empty (there is nothing to tell apart).

    Args:
        vocab: the training tasks, in index order.
        centroids: ``(len(vocab), d)`` unit mean embedding of each task's training queries.
    """

    def __init__(self, vocab: Sequence[str], centroids: NDArray[np.float32]) -> None:
        self.vocab = list(vocab)
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.centroids = np.asarray(centroids, dtype=np.float32)

    @classmethod
    def fit(cls, tasks: Sequence[str], embeddings: NDArray[np.float32]) -> TaskEncoder:
        vocab = sorted(set(tasks))
        idx = np.array([vocab.index(t) for t in tasks]) if vocab else np.zeros(0, dtype=int)
        cent = np.stack([embeddings[idx == i].mean(axis=0) for i in range(len(vocab))])
        return cls(vocab, _unit(cent))

    @property
    def width(self) -> int:
        """Columns of the one-hot block (0 with a single task)."""
        return len(self.vocab) if len(self.vocab) > 1 else 0

    def indices(self, tasks: Sequence[str | None], embeddings: NDArray[np.float32]
                ) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """Task index of each query and whether it was inferred (unknown or missing task)."""
        idx = np.array([self.index.get(t, -1) if t is not None else -1 for t in tasks],
                       dtype=np.intp)
        inferred = idx < 0
        if inferred.any():
            sims = embeddings[inferred] @ self.centroids.T
            idx[inferred] = np.argmax(sims, axis=1)
        return idx, inferred

    def onehot(self, idx: NDArray[np.intp]) -> NDArray[np.float32]:
        out = np.zeros((len(idx), self.width), dtype=np.float32)
        if self.width:
            out[np.arange(len(idx)), idx] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "centroids": self.centroids.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskEncoder:
        return cls(d["vocab"], np.asarray(d["centroids"], dtype=np.float32))


# --------------------------------------------------------------------------------------------
# Cost model


class CostModel:
    """Per-model expected cost from query length and task (training outcomes only).

    For each model ``m``, a ridge regression (penalty ``ridge`` on every coefficient but the
    intercept) of ``log(cost)`` on ``z = [1, log(1 + chars), task one-hot]`` over the training
    queries with a recorded positive cost; the prediction is the log-normal mean
    ``p0 * exp(z . w + s^2 / 2)`` where ``s^2`` is the residual variance and ``p0`` the share of
    positive costs. A model whose recorded costs are all zero is predicted to cost zero.
    :meth:`high` multiplies by the 95th percentile of actual / predicted on the training queries.

    Shapes:
        predict(lengths ``(n,)``, task one-hot ``(n, t)``) -> ``(n, m)``.
    """

    def __init__(self, coef: FloatArray, var: FloatArray, positive: FloatArray,
                 high_ratio: FloatArray, mean: FloatArray) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)  # (m, 2 + t)
        self.var = np.asarray(var, dtype=np.float64)  # (m,)
        self.positive = np.asarray(positive, dtype=np.float64)  # (m,)
        self.high_ratio = np.asarray(high_ratio, dtype=np.float64)  # (m,)
        self.mean = np.asarray(mean, dtype=np.float64)  # (m,) training mean cost

    @staticmethod
    def _design(lengths: FloatArray, onehot: NDArray[np.float32]) -> FloatArray:
        n = len(lengths)
        return np.column_stack([np.ones(n), np.log1p(np.asarray(lengths, dtype=np.float64)),
                                np.asarray(onehot, dtype=np.float64).reshape(n, -1)])

    @classmethod
    def fit(cls, lengths: FloatArray, onehot: NDArray[np.float32], costs: FloatArray,
            *, ridge: float = 1.0) -> CostModel:
        z = cls._design(lengths, onehot)
        m = costs.shape[1]
        coef = np.zeros((m, z.shape[1]))
        var = np.zeros(m)
        positive = np.zeros(m)
        mean = _col_means(costs)
        pen = np.eye(z.shape[1]) * ridge
        pen[0, 0] = 0.0
        for j in range(m):
            c = costs[:, j]
            seen = ~np.isnan(c)
            pos = seen & (c > 0)
            positive[j] = pos.sum() / max(1, seen.sum())
            if pos.sum() == 0:
                coef[j, 0] = -np.inf
                continue
            zj, y = z[pos], np.log(c[pos])
            coef[j] = np.linalg.solve(zj.T @ zj + pen, zj.T @ y)
            resid = y - zj @ coef[j]
            var[j] = float(np.mean(resid**2))
        model = cls(coef, var, positive, np.ones(m), mean)
        pred = model.predict(lengths, onehot)
        ratio = np.where((pred > 0) & ~np.isnan(costs), costs / np.where(pred > 0, pred, 1), np.nan)
        high = np.array([np.nanquantile(ratio[:, j], 0.95) if np.isfinite(ratio[:, j]).any()
                         else 1.0 for j in range(m)])
        model.high_ratio = np.maximum(high, 1.0)
        return model

    def predict(self, lengths: FloatArray, onehot: NDArray[np.float32]) -> FloatArray:
        z = self._design(lengths, onehot)
        with np.errstate(over="ignore", invalid="ignore"):
            mu = z @ self.coef.T + self.var[None, :] / 2.0
            out = np.exp(mu) * self.positive[None, :]
        return np.nan_to_num(out, nan=0.0, posinf=np.finfo(np.float64).max)

    def high(self, lengths: FloatArray, onehot: NDArray[np.float32]) -> FloatArray:
        return self.predict(lengths, onehot) * self.high_ratio[None, :]

    def to_dict(self) -> dict[str, Any]:
        coef = np.where(np.isinf(self.coef), -1e300, self.coef)
        return {"coef": coef.tolist(), "var": self.var.tolist(), "positive": self.positive.tolist(),
                "high_ratio": self.high_ratio.tolist(), "mean": self.mean.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CostModel:
        return cls(np.asarray(d["coef"]), np.asarray(d["var"]), np.asarray(d["positive"]),
                   np.asarray(d["high_ratio"]), np.asarray(d["mean"]))


# --------------------------------------------------------------------------------------------
# Score models


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
        self.task_means = _task_means(self.scores, self.task_idx, n_tasks)
        return self

    def similarities(self, x: NDArray[np.float32], task_idx: NDArray[np.intp]) -> FloatArray:
        sims = (np.asarray(x, dtype=np.float32) @ self.x.T).astype(np.float64)
        return sims

    def predict(self, x: NDArray[np.float32], task_idx: NDArray[np.intp]) -> FloatArray:
        sims = self.similarities(x, task_idx)
        return _knn_vote(sims, task_idx, self.task_idx, self.scores, self.task_means,
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


def _task_means(scores: FloatArray, task_idx: NDArray[np.intp], n_tasks: int) -> FloatArray:
    """Per-task mean score of each model, shrunk towards the global mean (10 pseudo-queries)."""
    glob = _col_means(scores)
    out = np.tile(glob, (max(n_tasks, 1), 1))
    seen = ~np.isnan(scores)
    filled = np.where(seen, scores, 0.0)
    for t in range(n_tasks):
        rows = task_idx == t
        cnt = seen[rows].sum(axis=0)
        out[t] = (filled[rows].sum(axis=0) + 10.0 * glob) / (cnt + 10.0)
    return out


def _knn_vote(sims: FloatArray, q_task: NDArray[np.intp], tr_task: NDArray[np.intp],
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


class _TorchScorer:
    """Shared training loop of the MLP and MF scorers (torch, CPU)."""

    kind = "torch"

    def __init__(self, *, weight_decay: float = 1e-4, lr: float = 1e-3, ensemble: int = 1,
                 max_epochs: int = 300, patience: int = 20, batch_size: int = 128,
                 val_fraction: float = 0.1, seed: int = 0) -> None:
        self.weight_decay, self.lr = float(weight_decay), float(lr)
        self.ensemble = int(ensemble)
        if self.ensemble < 1:
            raise UserError(f"ensemble must be >= 1 (got {ensemble!r})")
        self.max_epochs, self.patience = int(max_epochs), int(patience)
        self.batch_size, self.val_fraction, self.seed = int(batch_size), float(val_fraction), seed
        self.in_dim = 0
        self.n_models = 0
        self.members: list[Any] = []
        self.epochs: list[int] = []

    def _build(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _common_params(self) -> dict[str, Any]:
        return {"weight_decay": self.weight_decay, "lr": self.lr, "ensemble": self.ensemble,
                "max_epochs": self.max_epochs, "patience": self.patience,
                "batch_size": self.batch_size}

    def fit(self, x: NDArray[np.float32], scores: FloatArray,
            progress: Progress | None = None, **_: Any) -> _TorchScorer:
        import torch

        self.in_dim, self.n_models = int(x.shape[1]), int(scores.shape[1])
        self.members, self.epochs = [], []
        n = len(x)
        for e in range(self.ensemble):
            rng = np.random.default_rng([self.seed, e])
            perm = rng.permutation(n)
            n_val = max(1, round(n * self.val_fraction)) if n >= 10 else 0
            val, tr = perm[:n_val], perm[n_val:]
            torch.manual_seed(int(rng.integers(2**31)))
            net = self._build()
            with _one_thread():
                epochs = _train_net(net, x, scores, tr, val, lr=self.lr, wd=self.weight_decay,
                                    max_epochs=self.max_epochs, patience=self.patience,
                                    batch_size=self.batch_size, rng=rng,
                                    progress=_member_progress(progress, e))
            net.eval()
            self.members.append(net)
            self.epochs.append(epochs)
        return self

    def predict(self, x: NDArray[np.float32]) -> FloatArray:
        import torch

        if not self.members:
            raise UserError("this scorer is not trained; call fit() or load an artifact")
        with torch.no_grad(), _one_thread():
            xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
            probs = [torch.sigmoid(net(xt)).numpy().astype(np.float64) for net in self.members]
        return np.mean(probs, axis=0)

    def state(self) -> dict[str, Any]:
        return {"members": [net.state_dict() for net in self.members], "epochs": self.epochs,
                "in_dim": self.in_dim, "n_models": self.n_models}

    def load_state(self, st: Mapping[str, Any]) -> _TorchScorer:
        self.in_dim, self.n_models = int(st["in_dim"]), int(st["n_models"])
        self.members = []
        for sd in st["members"]:
            net = self._build()
            net.load_state_dict(sd)
            net.eval()
            self.members.append(net)
        self.epochs = list(st.get("epochs", []))
        return self


def _member_progress(progress: Progress | None, member: int) -> Callable[[str, int, int], None] | None:
    if progress is None:
        return None
    return lambda stage, done, total: progress(f"member {member + 1}", done, total)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread: these nets are tiny, and on a shared CPU more threads
    only spin (measured 30x slower on a loaded 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_net(net: Any, x: NDArray[np.float32], scores: FloatArray, tr: NDArray[np.intp],
               val: NDArray[np.intp], *, lr: float, wd: float, max_epochs: int, patience: int,
               batch_size: int, rng: np.random.Generator,
               progress: Callable[[str, int, int], None] | None) -> int:
    """Masked-BCE training with AdamW and early stopping on ``val``; returns the best epoch."""
    import torch

    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    mask = torch.as_tensor(~np.isnan(scores))
    yt = torch.as_tensor(np.nan_to_num(scores, nan=0.0).astype(np.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def loss_on(idx: NDArray[np.intp]) -> Any:
        ii = torch.as_tensor(idx)
        m = mask[ii]
        raw = bce(net(xt[ii]), yt[ii], reduction="none")
        return (raw * m).sum() / m.sum().clamp(min=1)

    best, best_epoch, best_state, bad = math.inf, 0, None, 0
    for epoch in range(1, max_epochs + 1):
        net.train()
        order = rng.permutation(tr)
        for start in range(0, len(order), batch_size):
            opt.zero_grad()
            loss = loss_on(order[start:start + batch_size])
            loss.backward()
            opt.step()
        if len(val) == 0:
            best_epoch = epoch
            continue
        net.eval()
        with torch.no_grad():
            v = float(loss_on(val))
        if v < best - 1e-5:
            best, best_epoch, bad = v, epoch, 0
            best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
        if progress is not None:
            progress("epoch", epoch, max_epochs)
    if best_state is not None:
        net.load_state_dict(best_state)
    return best_epoch


class MLPScorer(_TorchScorer):
    """``sigmoid(W2 · dropout(GELU(W1 x + b1)) + b2)``: one output per model.

    Args:
        hidden: hidden units.
        dropout: dropout after the hidden layer (and 0.1 of it on the input).
        weight_decay, lr, ensemble, max_epochs, patience, batch_size, seed: training, see
            :class:`_TorchScorer`.

    Shapes:
        x ``(n, d + t)`` -> scores ``(n, m)``.
    """

    kind = "mlp"

    def __init__(self, hidden: int = 256, dropout: float = 0.1, **kw: Any) -> None:
        super().__init__(**kw)
        self.hidden, self.dropout = int(hidden), float(dropout)

    def params(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "dropout": self.dropout, **self._common_params()}

    def _build(self) -> Any:
        from torch import nn

        return nn.Sequential(
            nn.Dropout(self.dropout / 3), nn.Linear(self.in_dim, self.hidden), nn.GELU(),
            nn.Dropout(self.dropout), nn.Linear(self.hidden, self.n_models),
        )


def _mf_module(in_dim: int, n_models: int, dim: int) -> Any:
    import torch
    from torch import nn

    class BilinearMF(nn.Module):  # type: ignore[misc]
        """``logit[q, m] = <W x_q, v_m> + b_m`` (RouteLLM's MF, N models)."""

        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(in_dim, dim, bias=False)
            self.model_emb = nn.Parameter(torch.randn(n_models, dim) * dim ** -0.5)
            self.bias = nn.Parameter(torch.zeros(n_models))

        def forward(self, x: Any) -> Any:
            return self.proj(x) @ self.model_emb.T + self.bias

    return BilinearMF()


class MFScorer(_TorchScorer):
    """Matrix factorisation: ``sigmoid(<W x, v_m> + b_m)``, RouteLLM's bilinear router for N models.

    Args:
        dim: size of the shared query / model space.
        weight_decay, lr, ensemble, max_epochs, patience, batch_size, seed: training, see
            :class:`_TorchScorer`.

    Shapes:
        x ``(n, d + t)`` -> scores ``(n, m)``; ``W`` ``(dim, d + t)``, ``v`` ``(m, dim)``.
    """

    kind = "mf"

    def __init__(self, dim: int = 64, **kw: Any) -> None:
        super().__init__(**kw)
        self.dim = int(dim)

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim, **self._common_params()}

    def _build(self) -> Any:
        return _mf_module(self.in_dim, self.n_models, self.dim)


def _make_scorer(kind: str, params: Mapping[str, Any], seed: int = 0) -> Any:
    if kind == "knn":
        return KNNScorer(**params)
    if kind == "mlp":
        return MLPScorer(**params, seed=seed)
    if kind == "mf":
        return MFScorer(**params, seed=seed)
    raise UserError(f"unknown router kind {kind!r}; expected one of {list(ROUTER_KINDS)}")


# --------------------------------------------------------------------------------------------
# Choosing and sweeping


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


def sweep_points(pred_scores: FloatArray, pred_costs: FloatArray, scores: FloatArray,
                 costs: FloatArray, lambdas: Iterable[float], cost_scale: float,
                 *, strong: int | None = None) -> FloatArray:
    """(total cost, mean score, strong share) of routing each query to its best model per λ.

    Args:
        pred_scores, pred_costs: ``(n, m)`` predictions.
        scores, costs: ``(n, m)`` the recorded outcomes (missing score counts 0, cost 0).
        lambdas: λ values.
        cost_scale: as in :func:`choose_models`.
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


# --------------------------------------------------------------------------------------------
# Features


def _features(x: NDArray[np.float32], onehot: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.concatenate([x, onehot], axis=1).astype(np.float32) if onehot.shape[1] else x


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
        means = _task_means(data.scores[fold.tr], fold.tr_task, len(fold.tasks.vocab))
        return _knn_vote(fold.sims, fold.te_task, fold.tr_task, data.scores[fold.tr], means,
                         int(params["k"]), str(params["weighting"]), tw,
                         float(params.get("prior", 0.0)), order=fold.orders[tw])
    scorer = _make_scorer(kind, params, seed)
    feats_tr = _features(x[fold.tr], fold.tasks.onehot(fold.tr_task))
    feats_te = _features(x[fold.te], fold.tasks.onehot(fold.te_task))
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

    def summary(self) -> dict[str, Any]:
        best = next(r for r in self.table if r["params"] == self.best)
        return {"folds": self.folds, "selected_by": "oof_aiq (tie-break: oof_bce)",
                "best": self.best, "best_oof_aiq": best["oof_aiq"], "best_oof_bce": best["oof_bce"],
                "grid": self.table}


def _grid_configs(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, vals, strict=True)) for vals in product(*(grid[k] for k in keys))]


def cross_validate(kind: RouterKind, data: RouterData, *,
                   grid: Mapping[str, Sequence[Any]] | None = None, folds: int = 5,
                   seed: int = 0, progress: Progress | None = None) -> CVResult:
    """Choose a router's hyperparameters by k-fold CV over the training queries.

    Every configuration of ``grid`` (every combination of the listed values) is trained on
    ``folds - 1`` folds and predicts the held-out one; the configuration with the highest AIQ
    of the pooled out-of-fold predictions (:func:`router_aiq`, actual training costs and
    scores) wins, the lower OOF binary cross-entropy breaking ties. Settings that cannot matter
    are dropped from the grid (``task_weight`` with a single task).

    Args:
        kind: ``knn``, ``mlp`` or ``mf``.
        data: the training data (never a test split).
        grid: hyperparameter name → values; default :data:`DEFAULT_GRIDS` ``[kind]``.
        folds: CV folds (>= 2).
        seed: shuffles the folds and seeds the networks.
        progress: callback ``(stage, done, total)``.

    Raises:
        UserError: fewer than ``folds`` queries, ``folds < 2`` or an empty grid.
    """
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
    cost_scale = _cost_scale(data.costs)
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
        rows.append({"params": params,
                     "oof_aiq": router_aiq(oof, oof_costs, data.scores, data.costs, cost_scale),
                     "oof_bce": _bce(oof, data.scores)})
        preds.append(oof)
    best_i = max(range(len(rows)), key=lambda i: (round(rows[i]["oof_aiq"], 6),
                                                  -rows[i]["oof_bce"]))
    return CVResult(best=dict(configs[best_i]), table=rows, oof_scores=preds[best_i],
                    oof_costs=oof_costs, folds=folds)


def _col_means(a: FloatArray) -> FloatArray:
    """Column means ignoring NaN; 0 for a column with no value."""
    seen = ~np.isnan(a)
    return np.where(seen, a, 0.0).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)


def _cost_scale(costs: FloatArray) -> float:
    """Mean cost per query of the most expensive model (the λ normalisation)."""
    means = _col_means(costs)
    scale = float(means.max()) if len(means) else 0.0
    return scale if scale > 0 else 1.0


# --------------------------------------------------------------------------------------------
# The trained router


def _calibration(oof_scores: FloatArray, oof_costs: FloatArray, data: RouterData,
                 cost_scale: float) -> dict[str, list[float]]:
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


def _default_lambda(cal: Mapping[str, Sequence[float]], tolerance: float = 0.01) -> float:
    """The largest λ (cheapest) whose training (OOF) quality is within ``tolerance`` of the best."""
    lam = np.asarray(cal["lam"])
    q = np.asarray(cal["quality"])
    ok = np.flatnonzero(q >= q.max() - tolerance)
    return float(lam[ok.max()])


class TrainedRouter:
    """A trained router: scorer + cost model + task encoder + normalisation, saved as an artifact.

    Build one with :func:`train_router`; load one with :func:`load_router`. Use
    :meth:`predict` for batches of queries, :meth:`choose` for one query.
    """

    def __init__(self, *, kind: RouterKind, scorer: Any, cost: CostModel, tasks: TaskEncoder,
                 models: list[str], cost_scale: float, embedder: str, embedder_key: str | None,
                 embedder_dim: int, config: dict[str, Any],
                 views: Sequence[str] = VIEWS, tail_chars: int = 800) -> None:
        self.kind = kind
        self.views = tuple(views)
        self.tail_chars = int(tail_chars)
        self.scorer = scorer
        self.cost = cost
        self.tasks = tasks
        self.models = list(models)
        self.cost_scale = float(cost_scale)
        self.embedder_name = embedder
        self.embedder_key = embedder_key
        self.embedder_dim = int(embedder_dim)
        self.config = config
        self.path: Path | None = None
        self._memo: OrderedDict[tuple[str, str, str | None], dict[str, Any]] = OrderedDict()
        self._memo_lock = threading.Lock()

    # ------------------------------------------------------------------ predictions
    @property
    def calibration(self) -> dict[str, list[float]]:
        return dict(self.config.get("calibration") or {})

    @property
    def strong_model(self) -> str:
        """The model with the highest mean training cost (``target_strong_share`` counts it)."""
        return self.models[int(np.argmax(self.cost.mean))]

    def predict_embedded(self, embeddings: NDArray[np.float32], texts_len: Sequence[int],
                         tasks: Sequence[str | None]) -> dict[str, Any]:
        """Predictions from precomputed embeddings.

        Returns:
            ``{"scores": (n, m), "costs": (n, m), "high_costs": (n, m), "task": [...],
            "task_inferred": (n,) bool}``.
        """
        x = np.asarray(embeddings, dtype=np.float32)
        want = self.embedder_dim * len(self.views)
        if x.ndim != 2 or x.shape[1] != want:
            raise UserError(
                f"expected {want}-d query vectors ({len(self.views)} view(s) of "
                f"{self.embedder_name!r}, see embed_queries) (got shape {x.shape!r})"
            )
        tidx, inferred = self.tasks.indices(list(tasks), x)
        onehot = self.tasks.onehot(tidx)
        lengths = np.asarray(texts_len, dtype=np.float64)
        if self.kind == "knn":
            scores = self.scorer.predict(x, tidx)
        else:
            scores = self.scorer.predict(_features(x, onehot))
        return {"scores": np.clip(scores, 0.0, 1.0), "costs": self.cost.predict(lengths, onehot),
                "high_costs": self.cost.high(lengths, onehot),
                "task": [self.tasks.vocab[i] if self.tasks.vocab else None for i in tidx],
                "task_inferred": inferred}

    def predict(self, queries: Sequence[str], tasks: Sequence[str | None] | None = None, *,
                embedder: Embedder | None = None) -> dict[str, Any]:
        """Predicted scores and costs of every model for each query (see
        :meth:`predict_embedded`), embedding with ``embedder`` or the artifact's own."""
        emb = embedder or self.embedder()
        if emb.dim != self.embedder_dim:
            raise UserError(
                f"expected a {self.embedder_dim}-d embedder like {self.embedder_name!r} "
                f"(got {emb.name!r}, {emb.dim}-d)"
            )
        x = embed_queries(emb, list(queries), views=self.views, tail_chars=self.tail_chars)
        return self.predict_embedded(x, [len(q) for q in queries],
                                     list(tasks) if tasks is not None else [None] * len(queries))

    def predict_memo(self, queries: Sequence[str], tasks: Sequence[str | None], *,
                     embedder: Embedder | None = None) -> list[dict[str, Any]]:
        """Per-query predictions, memoised on this router (shared by every policy using it, so
        a λ sweep embeds each query once); misses are embedded in one batch.

        Returns:
            One dict per query: ``scores``, ``costs``, ``high_costs`` (``(m,)`` arrays over
            :attr:`models`), ``task`` and ``task_inferred``.
        """
        emb = embedder or self.embedder()
        keys = [(emb.name, q, t) for q, t in zip(queries, tasks, strict=True)]
        found: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        with self._memo_lock:
            for key in keys:
                if key in self._memo:
                    found[key] = self._memo[key]
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        if missing:
            rows = self._predict_rows([q for _, q, _ in missing], [t for _, _, t in missing], emb)
            new = dict(zip(missing, rows, strict=True))
            found.update(new)
            with self._memo_lock:
                self._memo.update(new)
                while len(self._memo) > MEMO_SIZE:
                    self._memo.popitem(last=False)
        return [found[key] for key in keys]

    def _predict_rows(self, queries: Sequence[str], tasks: Sequence[str | None],
                      emb: Embedder) -> list[dict[str, Any]]:
        pred = self.predict(queries, tasks, embedder=emb)
        return [{"scores": pred["scores"][i], "costs": pred["costs"][i],
                 "high_costs": pred["high_costs"][i], "task": pred["task"][i],
                 "task_inferred": bool(pred["task_inferred"][i])} for i in range(len(queries))]

    def embedder(self) -> Embedder:
        """The artifact's embedder (cached on disk), by the name it was trained with.

        Raises:
            UserError: the artifact was trained with a custom embedder; pass one explicitly.
        """
        from orchestra.embed import get_embedder

        if self.embedder_key not in ("minilm", "hashing"):
            raise UserError(
                f"this router was trained with the custom embedder {self.embedder_name!r}; "
                "pass the same embedder explicitly (embedder=...)"
            )
        emb = get_embedder(self.embedder_key)  # type: ignore[arg-type]
        if emb.name != self.embedder_name:
            raise UserError(
                f"expected embedder {self.embedder_name!r} for this router (got {emb.name!r} "
                f"from get_embedder({self.embedder_key!r})); retrain the router"
            )
        return emb

    def lambda_for(self, *, target_cost: float | None = None,
                   target_strong_share: float | None = None) -> float:
        """λ reaching a target on the training data (OOF predictions, actual training costs).

        Args:
            target_cost: USD per query; the smallest λ whose mean training cost per query does
                not exceed it (interpolated in log λ).
            target_strong_share: share of calls in [0, 1] to :attr:`strong_model`; the smallest
                λ whose share does not exceed it.

        Raises:
            UserError: neither or both targets given, or a target out of range.
        """
        if (target_cost is None) == (target_strong_share is None):
            raise UserError("give exactly one of target_cost= (USD per query) or "
                            "target_strong_share= (a fraction in [0, 1])")
        cal = self.calibration
        lam = np.asarray(cal["lam"])
        if target_cost is not None:
            if not target_cost > 0:
                raise UserError(f"target_cost must be a positive USD amount (got {target_cost!r})")
            y, t = np.asarray(cal["cost_per_query"]), float(target_cost)
        else:
            assert target_strong_share is not None
            if not 0.0 <= target_strong_share <= 1.0:
                raise UserError(
                    f"target_strong_share must be in [0, 1] (got {target_strong_share!r})"
                )
            y, t = np.asarray(cal["strong_share"]), float(target_strong_share)
        # y is non-increasing in λ up to ties; take its running minimum to be safe.
        y = np.minimum.accumulate(y)
        ok = np.flatnonzero(y <= t + 1e-15)
        if len(ok) == 0:
            return float(lam[-1])
        i = int(ok[0])
        if i == 0:
            return float(lam[0])
        # Interpolate between λ[i-1] (above target) and λ[i] (at or below) in log λ.
        lo, hi = max(lam[i - 1], 1e-6), lam[i]
        frac = (y[i - 1] - t) / (y[i - 1] - y[i]) if y[i - 1] != y[i] else 1.0
        return float(np.exp(np.log(lo) + frac * (np.log(hi) - np.log(lo))))

    def default_lambdas(self) -> list[float]:
        """A compact λ grid (<= 20 values) of the router's operating points on the training
        data (its hull vertices first), from the best quality (λ = 0) to the cheapest."""
        return list(self.config.get("lambdas") or fine_lambda_grid().tolist())

    @property
    def default_lam(self) -> float:
        """λ used when none is given: the cheapest with training quality within 0.01 of the
        best (OOF)."""
        return float(self.config.get("default_lam", 0.0))

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the artifact directory (``config.json`` + ``weights.npz`` / ``weights.pt``)."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        cfg = dict(self.config)
        cfg.update({
            "format": "orchestra.router", "version": ARTIFACT_VERSION, "kind": self.kind,
            "models": self.models, "cost_scale": self.cost_scale,
            "embedder": {"name": self.embedder_name, "key": self.embedder_key,
                         "dim": self.embedder_dim, "views": list(self.views),
                         "tail_chars": self.tail_chars},
            "tasks": self.tasks.to_dict(), "cost_model": self.cost.to_dict(),
            "params": self.scorer.params(),
        })
        if self.kind == "knn":
            np.savez_compressed(p / "weights.npz", **self.scorer.state())
            weights = "weights.npz"
        else:
            import torch

            torch.save(self.scorer.state(), p / "weights.pt")
            weights = "weights.pt"
        cfg["weights"] = weights
        (p / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
        self.config = cfg
        self.path = p
        return p


def train_router(kind: RouterKind, data: RouterData, *, params: Mapping[str, Any] | None = None,
                 grid: Mapping[str, Sequence[Any]] | None = None, folds: int = 5, seed: int = 0,
                 ensemble: int | None = None, progress: Progress | None = None) -> TrainedRouter:
    """Train a router on ``data`` (the training split).

    With ``params`` the hyperparameters are fixed (CV still runs, on that single configuration,
    to get the out-of-fold predictions the λ calibration needs); otherwise they are chosen by
    :func:`cross_validate` over ``grid``. The final scorer is then fit on all of ``data``.

    Args:
        kind: ``knn``, ``mlp`` or ``mf``.
        data: training data from :func:`prepare_data`.
        params: fixed hyperparameters (skip the search).
        grid: the search grid (default :data:`DEFAULT_GRIDS`).
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
    scorer = _make_scorer(kind, final, seed)
    if kind == "knn":
        scorer.fit(x, tidx, len(tasks.vocab), data.scores)
    else:
        scorer.fit(_features(x, onehot), data.scores,
                   progress=(lambda s, d, t: progress(f"final fit, {s}", d, t))
                   if progress else None)
    cost_scale = _cost_scale(data.costs)
    cal = _calibration(cv.oof_scores, cv.oof_costs, data, cost_scale)
    config = {
        "data": data.source, "n_train": data.n, "seed": seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "train_seconds": round(time.time() - t0, 1),
        "cv": cv.summary(), "calibration": cal, "lambdas": compact_lambdas(cal),
        "default_lam": _default_lambda(cal), "strong_model": data.models[int(np.argmax(cost.mean))],
        "cost_normalisation": "cost / mean training cost per query of the most expensive model",
    }
    return TrainedRouter(kind=kind, scorer=scorer, cost=cost, tasks=tasks, models=data.models,
                         cost_scale=cost_scale, embedder=data.embedder,
                         embedder_key=data.embedder_key,
                         embedder_dim=int(x.shape[1]) // len(data.views), config=config,
                         views=data.views, tail_chars=data.tail_chars)


# --------------------------------------------------------------------------------------------
# Loading and locations


def artifacts_home() -> Path:
    """``<data home>/artifacts``: where ``orchestra train`` writes by default."""
    from orchestra._paths import data_home

    return data_home() / "artifacts"


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).stem if ("/" in text or "\\" in text)
               else text.replace(":train", "")).strip("-.")
    return s or "data"


def default_artifact_dir(data: str, kind: str) -> Path:
    """``<data home>/artifacts/<data>-<kind>``, e.g. ``.../artifacts/routerbench-knn``."""
    return artifacts_home() / f"{_slug(data)}-{kind}"


def train_command(kind: str, name: str | None = None) -> str:
    """The ``orchestra train`` command that writes the artifact ``name`` (``<data>-<kind>``)."""
    data = "routerbench"
    if name:
        stem = Path(name).name
        if stem.endswith(f"-{kind}") and stem[: -len(kind) - 1]:
            data = stem[: -len(kind) - 1]
        else:
            data = "<outcome table>"
    return f"orchestra train {kind} --data {data}"


def resolve_artifact(path: str | os.PathLike[str] | None, kind: str) -> Path:
    """Find an artifact directory.

    ``path`` is used as given when it holds an artifact; otherwise its last component is looked
    up in :func:`artifacts_home` (so a recipe can name ``routerbench-knn``). ``None`` means
    ``routerbench-<kind>``.

    Raises:
        UserError: nothing found; the message names the ``orchestra train`` command to run.
    """
    name = str(path) if path is not None else f"routerbench-{kind}"
    p = Path(name).expanduser()
    if (p / "config.json").is_file():
        return p
    alt = artifacts_home() / p.name
    if (alt / "config.json").is_file():
        return alt
    cmd = train_command(kind, p.name)
    # A conventional name (<data>-<kind>) is what `orchestra train` writes to the artifacts
    # folder by default, where this lookup finds it by name; other names need --out.
    target = alt
    if "<" in cmd:
        target = alt if len(p.parts) == 1 else p
        cmd += f" --out {target}"
    raise UserError(
        f"no trained {kind} router at {name!r} (looked in {[str(p), str(alt)]}); train one "
        f"with `{cmd}` (it writes {str(target)!r}), or pass path=<artifact dir>"
    )


_LOADED: dict[tuple[str, float], TrainedRouter] = {}


def load_router(path: str | os.PathLike[str], *, kind: str | None = None) -> TrainedRouter:
    """Load an artifact directory written by :meth:`TrainedRouter.save` (memoised per file).

    Args:
        path: the artifact directory (or a name under :func:`artifacts_home`).
        kind: the expected kind; a mismatch raises.

    Raises:
        UserError: missing or unreadable artifact, or a different kind / version.
    """
    p = resolve_artifact(path, kind or "knn") if kind else Path(path)
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"no router artifact at {str(p)!r}: expected {str(cfg_path)!r}")
    key = (str(p.resolve()), cfg_path.stat().st_mtime)
    if key in _LOADED:
        router = _LOADED[key]
    else:
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{cfg_path}: expected JSON ({e.msg})") from None
        if cfg.get("format") != "orchestra.router" or cfg.get("version") != ARTIFACT_VERSION:
            raise UserError(
                f"{cfg_path}: expected an orchestra router artifact version {ARTIFACT_VERSION} "
                f"(got format {cfg.get('format')!r}, version {cfg.get('version')!r}); retrain it"
            )
        k = cfg["kind"]
        seed = int(cfg.get("seed", 0))
        scorer = _make_scorer(k, cfg["params"], seed)
        w = p / cfg["weights"]
        if k == "knn":
            with np.load(w) as st:
                scorer.load_state({name: st[name] for name in st.files})
        else:
            import torch

            scorer.load_state(torch.load(w, map_location="cpu", weights_only=True))
        emb = cfg["embedder"]
        router = TrainedRouter(
            kind=k, scorer=scorer, cost=CostModel.from_dict(cfg["cost_model"]),
            tasks=TaskEncoder.from_dict(cfg["tasks"]), models=cfg["models"],
            cost_scale=cfg["cost_scale"], embedder=emb["name"], embedder_key=emb.get("key"),
            embedder_dim=emb["dim"], config=cfg, views=emb.get("views", ["full"]),
            tail_chars=emb.get("tail_chars", 800),
        )
        router.path = p
        _LOADED[key] = router
    if kind is not None and router.kind != kind:
        raise UserError(
            f"{str(p)!r} holds a {router.kind!r} router; expected {kind!r} (use the "
            f"{router.kind!r} policy, or train one with `{train_command(kind)}`)"
        )
    return router

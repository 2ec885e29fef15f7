"""The answer-aware cascade: P(correct) of every answer so far, and the next step's decision.

:class:`Escalator` is the trained model (a :func:`~orchestra.policies.escalate.artifact`
directory loads into one). For a query and the answers seen so far it gives

- the **scorer**'s P(correct) of each answer (:meth:`Escalator.state_scores`), from the query,
  the answer text and its agreement with the other answers;
- the **gain model**'s expected change in the chosen answer's correctness if a candidate model
  is called too: P(it turns a wrong choice right) − P(it turns a right choice wrong), two small
  classifiers (``up``, ``down``) whose difference stays near 0 where a call changes nothing
  (:meth:`Escalator.after_scores` adds it to the current best P(correct));
- every model's predicted and cautious (high) cost, from the learned routers' cost model.

The decision (:meth:`Escalator.decide`): before any answer, call the model maximising
``P_after(∅, m) - lam * cost(m) / cost_scale``; after each round, call the candidate maximising
``P_after(state, m) - P_best(state) - lam * cost(m) / cost_scale`` when that is positive and its
cautious cost fits the USD left, else answer with the answer of highest P(correct).

With ``lookahead`` a candidate's value also counts one more step, which is what makes asking a
second cheap model worth its price (its answer is informative through agreement, and pays off
only through the call it avoids or triggers): its answer agrees with the best answer so far
(probability from a third small classifier, ``agree``) or not; each branch is scored as a
hypothetical state, and is worth the better of answering and its best next call.
:func:`simulate` runs the same decisions on recorded answers (training CV, benchmarks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orchestra.policies.escalate.features import (
    AnswerInfo,
    QueryInfo,
    after_features,
    agreement_matrix,
    answer_array,
    answer_info,
    query_info,
    scorer_features,
)
from orchestra.policies.escalate.mlp import NumpyMLP
from orchestra.policies.learned.cost import CostModel

__all__ = ["Decision", "Escalator", "QueryAnswers", "StateEval", "simulate"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass
class QueryAnswers:
    """One query with the answers read so far (``None`` for models not called)."""

    info: QueryInfo
    answers: list[AnswerInfo | None]
    agree: FloatArray
    feats: FloatArray

    @classmethod
    def build(cls, info: QueryInfo, answers: Sequence[AnswerInfo | None]) -> QueryAnswers:
        return cls(info, list(answers), agreement_matrix(answers), answer_array(answers))


@dataclass
class Decision:
    """What to do next: ``call`` a model index, or answer with ``answer`` (a model index, or
    -1 when nothing was answered). ``details`` goes into the trace's scores."""

    call: int | None
    answer: int
    details: dict[str, Any] = field(default_factory=dict)


class Escalator:
    """The trained cascade: models, task priors, cost model, scorer and gain model.

    Args:
        models: model names (column order of every array).
        tasks: the training tasks (task one-hot order).
        prior: ``(len(tasks) + 1, m)`` prior accuracy per task and model; the last row is
            every task together (used for an unknown task).
        cost: the per-model cost model.
        cost_scale: mean training cost per query of the priciest model (λ normalisation).
        scorer: P(correct) of an answer.
        up: P(calling a candidate turns a wrong choice right).
        down: P(calling a candidate turns a right choice wrong).
        agree: P(a candidate's answer agrees with the best answer so far).
        lookahead: value calls with one more step (see the module docstring).
        config: training record (CV, λ grid, default λ...).
    """

    def __init__(self, *, models: Sequence[str], tasks: Sequence[str], prior: FloatArray,
                 cost: CostModel, cost_scale: float, scorer: NumpyMLP, up: NumpyMLP, down: NumpyMLP,
                 agree: NumpyMLP, lookahead: bool = True,
                 config: dict[str, Any] | None = None) -> None:
        self.models = list(models)
        self.tasks = list(tasks)
        self.prior = np.asarray(prior, dtype=np.float64)
        if self.prior.shape != (len(self.tasks) + 1, len(self.models)):
            raise ValueError(f"expected prior of shape {(len(self.tasks) + 1, len(self.models))} "
                             f"(got {self.prior.shape})")
        self.cost = cost
        self.cost_scale = float(cost_scale)
        self.scorer = scorer
        self.up = up
        self.down = down
        self.agree = agree
        self.lookahead = bool(lookahead)
        self.config = dict(config or {})
        self.path: Any = None

    @property
    def m(self) -> int:
        return len(self.models)

    # ------------------------------------------------------------------ per query
    def query(self, text: str, task: str | None) -> QueryInfo:
        return query_info(text, task, self.tasks)

    def read(self, q: QueryInfo, answers: Sequence[str | None]) -> QueryAnswers:
        """Read the answers (``None`` for models not called) of one query."""
        return QueryAnswers.build(q, [None if a is None else answer_info(a, q) for a in answers])

    def prior_of(self, q: QueryInfo) -> FloatArray:
        prior: FloatArray = self.prior[q.task if q.task >= 0 else -1]
        return prior

    def costs(self, q: QueryInfo) -> tuple[FloatArray, FloatArray]:
        """Predicted and cautious (95th percentile) cost of every model on the query."""
        onehot = np.zeros((1, len(self.tasks)), dtype=np.float32)
        if q.task >= 0:
            onehot[0, q.task] = 1.0
        lengths = np.asarray([float(q.length)])
        return self.cost.predict(lengths, onehot)[0], self.cost.high(lengths, onehot)[0]

    def state_scores(self, qa: QueryAnswers, masks: BoolArray,
                     prior: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
        """``(b, m)`` P(correct) of each answer of each state (0 where not answered) and the
        prior mass agreeing with it (itself included)."""
        masks = np.atleast_2d(np.asarray(masks, dtype=bool))
        prior = self.prior_of(qa.info) if prior is None else prior
        p = np.zeros(masks.shape)
        if masks.any():
            x, idx = scorer_features(qa.info, prior, qa.feats, qa.agree, masks, len(self.tasks))
            p[idx[:, 0], idx[:, 1]] = self.scorer.predict(x)
        agree = np.where(np.eye(self.m, dtype=bool), 1.0, qa.agree)
        support = masks * ((masks[:, None, :] * agree[None, :, :]) @ prior)
        return p, support

    def after_scores(self, qa: QueryAnswers, masks: BoolArray, p: FloatArray,
                     support: FloatArray, candidates: NDArray[np.intp],
                     prior: FloatArray | None = None) -> FloatArray:
        """P(correct) of the chosen answer after calling ``candidates[k]`` in state
        ``masks[k]`` (rows aligned)."""
        prior = self.prior_of(qa.info) if prior is None else prior
        x = after_features(qa.info, prior, masks, p, support, np.asarray(candidates, np.intp),
                           len(self.tasks))
        masks = np.asarray(masks, dtype=bool)
        best = np.where(masks, p, 0.0).max(axis=1, initial=0.0)
        out: FloatArray = np.clip(best + self.up.predict(x) - self.down.predict(x), 0.0, 1.0)
        return out

    # ------------------------------------------------------------------ decisions
    def evaluate(self, qa: QueryAnswers, called: Sequence[int], *, usd_left: float | None = None,
                 can_call: bool = True, can_call_again: bool = True,
                 allowed: BoolArray | None = None,
                 costs: tuple[FloatArray, FloatArray] | None = None) -> StateEval:
        """Everything the decision needs that does not depend on λ (see :meth:`decide`)."""
        m = self.m
        mask = np.zeros(m, dtype=bool)
        mask[list(called)] = True
        prior = self.prior_of(qa.info)
        pred, high = costs if costs is not None else self.costs(qa.info)
        p, support = self.state_scores(qa, mask[None, :], prior)
        p, support = p[0], support[0]
        answered = bool(mask.any())
        best = int(np.argmax(np.where(mask, p, -1.0))) if answered else -1
        ok = ~mask if allowed is None else (~mask & np.asarray(allowed, dtype=bool))
        if usd_left is not None:
            fits = ok & (high <= usd_left)
            if not fits.any() and not answered:
                fits = ok & (pred <= usd_left)  # the runtime caps max_tokens to what is left
            ok = fits
        cands = np.flatnonzero(ok) if can_call else np.zeros(0, dtype=np.intp)
        k = len(cands)
        p_after = self.after_scores(qa, np.repeat(mask[None, :], k, axis=0),
                                    np.repeat(p[None, :], k, axis=0),
                                    np.repeat(support[None, :], k, axis=0), cands, prior) \
            if k else np.zeros(0)
        branches = None
        if self.lookahead and answered and k:
            branches = self._branches(qa, mask, p, support, cands, best, prior, ok)
        return StateEval(mask=mask, p=p, best=best, p_best=float(p[best]) if answered else 0.0,
                         cands=cands, p_after=p_after, pred=pred,
                         can_call=can_call and can_call_again, branches=branches)

    def choose(self, ev: StateEval, lam: float) -> tuple[int | None, FloatArray, FloatArray]:
        """(model to call or None, value of each candidate, utility of each candidate)."""
        if not len(ev.cands):
            return None, np.zeros(0), np.zeros(0)
        value = ev.p_after
        if ev.branches is not None:
            value = np.maximum(value, self._branch_value(ev, lam))
        cost = lam * ev.pred[ev.cands] / self.cost_scale
        util = value - ev.p_best - cost
        j = int(np.argmax(util))
        if ev.best < 0 or util[j] > 0:
            return int(ev.cands[j]), value, util
        return None, value, util

    def decide(self, qa: QueryAnswers, called: Sequence[int], lam: float, *,
               usd_left: float | None = None, can_call: bool = True,
               can_call_again: bool = True, allowed: BoolArray | None = None,
               costs: tuple[FloatArray, FloatArray] | None = None) -> Decision:
        """The next step after the models in ``called`` answered (see the module docstring).

        Args:
            qa: the query and the answers read so far.
            called: model indices already called (their answers are in ``qa``).
            lam: cost weight λ >= 0.
            usd_left: USD left in the budget (``None``: no limit).
            can_call: whether another call may be made and still be answered from.
            can_call_again: whether a call after that one may be made too (lookahead).
            allowed: ``(m,)`` models the policy may call (default: all).
            costs: precomputed :meth:`costs` of the query.
        """
        ev = self.evaluate(qa, called, usd_left=usd_left, can_call=can_call,
                           can_call_again=can_call_again, allowed=allowed, costs=costs)
        call, value, util = self.choose(ev, lam)
        details: dict[str, Any] = {
            "lam": lam, "p_correct": {self.models[i]: round(float(ev.p[i]), 4)
                                      for i in np.flatnonzero(ev.mask)},
            "best": self.models[ev.best] if ev.best >= 0 else None, "p_best": round(ev.p_best, 4),
            "candidates": {self.models[c]: {"p_after": round(float(ev.p_after[i]), 4),
                                            "gain": round(float(value[i] - ev.p_best), 4),
                                            "cost": float(ev.pred[c]),
                                            "utility": round(float(util[i]), 5)}
                           for i, c in enumerate(ev.cands.tolist())},
        }
        if call is None:
            details["why"] = ("no further call allowed" if not can_call
                              else "no candidate fits the budget left" if not len(ev.cands)
                              else "no candidate's expected gain exceeds lam x its cost")
        return Decision(call, ev.best, details)

    def _branches(self, qa: QueryAnswers, mask: BoolArray, p: FloatArray, support: FloatArray,
                  cands: NDArray[np.intp], best: int, prior: FloatArray, ok: BoolArray
                  ) -> list[tuple[float, list[tuple[float, FloatArray, NDArray[np.intp]]]]]:
        """Per candidate: P(its answer agrees with the best so far) and, for the agreeing and
        the disagreeing branch, (best P(correct), P_after of each next candidate, those
        candidates)."""
        m = self.m
        k = len(cands)
        x = after_features(qa.info, prior, np.repeat(mask[None, :], k, axis=0),
                           np.repeat(p[None, :], k, axis=0),
                           np.repeat(support[None, :], k, axis=0), cands, len(self.tasks))
        q_agree = self.agree.predict(x)
        out = []
        for i, c in enumerate(cands.tolist()):
            m2 = mask.copy()
            m2[c] = True
            nxt = np.flatnonzero(ok & ~m2)
            branch = []
            for agrees in (True, False):
                ag = qa.agree.copy()
                row = ag[best].copy() if agrees else np.zeros(m)
                row[best] = 1.0 if agrees else 0.0
                row[c] = 0.0
                ag[c], ag[:, c] = row, row
                feats = qa.feats.copy()
                feats[c] = qa.feats[best]
                st = QueryAnswers(qa.info, qa.answers, ag, feats)
                p2, s2 = self.state_scores(st, m2[None, :], prior)
                pa = self.after_scores(st, np.repeat(m2[None, :], len(nxt), axis=0),
                                       np.repeat(p2, len(nxt), axis=0),
                                       np.repeat(s2, len(nxt), axis=0), nxt, prior) \
                    if len(nxt) else np.zeros(0)
                branch.append((float(p2[0].max()), pa, nxt))
            out.append((float(q_agree[i]), branch))
        return out

    def _branch_value(self, ev: StateEval, lam: float) -> FloatArray:
        assert ev.branches is not None
        vals = np.zeros(len(ev.cands))
        for i, (q_agree, branch) in enumerate(ev.branches):
            v = []
            for pb, pa, nxt in branch:
                nxt_best = float(np.max(pa - lam * ev.pred[nxt] / self.cost_scale)) \
                    if len(nxt) and ev.can_call else pb
                v.append(max(pb, nxt_best))
            vals[i] = q_agree * v[0] + (1 - q_agree) * v[1]
        return vals


@dataclass
class StateEval:
    """A state's λ-free evaluation: P(correct) of its answers, candidates and their P_after."""

    mask: BoolArray
    p: FloatArray
    best: int
    p_best: float
    cands: NDArray[np.intp]
    p_after: FloatArray
    pred: FloatArray
    can_call: bool  # after a candidate's call, whether another may follow
    branches: list[tuple[float, list[tuple[float, FloatArray, NDArray[np.intp]]]]] | None = None


def simulate(esc: Escalator, queries: Sequence[QueryAnswers], scores: FloatArray,
             costs: FloatArray, lambdas: Sequence[float], *, max_calls: int = 3
             ) -> list[dict[str, Any]]:
    """Run the cascade on recorded answers at every λ (state evaluations shared across λ).

    Args:
        esc: the trained cascade.
        queries: per query, *every* model's recorded answer (the simulation reveals only the
            called ones: features never read an uncalled model's answer).
        scores, costs: ``(n, m)`` recorded outcomes (NaN counts 0).
        lambdas: λ values.
        max_calls: calls per query at most (the replay pool's 4 rounds allow 3 calls and an
            answer chosen among them).

    Returns:
        Per λ: ``{"lam", "total_cost", "mean_score", "calls_per_query", "picked", "n_calls",
        "score"}`` (the last three per query).
    """
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    c = np.nan_to_num(np.asarray(costs, dtype=np.float64), nan=0.0)
    n, nl = len(queries), len(lambdas)
    picked = np.full((nl, n), -1)
    n_calls = np.zeros((nl, n), dtype=int)
    spent = np.zeros((nl, n))
    for qi, qa in enumerate(queries):
        cost_pred = esc.costs(qa.info)
        cache: dict[tuple[int, ...], StateEval] = {}
        for li, lam in enumerate(lambdas):
            called: list[int] = []
            while True:
                key = tuple(sorted(called))
                ev = cache.get(key)
                if ev is None:
                    ev = cache[key] = esc.evaluate(
                        qa, called, can_call=len(called) < max_calls,
                        can_call_again=len(called) + 1 < max_calls, costs=cost_pred)
                call, _, _ = esc.choose(ev, lam)
                if call is None:
                    picked[li, qi] = ev.best
                    break
                called.append(call)
                spent[li, qi] += c[qi, call]
            n_calls[li, qi] = len(called)
    out = []
    rows = np.arange(n)
    for li, lam in enumerate(lambdas):
        got = np.where(picked[li] >= 0, s[rows, np.maximum(picked[li], 0)], 0.0)
        out.append({"lam": float(lam), "total_cost": float(spent[li].sum()),
                    "mean_score": float(got.mean()) if n else 0.0,
                    "calls_per_query": float(n_calls[li].mean()) if n else 0.0,
                    "picked": picked[li], "n_calls": n_calls[li], "score": got})
    return out

"""What the answer-aware cascade reads from a query and the answers seen so far.

Everything is computed from text the run already holds, for any outcome table with recorded
responses (nothing dataset-specific):

- **query**: its length, whether it is a multiple-choice question (its options, parsed with
  :func:`~orchestra.outcomes.parse_choices`) and how many options it has;
- **answer** (per call): its length, whether an answer could be read from it (the choice letter
  via :func:`~orchestra.outcomes.extract_choice_letter` on a multiple-choice query; any text
  otherwise), whether it is a bare label, whether it is empty;
- **agreement** between two answers: on a multiple-choice query 1 when both name the same
  letter, else 0; otherwise the Jaccard overlap of their word sets (code and prose answers are
  rarely identical, but right ones tend to overlap).

:func:`scorer_features` turns one query's answers (an ``(m, m)`` agreement matrix and per-model
answer features, only the rows of called models filled) and a batch of *states* (which models
have answered, as ``(b, m)`` masks) into one feature row per (state, answering model): model and
task one-hots, the model's prior accuracy on the task, query and answer features, and
agreement with the other answers of the state — in aggregate (weighted by the other models'
prior accuracy) and per other model. :func:`after_features` describes (state, candidate model)
pairs for the gain model: the candidate, the task, and the state's answers summarised by the
scorer's probabilities.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from orchestra.outcomes import extract_choice_letter, parse_choices

__all__ = [
    "AFTER_EMPTY_COLUMN",
    "AnswerInfo",
    "QueryInfo",
    "after_features",
    "agreement",
    "agreement_matrix",
    "answer_info",
    "logit",
    "query_info",
    "scorer_features",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_WORD = re.compile(r"[a-z0-9_]+")
_LABEL = re.compile(r"\(?[A-Ja-j1-9]\)?[.):]?")


@dataclass(frozen=True)
class QueryInfo:
    """A query as the features see it: task index (-1 when unknown), length, options."""

    task: int
    length: int
    choices: tuple[str, ...] | None

    @property
    def is_mc(self) -> bool:
        return self.choices is not None


@dataclass(frozen=True)
class AnswerInfo:
    """One recorded or live answer: the key agreement compares, its words, features."""

    key: str | None
    words: frozenset[str]
    length: int
    parsed: bool
    bare: bool


def query_info(query: str, task: str | None, tasks: Sequence[str]) -> QueryInfo:
    """The query's task index in ``tasks`` (-1 when unknown or missing), length and options."""
    choices = parse_choices(query)
    idx = list(tasks).index(task) if task is not None and task in tasks else -1
    return QueryInfo(task=idx, length=len(query), choices=tuple(choices) if choices else None)


def answer_info(text: str | None, q: QueryInfo) -> AnswerInfo:
    """Read one answer: its key (choice letter, or normalised text), words and shape."""
    s = (text or "").strip()
    if q.choices is not None:
        letter = extract_choice_letter(s, len(q.choices), q.choices)
        key = None if letter is None else f"choice:{letter}"
        words: frozenset[str] = frozenset()
    else:
        norm = " ".join(_WORD.findall(s.lower()))
        key = f"text:{norm}" if norm else None
        words = frozenset(norm.split())
    bare = bool(_LABEL.fullmatch(s.strip("*_`'\" ")))
    return AnswerInfo(key=key, words=words, length=len(s), parsed=key is not None, bare=bare)


def agreement(a: AnswerInfo, b: AnswerInfo) -> float:
    """1 for the same answer, 0 for different ones; word-set Jaccard for free-text answers."""
    if a.key is None or b.key is None:
        return 0.0
    if a.key == b.key:
        return 1.0
    if a.key.startswith("choice:") or not a.words or not b.words:
        return 0.0
    return len(a.words & b.words) / len(a.words | b.words)


def agreement_matrix(answers: Sequence[AnswerInfo | None]) -> FloatArray:
    """``(m, m)`` pairwise :func:`agreement` (0 where either answer is missing)."""
    m = len(answers)
    out = np.zeros((m, m))
    for i in range(m):
        ai = answers[i]
        if ai is None:
            continue
        for j in range(i + 1, m):
            aj = answers[j]
            if aj is not None:
                out[i, j] = out[j, i] = agreement(ai, aj)
    return out


def answer_array(answers: Sequence[AnswerInfo | None]) -> FloatArray:
    """``(m, 4)`` per-model answer features: log length, parsed, bare label, empty."""
    out = np.zeros((len(answers), 4))
    for i, a in enumerate(answers):
        if a is not None:
            out[i] = (math.log1p(a.length) / 8.0, float(a.parsed), float(a.bare),
                      float(a.length == 0))
    return out


def logit(p: FloatArray | float) -> FloatArray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-3, 1 - 1e-3)
    return np.log(q / (1 - q))


def _query_block(q: QueryInfo, n_tasks: int) -> FloatArray:
    task = np.zeros(n_tasks)
    if 0 <= q.task < n_tasks:
        task[q.task] = 1.0
    chance = 1.0 / len(q.choices) if q.choices else 0.0
    return np.concatenate([task, [math.log1p(q.length) / 10.0, float(q.is_mc), chance]])


def scorer_features(q: QueryInfo, prior: FloatArray, answers: FloatArray, agree: FloatArray,
                    masks: BoolArray, n_tasks: int) -> tuple[FloatArray, NDArray[np.intp]]:
    """One feature row per (state, answering model).

    Args:
        q: the query.
        prior: ``(m,)`` prior accuracy of each model on the query's task.
        answers: ``(m, 4)`` :func:`answer_array` rows (only answered models matter).
        agree: ``(m, m)`` :func:`agreement_matrix`.
        masks: ``(b, m)`` which models have answered in each state.
        n_tasks: width of the task one-hot.

    Returns:
        ``(rows, d)`` features and ``(rows, 2)`` their (state, model) indices.
    """
    masks = np.asarray(masks, dtype=bool)
    m = masks.shape[1]
    idx = np.argwhere(masks)  # (rows, 2): state, model
    s, i = idx[:, 0], idx[:, 1]
    others = masks[s].copy()
    others[np.arange(len(idx)), i] = False
    a = agree[i] * others  # agreement with each other answer of the state
    d = (1.0 - agree[i]) * others
    n_other = others.sum(axis=1)
    pw = prior[None, :]
    agree_mass = (a * pw).sum(axis=1)
    dis_mass = (d * pw).sum(axis=1)
    frac = np.divide(a.sum(axis=1), n_other, out=np.zeros(len(idx)), where=n_other > 0)
    max_agree = np.where(a > 0.5, pw, 0.0).max(axis=1, initial=0.0)
    max_dis = np.where((d > 0.5) & others, pw, 0.0).max(axis=1, initial=0.0)
    per_model = np.where(others, 2.0 * agree[i] - 1.0, 0.0)
    onehot = np.eye(m)[i]
    qb = np.broadcast_to(_query_block(q, n_tasks), (len(idx), n_tasks + 3))
    x = np.column_stack([
        onehot, qb, logit(prior[i]) / 4.0, answers[i],
        n_other / m, a.sum(axis=1), d.sum(axis=1), agree_mass, dis_mass, frac,
        agree_mass - dis_mass, max_agree, max_dis, per_model,
        # interactions the small network need not discover: agreement x chance level
        frac * float(q.is_mc), (agree_mass - dis_mass) * logit(prior[i]) / 4.0,
    ])
    return x, idx


#: Column of :func:`after_features` holding the "no answer yet" flag.
AFTER_EMPTY_COLUMN = -8


def after_features(q: QueryInfo, prior: FloatArray, masks: BoolArray, state_p: FloatArray,
                   support: FloatArray, candidates: NDArray[np.intp], n_tasks: int) -> FloatArray:
    """One feature row per (state, candidate model): what calling the candidate could add.

    Args:
        q: the query.
        prior: ``(m,)`` prior accuracies on the task.
        masks: ``(b, m)`` answered models per state (``b`` rows, one per candidate row).
        state_p: ``(b, m)`` the scorer's P(correct) of each answered model (0 elsewhere).
        support: ``(b, m)`` per answered model, the prior mass of the answers agreeing with it
            (itself included; 0 elsewhere).
        candidates: ``(b,)`` the candidate model of each row.
        n_tasks: width of the task one-hot.
    """
    masks = np.asarray(masks, dtype=bool)
    b, m = masks.shape
    rows = np.arange(b)
    order = np.sort(np.where(masks, state_p, -1.0), axis=1)
    best = np.maximum(order[:, -1], 0.0) if m else np.zeros(b)
    second = np.maximum(order[:, -2], 0.0) if m > 1 else np.zeros(b)
    best_i = np.argmax(np.where(masks, state_p, -1.0), axis=1)
    n = masks.sum(axis=1)
    empty = (n == 0).astype(np.float64)
    best_support = np.where(n > 0, support[rows, best_i], 0.0)
    total = (masks * prior[None, :]).sum(axis=1)
    cand_prior = prior[candidates]
    qb = np.broadcast_to(_query_block(q, n_tasks), (b, n_tasks + 3))
    return np.column_stack([
        np.eye(m)[candidates], qb, logit(cand_prior) / 4.0, masks.astype(np.float64),
        n / m, empty, best, second, best - second, logit(np.where(n > 0, best, 0.5)) / 4.0,
        best_support, total - best_support, cand_prior - best,
    ])

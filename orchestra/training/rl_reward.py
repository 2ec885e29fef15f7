"""The reward of one ``rl`` episode: the grade of its answer, less its cost, or −1 on a format
error.

``reward = grade − λ · cost / c_ref`` where ``grade`` is the recorded score of the answer
(:class:`~orchestra.eval.grading.Grader`, the same rules ``orchestra eval`` grades by) and
``c_ref`` is what the table's priciest model cost on that very query (as AIQ normalises cost),
so ``λ = 1`` prices "ask the priciest model" at one full point of score. An episode in which any
decision was malformed (its ``scores["rl"]["format_error"]``) gets −1, whatever it answered.
An answer the recordings cannot grade (the policy's own words on a free-text query) scores 0.

λ is drawn from :data:`LAM_GRID` once per GRPO group (:func:`sample_lam`): all episodes of a
group share one prompt, which group-normalised advantages need.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestra.errors import UserError

if TYPE_CHECKING:
    from orchestra.eval.grading import EvalQuery, Grader
    from orchestra.outcomes.table import OutcomeTable
    from orchestra.runtime import RunResult

__all__ = ["FORMAT_PENALTY", "LAM_GRID", "Reward", "episode_reward", "format_error_of",
           "reference_costs", "reward_of_run", "sample_lam"]

#: The λ values training samples from (one model serves the whole cost curve).
LAM_GRID: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0)
#: The reward of an episode with a malformed decision.
FORMAT_PENALTY = -1.0


@dataclass(frozen=True)
class Reward:
    """One episode's reward and what it came from."""

    reward: float
    grade: float
    cost_usd: float
    c_ref: float
    lam: float
    format_error: str | None


def episode_reward(grade: float, cost_usd: float, lam: float, c_ref: float,
                   format_error: str | None = None) -> float:
    """``grade − λ·cost/c_ref``, or :data:`FORMAT_PENALTY` on a format error.

    Raises:
        UserError: a negative λ or cost, or a non-positive ``c_ref``.
    """
    if lam < 0 or cost_usd < 0:
        raise UserError(f"reward: expected lam >= 0 and cost >= 0 (got lam={lam!r}, "
                        f"cost={cost_usd!r})")
    if not c_ref > 0:
        raise UserError(f"reward: expected a reference cost > 0 (got {c_ref!r}); the table "
                        "must record a positive cost for its priciest model on every query")
    if format_error:
        return FORMAT_PENALTY
    return float(grade) - lam * float(cost_usd) / float(c_ref)


def format_error_of(steps: Sequence[Mapping[str, Any]]) -> str | None:
    """The first format error recorded in a run's decisions (``scores["rl"]``), else None."""
    for s in steps:
        rl = (s.get("scores") or {}).get("rl")
        if isinstance(rl, Mapping) and rl.get("format_error"):
            return str(rl["format_error"])
    return None


def reference_costs(table: OutcomeTable) -> np.ndarray:
    """``c_ref`` per query: the recorded cost of the table's priciest model (highest mean
    recorded cost) on it; where that cell is missing or 0, the query's highest recorded cost.

    Raises:
        UserError: a query with no positive recorded cost.
    """
    costs = np.asarray(table.cost_matrix(), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        priciest = int(np.nanargmax(np.nanmean(np.where(costs > 0, costs, np.nan), axis=0)))
    ref = costs[:, priciest].copy()
    bad = ~(ref > 0)
    if bad.any():
        ref[bad] = np.nanmax(np.where(costs[bad] > 0, costs[bad], np.nan), axis=1)
    if not np.all(ref > 0):
        qi = int(np.flatnonzero(~(ref > 0))[0])
        raise UserError(f"query {table.query_rows[qi].query_id!r} has no positive recorded "
                        "cost; the rl reward normalises cost by it (drop such queries)")
    return ref


def reward_of_run(grader: Grader, q: EvalQuery, result: RunResult, lam: float,
                  c_ref: float) -> Reward:
    """Grade a finished episode and price it (see the module docstring)."""
    err = format_error_of(result.steps)
    grade = 0.0
    if not err:
        try:
            grade = grader.grade(q, result.answer, result.events, result.answer_from)[0]
        except UserError:  # its own words on a free-text query: nothing recorded to grade by
            grade = 0.0
    return Reward(episode_reward(grade, result.cost_usd, lam, c_ref, err), grade,
                  float(result.cost_usd), float(c_ref), float(lam), err)


def sample_lam(rng: random.Random, grid: Sequence[float] = LAM_GRID) -> float:
    """One λ from ``grid``, uniformly.

    Raises:
        UserError: an empty grid or a negative value in it.
    """
    if not grid or any(x < 0 for x in grid):
        raise UserError(f"expected a non-empty λ grid of values >= 0 (got {list(grid)!r})")
    return float(rng.choice(list(grid)))

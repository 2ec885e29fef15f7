"""The policy interface: a read-only view of the run in, one action out.

A policy's :meth:`Policy.decide` receives a :class:`RunView` and returns

- :class:`Think` — a note added to the context of later calls (no model call by the runtime);
- :class:`Route` — one or several :class:`Call` (agent × model × prompt), run in parallel;
- :class:`Answer` — finish, with the given text or the best answer so far.

Policies register by name with :func:`~orchestra.policies.registry.register_policy`;
:func:`~orchestra.policies.resolve.resolve_policy` turns a name (``"cheapest"``,
``"single:gpt-4o"``), a recipe file (``policies/x.yaml``) or an instance into a policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from orchestra.budget import BudgetLeft
    from orchestra.spec import Pool

__all__ = [
    "Action",
    "Answer",
    "Call",
    "CallView",
    "Policy",
    "RoundView",
    "Route",
    "RunView",
    "Think",
]


@dataclass(frozen=True)
class Call:
    """One model call a policy asks for.

    Args:
        agent: agent name (``None``: the pool's default answer agent).
        model: model name (``None``: the agent's first model).
        prompt: the user message (``None``: the query, plus earlier answers when there are any).
        max_tokens: cap on output tokens (``None``: the model's ``max_output_tokens``).
    """

    agent: str | None = None
    model: str | None = None
    prompt: str | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class Think:
    """Add a note to the run's context; the policy is asked again."""

    note: str
    reason: str = ""
    scores: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """Call these (agent, model, prompt) in parallel, then refine their outputs."""

    calls: tuple[Call, ...]
    reason: str = ""
    scores: Mapping[str, Any] = field(default_factory=dict)

    def __init__(self, calls: Any, reason: str = "", scores: Mapping[str, Any] | None = None):
        object.__setattr__(self, "calls", tuple(calls))
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "scores", dict(scores or {}))


@dataclass(frozen=True)
class Answer:
    """Finish the run. ``text=None`` takes the best answer so far."""

    text: str | None = None
    reason: str = ""
    scores: Mapping[str, Any] = field(default_factory=dict)


Action: TypeAlias = Think | Route | Answer


@dataclass(frozen=True)
class CallView:
    """A finished call as a policy sees it."""

    agent: str
    model: str
    prompt: str
    output: str
    cost_usd: float
    input_tokens: int
    output_tokens: int
    latency_s: float
    error: str | None = None


@dataclass(frozen=True)
class RoundView:
    """One finished round: its calls and the refined answer."""

    index: int
    calls: tuple[CallView, ...]
    answer: str
    refiner: str
    conflicts: str | None = None


@dataclass(frozen=True)
class RunView:
    """Everything a policy may read, frozen.

    Attributes:
        query: the user's query.
        history: earlier conversation turns (``{"role", "content"}``) in a chat.
        rounds: finished rounds, oldest first.
        notes: notes added by Think actions.
        budget_left: what is left of every limit.
        pool: the pool (models, agents, prices, descriptions).
        round: index of the round being decided (== ``len(rounds)``).
        think_steps: Think actions taken so far.
        meta: run metadata given by the caller (e.g. ``task``, ``query_id``).
    """

    query: str
    history: tuple[Mapping[str, str], ...]
    rounds: tuple[RoundView, ...]
    notes: tuple[str, ...]
    budget_left: BudgetLeft
    pool: Pool
    round: int
    think_steps: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def best_answer(self) -> str | None:
        """The latest refined answer, or None before the first round."""
        for r in reversed(self.rounds):
            if r.answer:
                return r.answer
        return None

    @property
    def outputs(self) -> list[CallView]:
        """Every successful call so far, oldest first."""
        return [c for r in self.rounds for c in r.calls if c.error is None]


@runtime_checkable
class Policy(Protocol):
    """Decides the next action of a run. ``name`` appears in traces."""

    name: str

    def decide(self, view: RunView) -> Action:
        """Return the next action for this view."""
        ...

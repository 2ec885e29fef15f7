"""The policy interface: a read-only view of the run in, one action out.

A policy's :meth:`Policy.decide` (or ``async adecide``) receives a :class:`RunView` and returns

- :class:`Think` — a note added to the context of later calls (no model call by the runtime);
- :class:`Route` — one or several :class:`Call` (agent × model × prompt × system prompt), run
  in parallel, then merged (``Route.merge`` names the refiner for this round);
- :class:`Answer` — finish, with the given text or the best answer so far.

Optional hooks (interface v2):

- ``start(ctx: PolicyContext) -> decider``: per-run state. Called once per run (and again when
  a run resumes in a new process); the returned object's ``decide``/``adecide`` is then asked
  instead of the policy's. One policy instance serves concurrent runs; each run gets its own
  decider. ``ctx.complete(...)`` is the policy's own model call, reserved and charged like any
  call and traced with role ``policy``.
- ``observe(feedback: Feedback)``: what happened after the run (a score or reward given with
  :meth:`~orchestra.runtime.Orchestra.feedback`), for policies that learn online.

Policies register by name with :func:`~orchestra.policies.registry.register_policy`;
:func:`~orchestra.policies.resolve.resolve_policy` turns a name (``"cheapest"``,
``"single:gpt-4o"``), a recipe file (``policies/x.yaml``) or an instance into a policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from orchestra.budget import BudgetLeft
    from orchestra.spec import Pool

__all__ = [
    "Action",
    "Answer",
    "Call",
    "CallView",
    "DecisionView",
    "Feedback",
    "Policy",
    "PolicyContext",
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
        system: a system prompt for this call, instead of the agent's (a role the policy gives,
            e.g. "You are the critic: find the flaw in the answers so far.").
        role: a label for this call in the trace and the view (``"critic"``, ``"debater-1"``);
            ``None``: ``"route"``. The names ``refine`` and ``policy`` are the runtime's own.
    """

    agent: str | None = None
    model: str | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    system: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class Think:
    """Add a note to the run's context; the policy is asked again."""

    note: str
    reason: str = ""
    scores: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """Call these (agent, model, prompt) in parallel, then merge their outputs.

    ``merge`` names the refiner for this round (``"vote"``, ``"best"``, ``"concat"``,
    ``"llm"``... see :mod:`orchestra.refiners`); ``None``: the pool's refiner.
    """

    calls: tuple[Call, ...]
    reason: str = ""
    scores: Mapping[str, Any] = field(default_factory=dict)
    merge: str | None = None

    def __init__(self, calls: Any, reason: str = "", scores: Mapping[str, Any] | None = None,
                 merge: str | None = None):
        object.__setattr__(self, "calls", tuple(calls))
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "scores", dict(scores or {}))
        object.__setattr__(self, "merge", merge)


@dataclass(frozen=True)
class Answer:
    """Finish the run. ``text=None`` takes the best answer so far.

    ``from_call``: the ``call_id`` whose output is the answer (``text`` may then be left out:
    that call's output is taken). Without it, a ``text`` equal to one call's output is credited
    to that call; otherwise to the policy (``RunResult.answer_from == "policy"``).
    """

    text: str | None = None
    reason: str = ""
    scores: Mapping[str, Any] = field(default_factory=dict)
    from_call: str | None = None


Action: TypeAlias = Think | Route | Answer


@dataclass(frozen=True)
class CallView:
    """A finished call as a policy sees it (``role``: ``route`` or the label the policy gave,
    ``refine``, or ``policy`` for the policy's own calls)."""

    agent: str
    model: str
    prompt: str
    output: str
    cost_usd: float
    input_tokens: int
    output_tokens: int
    latency_s: float
    error: str | None = None
    call_id: str = ""
    role: str = "route"
    round: int = 0


@dataclass(frozen=True)
class DecisionView:
    """One of the run's earlier decisions (``action == "invalid"``: the policy returned something
    the runtime could not carry out; ``reason`` says what)."""

    round: int
    action: Literal["think", "route", "answer", "invalid"]
    reason: str
    scores: Mapping[str, Any]
    calls: tuple[str, ...] = ()
    note: str | None = None


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
        run_id: the run's id.
        decisions: the policy's earlier decisions in this run, oldest first.
        policy_calls: the policy's own model calls (``ctx.complete``), oldest first.
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
    run_id: str = ""
    decisions: tuple[DecisionView, ...] = ()
    policy_calls: tuple[CallView, ...] = ()

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


@dataclass(frozen=True)
class Feedback:
    """What a policy's ``observe`` learns after a run.

    Attributes:
        run_id: the run.
        query: its query.
        score: quality of the final answer in [0, 1] (graded, or a user's rating), if given.
        reward: any scalar the caller defines (e.g. ``score - λ·cost``), if given.
        answer: the run's answer.
        answer_from: the ``call_id`` (or ``"policy"``, ``"round:<i>"``) the answer came from.
        calls: every call of the run (route, refine and the policy's own), oldest first.
        decisions: the policy's decisions (with the ``scores`` it put on them), oldest first.
        cost_usd: what the run spent.
        meta: the run's metadata, plus what the caller attached to the feedback.
    """

    run_id: str
    query: str
    score: float | None = None
    reward: float | None = None
    answer: str | None = None
    answer_from: str | None = None
    calls: tuple[CallView, ...] = ()
    decisions: tuple[DecisionView, ...] = ()
    cost_usd: float = 0.0
    meta: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class PolicyContext(Protocol):
    """What :meth:`start` gets: the run, and a way to call a model on the run's budget."""

    run_id: str
    pool: Pool
    meta: Mapping[str, Any]

    async def complete(self, prompt: str, *, model: str | None = None, agent: str | None = None,
                       system: str | None = None, max_tokens: int | None = None) -> CallView:
        """Call a model for the policy itself: reserved and charged on the run's budget, traced
        with role ``policy``. A call the budget has no room for comes back with ``error`` set
        (nothing sent); a provider failure likewise."""
        ...


@runtime_checkable
class Policy(Protocol):
    """Decides the next action of a run. ``name`` appears in traces.

    A policy implements ``decide(view)`` or ``async adecide(view)`` (or both: the runtime
    awaits ``adecide``); optionally ``start(ctx)`` for per-run state and ``observe(feedback)``
    to learn after a run (see the module docstring). The protocol states only what every
    policy has; :func:`~orchestra.policies.resolve.resolve_policy` checks the rest.
    """

    name: str

"""Typed trace events: one stream feeds the CLI, ``astream``, the SQLite store and the viewer.

Every event is a small frozen dataclass with a ``kind`` literal, the ``run_id``, a per-run
sequence number ``seq`` and a wall-clock timestamp ``ts`` (seconds since the epoch). Events are
plain data: :func:`event_to_dict` / :func:`event_from_dict` round-trip them through JSON.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = [
    "INTERRUPTED",
    "CallFinished",
    "CallStarted",
    "ErrorEvent",
    "Event",
    "EventKind",
    "FeedbackGiven",
    "PolicyDecided",
    "Refined",
    "RunFinished",
    "RunStarted",
    "event_from_dict",
    "event_to_dict",
]

EventKind = Literal[
    "run_started", "policy_decided", "call_started", "call_finished", "refined", "run_finished",
    "error", "feedback",
]


def _now() -> float:
    return time.time()


@dataclass(frozen=True, kw_only=True)
class _Base:
    run_id: str
    seq: int = 0
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, kw_only=True)
class RunStarted(_Base):
    """A run began (or resumed, when ``resumed`` is true)."""

    kind: Literal["run_started"] = "run_started"
    query: str
    pool: str
    policy: str
    budget: dict[str, Any]
    models: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    resumed: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PolicyDecided(_Base):
    """The policy chose an action. ``calls`` are the planned calls that fit the budget;
    ``dropped`` those refused by the ledger (with the limit that refused them)."""

    kind: Literal["policy_decided"] = "policy_decided"
    round: int
    #: ``invalid``: the policy returned an action the runtime could not carry out (``reason``)
    action: Literal["think", "route", "answer", "invalid"]
    reason: str = ""
    scores: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    budget_left: dict[str, Any] = field(default_factory=dict)
    latency_s: float = 0.0
    #: the refiner this decision chose for its round (``None``: the pool's)
    merge: str | None = None


@dataclass(frozen=True, kw_only=True)
class CallStarted(_Base):
    """A model call was sent, with its reserved worst case."""

    kind: Literal["call_started"] = "call_started"
    round: int
    call_id: str
    agent: str
    model: str
    model_id: str
    messages: list[dict[str, Any]]
    max_tokens: int
    reserved_usd: float
    #: ``route`` (or the label the policy gave the call), ``refine``, ``policy`` (its own call)
    role: str = "route"


@dataclass(frozen=True, kw_only=True)
class CallFinished(_Base):
    """A model call returned (``error`` set when it failed; its cost is still recorded).

    ``overrun`` is set when the call was charged more than its reservation (``reserved_usd,
    charged_usd, excess_usd, reserved_tokens, charged_tokens, excess_tokens, reason``): the
    run then stops with ``budget_overrun``. ``usage_note`` says what was wrong with the usage
    the provider reported (missing, negative, understated), when something was.
    """

    kind: Literal["call_finished"] = "call_finished"
    round: int
    call_id: str
    agent: str
    model: str
    model_id: str
    output: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    #: ``route`` (or the label the policy gave the call), ``refine``, ``policy`` (its own call)
    role: str = "route"
    error: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 1
    budget_left: dict[str, Any] = field(default_factory=dict)
    overrun: dict[str, Any] | None = None
    usage_note: str | None = None


@dataclass(frozen=True, kw_only=True)
class Refined(_Base):
    """The refiner merged a round's outputs."""

    kind: Literal["refined"] = "refined"
    round: int
    refiner: str
    inputs: list[dict[str, Any]]
    output: str
    conflicts: str | None = None
    votes: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    budget_left: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RunFinished(_Base):
    """The run ended: ``stop_reason`` says why (answered, budget:<limit>, budget_overrun,
    think_limit, error). ``overruns``: the calls charged above their reservation (``call_id,
    agent, model`` and the fields of :attr:`CallFinished.overrun`)."""

    kind: Literal["run_finished"] = "run_finished"
    answer: str | None
    stop_reason: str
    status: Literal["ok", "budget", "error"]
    cost_usd: float
    input_tokens: int
    output_tokens: int
    calls: int
    rounds: int
    duration_s: float
    overruns: list[dict[str, Any]] = field(default_factory=list)
    #: the call id the answer came from (``"policy"``: a text the policy wrote)
    answer_from: str | None = None


@dataclass(frozen=True, kw_only=True)
class FeedbackGiven(_Base):
    """Feedback on a finished run (:meth:`~orchestra.runtime.Orchestra.feedback`): a score of
    the answer in [0, 1] and/or a reward, and what the policy made of it (``observed``)."""

    kind: Literal["feedback"] = "feedback"
    score: float | None = None
    reward: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    observed: bool = False


#: ``ErrorEvent.error_type`` of a run stopped from outside (Ctrl-C, a cancelled task): the run
#: did not fail, and a durable one can be resumed.
INTERRUPTED = "Interrupted"


@dataclass(frozen=True, kw_only=True)
class ErrorEvent(_Base):
    """Something failed; ``where`` names the step (policy, dispatch, refine, run). A fatal one
    with ``error_type`` :data:`INTERRUPTED` marks a run stopped from outside."""

    kind: Literal["error"] = "error"
    where: str
    error_type: str
    message: str
    round: int | None = None
    fatal: bool = False


Event: TypeAlias = (RunStarted | PolicyDecided | CallStarted | CallFinished | Refined
                    | RunFinished | ErrorEvent | FeedbackGiven)

_BY_KIND: dict[str, type[Any]] = {
    str(c.__dataclass_fields__["kind"].default): c
    for c in (RunStarted, PolicyDecided, CallStarted, CallFinished, Refined, RunFinished,
              ErrorEvent, FeedbackGiven)
}


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of the event (``kind`` included)."""
    return dataclasses.asdict(event)


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from :func:`event_to_dict` output (unknown keys are ignored)."""
    cls = _BY_KIND.get(data.get("kind", ""))
    if cls is None:
        raise ValueError(f"unknown event kind {data.get('kind')!r}; known: {sorted(_BY_KIND)}")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[no-any-return]

"""The graph's state (what changes during a run) and the run context (what does not).

State values are plain JSON-like data so LangGraph's SQLite checkpointer can persist them and a run
can resume after a crash. Lists that several parallel branches append to use ``operator.add``
reducers. The records kept in the state are typed below (TypedDicts: plain dicts at run time,
checked by mypy): :class:`StepRecord` per policy decision, :class:`PlannedCall` per call the
route step plans (one ``Send`` to dispatch each), :class:`CallRecord` per finished model call,
:class:`RoundRecord` per refined round, :class:`FinalRecord` once the run ends.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, NotRequired, TypedDict

if TYPE_CHECKING:
    from orchestra.backends.base import Backend
    from orchestra.budget import Ledger
    from orchestra.durable import DurableRun
    from orchestra.policies.base import Policy
    from orchestra.spec import Pool
    from orchestra.trace.emitter import Emitter

__all__ = [
    "RUNTIME_ROLES",
    "CallRecord",
    "DispatchInput",
    "DroppedCall",
    "FinalRecord",
    "PlannedCall",
    "ReservationRecord",
    "RoundRecord",
    "RunContext",
    "RunState",
    "StepCall",
    "StepRecord",
    "is_route_call",
]


class ReservedCost(TypedDict):
    """The worst case a reservation holds (:class:`~orchestra.budget.CallCost` as JSON)."""

    usd: float
    input_tokens: int
    output_tokens: int


class ReservationRecord(TypedDict):
    """A ledger reservation as the state keeps it (so a resumed run can make it again)."""

    id: int
    cost: ReservedCost


class PlannedCall(TypedDict):
    """A call the route (or refine) step planned: what dispatch sends."""

    call_id: str
    round: int
    role: str
    agent: str
    model: str
    model_id: str
    prompt: str
    messages: list[dict[str, Any]]
    max_tokens: int
    tools: NotRequired[bool]
    reservation: NotRequired[ReservationRecord]


class CallRecord(TypedDict):
    """A finished model call (``requests``: model requests made, tool follow-ups included;
    ``overrun``: what was charged above the reservation, with a reason; ``usage_note``: what
    was wrong with the usage the provider reported)."""

    call_id: str
    round: int
    role: str
    agent: str
    model: str
    model_id: str
    prompt: str
    output: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    error: str | None
    tool_calls: list[dict[str, Any]]
    requests: int
    overrun: dict[str, Any] | None
    usage_note: str | None


class StepCall(TypedDict):
    """A planned call as a decision step lists it."""

    call_id: str
    agent: str
    model: str
    max_tokens: int
    reserved_usd: float


class DroppedCall(TypedDict):
    """A call the policy asked for that no budget limit left room for (``limit`` names it)."""

    agent: str
    model: str
    limit: str


class StepRecord(TypedDict):
    """One policy decision (``invalid``: an action the runtime could not carry out; ``reason``
    says why). ``merge``: the refiner the decision chose for its round (``None``: the pool's)."""

    round: int
    action: Literal["think", "route", "answer", "invalid"]
    reason: str
    scores: dict[str, Any]
    note: str | None
    calls: list[StepCall]
    dropped: list[DroppedCall]
    merge: NotRequired[str | None]


class RoundRecord(TypedDict):
    """A refined round: its answer, how it was merged, and the call whose output the answer is
    (``answer_from``: a route call's id, or the refiner call's)."""

    index: int
    answer: str
    refiner: str
    conflicts: str | None
    votes: dict[str, int]
    answer_from: NotRequired[str | None]


class FinalRecord(TypedDict):
    """How the run ended; ``answer_from``: the call id the answer came from, ``"policy"`` for a
    text the policy wrote itself, ``None`` without an answer."""

    answer: str | None
    stop_reason: str
    answer_from: NotRequired[str | None]


#: Call roles the runtime gives; every other role is a route call (``route`` or a policy's label).
RUNTIME_ROLES = frozenset({"refine", "policy"})


def is_route_call(call: CallRecord | PlannedCall) -> bool:
    """Whether a call answers the round's question (a route call, whatever label it carries)."""
    return call["role"] not in RUNTIME_ROLES


class RunState(TypedDict, total=False):
    """What a run accumulates. Appended lists are merged across parallel branches."""

    run_id: str
    query: str
    history: list[dict[str, str]]
    meta: dict[str, Any]
    notes: Annotated[list[str], operator.add]
    steps: Annotated[list[StepRecord], operator.add]
    calls: Annotated[list[CallRecord], operator.add]
    rounds: Annotated[list[RoundRecord], operator.add]
    plan: list[PlannedCall]
    think_steps: int
    final: FinalRecord | None


class DispatchInput(TypedDict):
    """What one parallel branch (a ``Send`` to ``dispatch``) receives: one planned call."""

    call: PlannedCall
    query: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class RunContext:
    """Run-scoped objects that never change during an invocation (LangGraph ``context_schema``).

    The ledger is the one mutable object reached from here: it is rebuilt from the checkpointed
    state at every invocation, so a resumed run starts from what was really spent. ``journal``
    (durable runs) records each finished call before its event; a call found there is never sent
    again.
    """

    run_id: str
    pool: Pool
    policy: Policy
    backend: Backend
    ledger: Ledger
    emitter: Emitter
    max_think_steps: int = 8
    min_output_tokens: int = 16
    max_tool_steps: int = 4
    options: dict[str, Any] = field(default_factory=dict)
    journal: DurableRun | None = None
    #: what is asked for decisions: the policy, or the per-run decider its ``start`` returned
    decider: Any = None
    #: the policy's handle on the run (:class:`~orchestra._nodes.policy_calls.PolicyCalls`)
    policy_calls: Any = None
    #: what an invalid action does: ``fallback`` (record it, answer or take the default route)
    #: or ``raise`` (a RoutingError)
    on_invalid: Literal["fallback", "raise"] = "fallback"

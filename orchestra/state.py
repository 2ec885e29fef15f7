"""The graph's state (what changes during a run) and the run context (what does not).

State values are plain JSON-like data so LangGraph's SQLite checkpointer can persist them and a run
can resume after a crash. Lists that several parallel branches append to use ``operator.add``
reducers.

Records kept in the state:

``steps``: one per policy decision ``{round, action, reason, scores, note, calls, dropped}``.
``calls``: one per finished model call ``{call_id, round, role, agent, model, model_id, prompt,
output, input_tokens, output_tokens, cost_usd, latency_s, error}``.
``rounds``: one per refined round ``{index, answer, refiner, conflicts, votes}``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

if TYPE_CHECKING:
    from orchestra.backends.base import Backend
    from orchestra.budget import Ledger
    from orchestra.durable import RunFile
    from orchestra.policies.base import Policy
    from orchestra.trace.emitter import Emitter
    from orchestra.spec import Pool

__all__ = ["RunState", "RunContext", "DispatchInput"]


class RunState(TypedDict, total=False):
    """What a run accumulates. Appended lists are merged across parallel branches."""

    run_id: str
    query: str
    history: list[dict[str, str]]
    meta: dict[str, Any]
    notes: Annotated[list[str], operator.add]
    steps: Annotated[list[dict[str, Any]], operator.add]
    calls: Annotated[list[dict[str, Any]], operator.add]
    rounds: Annotated[list[dict[str, Any]], operator.add]
    plan: list[dict[str, Any]]
    think_steps: int
    final: dict[str, Any] | None


class DispatchInput(TypedDict):
    """What one parallel branch (a ``Send`` to ``dispatch``) receives: one planned call."""

    call: dict[str, Any]
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
    journal: RunFile | None = None

"""build_graph(): route → dispatch (fan-out with Send) → route … → END.

Each round is route (decide, reserve) → dispatch ×k in parallel → the next route step, which
first refines the round's outputs (``orchestra._nodes.refine.refine_round``) and then decides
again: route → dispatch → refine → route, in two LangGraph supersteps per round.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from orchestra._nodes import dispatch_node, route_node
from orchestra._state import RunContext, RunState

__all__ = ["build_graph"]


async def _after_route(state: RunState) -> Any:
    # async on purpose: LangGraph runs a sync edge function in a thread pool (a thread hop per
    # round that was ~20% of the runtime's own overhead).
    if state.get("final"):
        return END
    plan = state.get("plan") or []
    if not plan:  # a Think: ask the policy again
        return "route"
    return [Send("dispatch", {"call": c, "query": state["query"], "meta": state.get("meta") or {}})
            for c in plan]


def build_graph(checkpointer: Any = None) -> Any:
    """Compile the run graph.

    Args:
        checkpointer: a LangGraph checkpointer (e.g. ``AsyncSqliteSaver``) for durable runs.
    """
    g = StateGraph(RunState, context_schema=RunContext)
    g.add_node("route", route_node)
    g.add_node("dispatch", dispatch_node)  # type: ignore[call-overload]  # input is a Send payload
    g.add_edge(START, "route")
    g.add_conditional_edges("route", _after_route, ["route", "dispatch", END])
    g.add_edge("dispatch", "route")
    return g.compile(checkpointer=checkpointer)

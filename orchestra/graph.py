"""build_graph(): route → dispatch (fan-out with Send) → refine → route … → END."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from orchestra.nodes import dispatch_node, refine_node, route_node
from orchestra.state import RunContext, RunState

__all__ = ["build_graph"]


def _after_route(state: RunState) -> Any:
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
    g.add_node("refine", refine_node)
    g.add_edge(START, "route")
    g.add_conditional_edges("route", _after_route, ["route", "dispatch", END])
    g.add_edge("dispatch", "refine")
    g.add_edge("refine", "route")
    return g.compile(checkpointer=checkpointer)

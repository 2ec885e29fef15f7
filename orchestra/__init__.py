"""orchestra: route / think / aggregate loops over pools of agents and models, under hard budgets.

The public SDK::

    from orchestra import Orchestra, Pool, Budget
    result = Orchestra("local", policy="ensemble", budget=Budget(usd=0.001)).run("...")

Heavy dependencies (LangGraph, litellm, torch, Ray, llama.cpp) are imported on first use, so
``import orchestra`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestra.errors import (
    BackendError,
    OrchestraError,
    RoutingError,
    RunError,
    UserError,
)

if TYPE_CHECKING:
    from orchestra.backends.base import Backend, Completion, CompletionRequest
    from orchestra.budget import BudgetLeft
    from orchestra.policies.base import (
        Action,
        Answer,
        Call,
        CallView,
        DecisionView,
        Feedback,
        Policy,
        PolicyContext,
        RoundView,
        Route,
        RunView,
        Think,
    )
    from orchestra.policies.registry import register_policy
    from orchestra.policies.resolve import resolve_policy
    from orchestra.runtime import ChatSession, Orchestra, RunResult
    from orchestra.spec import AgentSpec, Budget, Example, ModelSpec, Pool, RefinerSpec, ToolSpec
    from orchestra.trace.events import Event
    from orchestra.trace.store import MemoryTraceStore, SQLiteTraceStore, TraceStore

__version__ = "0.1.0"

__all__ = [
    "Action",
    "AgentSpec",
    "Answer",
    # writing a backend
    "Backend",
    "BackendError",
    "Budget",
    "BudgetLeft",
    "Call",
    "CallView",
    "ChatSession",
    "Completion",
    "CompletionRequest",
    "DecisionView",
    # traces
    "Event",
    "Example",
    "Feedback",
    "MemoryTraceStore",
    "ModelSpec",
    "Orchestra",
    "OrchestraError",
    # writing a policy
    "Policy",
    "PolicyContext",
    "Pool",
    "RefinerSpec",
    "RoundView",
    "Route",
    "RoutingError",
    "RunError",
    "RunResult",
    "RunView",
    "SQLiteTraceStore",
    "Think",
    "ToolSpec",
    "TraceStore",
    "UserError",
    "register_policy",
    "resolve_policy",
]

_LAZY = {
    "Orchestra": "orchestra.runtime", "RunResult": "orchestra.runtime",
    "ChatSession": "orchestra.runtime",
    # pydantic models: imported on first use, so the CLI's --help and listings skip pydantic.
    **dict.fromkeys(["Pool", "ModelSpec", "AgentSpec", "RefinerSpec", "ToolSpec", "Budget",
                     "Example"], "orchestra.spec"),
    **dict.fromkeys(["Policy", "Action", "Call", "Route", "Think", "Answer", "RunView",
                     "RoundView", "CallView", "DecisionView", "Feedback", "PolicyContext"],
                    "orchestra.policies.base"),
    "BudgetLeft": "orchestra.budget",
    **dict.fromkeys(["Backend", "CompletionRequest", "Completion"], "orchestra.backends.base"),
    "Event": "orchestra.trace.events",
    **dict.fromkeys(["TraceStore", "SQLiteTraceStore", "MemoryTraceStore"],
                    "orchestra.trace.store"),
    "register_policy": "orchestra.policies.registry", "resolve_policy": "orchestra.policies.resolve",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'orchestra' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)

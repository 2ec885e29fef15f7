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
    BudgetExceeded,
    OrchestraError,
    RoutingError,
    RunError,
    UserError,
)

if TYPE_CHECKING:
    from orchestra.policies.base import Answer, Call, Policy, Route, RunView, Think
    from orchestra.runtime import ChatSession, Orchestra, RunResult
    from orchestra.spec import AgentSpec, Budget, Example, ModelSpec, Pool, RefinerSpec, ToolSpec

__version__ = "0.1.0"

__all__ = [
    "Orchestra", "RunResult", "ChatSession",
    "Pool", "ModelSpec", "AgentSpec", "RefinerSpec", "ToolSpec", "Budget", "Example",
    "Policy", "RunView", "Call", "Route", "Think", "Answer", "register_policy", "resolve_policy",
    "OrchestraError", "UserError", "RunError", "BackendError", "BudgetExceeded", "RoutingError",
]

_LAZY = {
    "Orchestra": "orchestra.runtime", "RunResult": "orchestra.runtime",
    "ChatSession": "orchestra.runtime",
    # pydantic models: imported on first use, so the CLI's --help and listings skip pydantic.
    **dict.fromkeys(["Pool", "ModelSpec", "AgentSpec", "RefinerSpec", "ToolSpec", "Budget",
                     "Example"], "orchestra.spec"),
    "Policy": "orchestra.policies.base", "RunView": "orchestra.policies.base",
    "Call": "orchestra.policies.base", "Route": "orchestra.policies.base",
    "Think": "orchestra.policies.base", "Answer": "orchestra.policies.base",
    "register_policy": "orchestra.policies.registry", "resolve_policy": "orchestra.policies.resolve",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'orchestra' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)

"""Routing policies: the protocol, the registry, baselines and learned policies."""

from orchestra.policies.base import (
    Action,
    Answer,
    Call,
    CallView,
    Policy,
    RoundView,
    Route,
    RunView,
    Think,
    policy_names,
    register_policy,
    resolve_policy,
)

__all__ = [
    "Action", "Answer", "Call", "CallView", "Policy", "RoundView", "Route", "RunView", "Think",
    "policy_names", "register_policy", "resolve_policy",
]

"""Routing policies: the interface (:mod:`~orchestra.policies.base`), the registry
(:mod:`~orchestra.policies.registry`), name/recipe resolution (:mod:`~orchestra.policies.resolve`),
baselines and learned policies."""

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
)
from orchestra.policies.registry import register_policy
from orchestra.policies.resolve import policy_names, resolve_policy

__all__ = [
    "Action", "Answer", "Call", "CallView", "Policy", "RoundView", "Route", "RunView", "Think",
    "policy_names", "register_policy", "resolve_policy",
]

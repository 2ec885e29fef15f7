"""Where policies register by name (:func:`register_policy`). A leaf: the built-in policies
import it to register themselves; :mod:`orchestra.policies.resolve` reads it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeAlias

from orchestra.policies.base import Policy

__all__ = ["PolicyFactory", "register_policy", "registered"]

PolicyFactory: TypeAlias = Callable[..., Policy]
_REGISTRY: dict[str, PolicyFactory] = {}
_DOCS: dict[str, str] = {}


def register_policy(name: str, factory: PolicyFactory | None = None, *, doc: str = "") -> Any:
    """Register a policy factory under ``name`` (usable as a decorator).

    The factory is called as ``factory(pool, arg=<text after ':'>, **params)``; it may omit the
    ``arg`` / ``pool`` parameters it does not need.
    """

    def deco(f: PolicyFactory) -> PolicyFactory:
        _REGISTRY[name] = f
        _DOCS[name] = doc or (inspect.getdoc(f) or "").split("\n")[0]
        return f

    return deco(factory) if factory is not None else deco


def registered() -> tuple[dict[str, PolicyFactory], dict[str, str]]:
    """The registered factories and their one-line docs (live dicts: read, do not modify)."""
    return _REGISTRY, _DOCS

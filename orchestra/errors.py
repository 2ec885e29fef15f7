"""The exception hierarchy.

``OrchestraError`` is the root. ``UserError`` means a configuration mistake that is caught
before any model is called; its message quotes the bad value and names the fix.
``RunError`` and its subclasses happen while a run executes. A budget limit is never an error:
a run that reaches one stops with ``stop_reason`` naming it (``budget:usd``, ``budget_overrun``).

Exceptions never log; only the CLI formats them.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "OrchestraError",
    "RoutingError",
    "RunError",
    "UserError",
]


class OrchestraError(Exception):
    """Base class of every error raised by orchestra."""


class UserError(OrchestraError, ValueError):
    """Bad configuration or input, detected before any model is called.

    The message says what was expected, what was got (quoted with ``!r``) and how to fix it.
    """


class RunError(OrchestraError, RuntimeError):
    """Something failed while a run was executing."""


class BackendError(RunError):
    """A model provider call failed (after retries). Wraps the provider's exception once.

    Attributes:
        model: the litellm model id that was called.
        transient: whether the cause looked transient (rate limit, timeout, 5xx).
        billed_unknown: the provider may have billed the call (a timeout, a reply that could not
            be read): the runtime charges at least the call's whole reservation.
        usage: ``(input_tokens, output_tokens)`` the provider billed for a reply it sent but
            that held no usable answer; the runtime charges it.
    """

    def __init__(self, message: str, *, model: str, transient: bool = False,
                 billed_unknown: bool = False, usage: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.transient = transient
        self.billed_unknown = billed_unknown
        self.usage = usage


class RoutingError(RunError):
    """A policy returned an invalid action (unknown agent/model, empty route, ...)."""

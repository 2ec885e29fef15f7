"""Trace events and stores."""

from orchestra.trace.events import (
    CallFinished,
    CallStarted,
    ErrorEvent,
    Event,
    PolicyDecided,
    Refined,
    RunFinished,
    RunStarted,
    event_from_dict,
    event_to_dict,
)
from orchestra.trace.store import MemoryTraceStore, SQLiteTraceStore, TraceStore

__all__ = [
    "CallFinished",
    "CallStarted",
    "ErrorEvent",
    "Event",
    "MemoryTraceStore",
    "PolicyDecided",
    "Refined",
    "RunFinished",
    "RunStarted",
    "SQLiteTraceStore",
    "TraceStore",
    "event_from_dict",
    "event_to_dict",
]

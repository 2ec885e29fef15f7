"""The :class:`Emitter`: how a run's events get their numbers, reach the store and then the
listeners, in that order (so a crash leaves every event a listener has seen in the store)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from orchestra.trace.events import Event
from orchestra.trace.store import TraceStore

__all__ = ["Emitter"]


class Emitter:
    """Numbers events, stores them, and hands them to listeners (CLI, ``astream``)."""

    def __init__(self, run_id: str, store: TraceStore | None, start_seq: int = 0) -> None:
        self.run_id = run_id
        self.store = store
        self._seq = start_seq
        self._lock = threading.Lock()
        self.listeners: list[Callable[[Event], None]] = []

    def emit(self, event: Event) -> Event:
        with self._lock:
            # Events are frozen; numbering in place is cheaper than dataclasses.replace.
            object.__setattr__(event, "seq", self._seq)
            self._seq += 1
            if self.store is not None:
                self.store.append(event)
        for listener in list(self.listeners):
            listener(event)
        return event

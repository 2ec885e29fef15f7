"""Whether a run the store has as ``running`` is still going.

A run's process records ``run_finished`` (or a fatal ``error``) when it ends; one that was
killed or crashed never does, so its row stays ``running``. :func:`as_shown` tells the two
apart (the store records who writes each run: :func:`~orchestra.trace._process.writer_identity`)
and shows a dead run as ``interrupted``, with why and the command that resumes it. The viewer
and ``orchestra traces list/show`` both use it.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from orchestra.trace._process import writer_gone
from orchestra.trace.store import TraceStore

__all__ = ["STALE_AFTER_S", "as_shown", "resume_command"]

#: A ``running`` run whose process cannot be checked from here (another host or container) is
#: shown as interrupted after this long without an event.
STALE_AFTER_S = 3600.0


def ago(seconds: float) -> str:
    """``42 s``, ``7 min``, ``3.5 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def resume_command(run_id: str) -> str:
    """The shell command that continues ``run_id``."""
    return f"orchestra resume {shlex.quote(run_id)}"


def _why_gone(store: TraceStore, run: dict[str, Any], stale_after_s: float) -> str | None:
    """Why the run's process is known to be gone, or None when it is not."""
    writer = run.get("writer") if isinstance(run.get("writer"), dict) else None
    who = (f"process {writer.get('pid')} on {writer.get('host')!r}" if writer
           else "its process")
    gone = writer_gone(writer)
    if gone is not None:
        return f"{who} is gone (killed or crashed)" if gone else None
    last = store.events(run["run_id"], after_seq=store.last_seq(run["run_id"]) - 1)
    ts = last[-1].get("ts") if last else run.get("started_at")
    silent = time.time() - float(ts or 0.0)
    if silent < stale_after_s:
        return None
    return f"no event for {ago(silent)} and {who} cannot be checked from this machine"


def as_shown(store: TraceStore, run: dict[str, Any], *,
             stale_after_s: float = STALE_AFTER_S) -> dict[str, Any]:
    """The run as people are shown it: a ``running`` run whose process is gone becomes
    ``interrupted``, with ``stop_reason`` (why) and ``resume`` (the command to continue it).
    A run that ended by an interruption the process saw (Ctrl-C) gets ``resume`` too."""
    for _ in range(3):  # a resume may take the run over meanwhile: look again
        if run.get("status") == "interrupted":
            return {**run, "resume": resume_command(run["run_id"])}
        if run.get("status") != "running":
            return run
        why = _why_gone(store, run, stale_after_s)
        if why is None:
            return run
        # Read the row again: the process may have recorded the end just before it exited.
        fresh = store.get_run(run["run_id"])
        if fresh is None or fresh.get("status") != "running":
            return fresh or run
        if fresh.get("writer") == run.get("writer"):
            return {**fresh, "status": "interrupted", "stop_reason": f"interrupted: {why}",
                    "resume": resume_command(fresh["run_id"])}
        run = fresh
    return run

"""Who writes a run, and whether that process is still there.

The trace store records :func:`writer_identity` with each ``run_started`` (the ``writer``
column); the viewer asks :func:`writer_gone` to tell a run that is still going from one whose
process was killed or crashed (it stays ``running`` in the store forever).

A pid alone is not enough: pids are reused, and another container on the same machine may
show the same hostname with its own pid space. So the identity also holds the process's start
time (Linux: ``/proc/<pid>/stat`` field 22 with the boot id) and its pid namespace; where these
cannot be read the answer is "cannot tell" rather than a guess.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from functools import cache
from typing import Any

__all__ = ["writer_gone", "writer_identity"]

_PROC = "/proc"


@cache
def _boot_id() -> str | None:
    try:
        with open(f"{_PROC}/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, str] | None:
    """``(state, start ticks)`` of a process from ``/proc/<pid>/stat``; None when unreadable."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # the command name may hold spaces and ")"
    if len(fields) < 20:
        return None
    return fields[0], fields[19]  # fields 3 (state) and 22 (starttime) of proc(5)


def _start_token(pid: int) -> str | None:
    stat, boot = _stat(pid), _boot_id()
    return f"{boot}/{stat[1]}" if stat and boot else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink(f"{_PROC}/self/ns/pid")
    except OSError:
        return None


def writer_identity() -> dict[str, Any]:
    """This process: ``{"pid", "host", "start", "pidns"}`` (``start``/``pidns``: None where the
    system does not expose them)."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "start": _start_token(pid),
            "pidns": _pid_namespace()}


def writer_gone(writer: Mapping[str, Any] | None) -> bool | None:
    """Whether the process described by ``writer`` (from :func:`writer_identity`) has exited.

    Returns:
        True when it has (no such pid, a zombie, or a different process now holds the pid),
        False when it is running, None when this process cannot tell (no identity recorded,
        another host, another pid namespace, or a system without ``/proc`` nor ``kill(pid, 0)``).
    """
    if not writer or not isinstance(writer.get("pid"), int) or writer["pid"] <= 0:
        return None
    if writer.get("host") != socket.gethostname():
        return None
    if writer.get("pidns") != _pid_namespace():
        return None
    pid: int = writer["pid"]
    if os.path.isdir(f"{_PROC}/self"):
        stat = _stat(pid)
        if stat is None:
            return True
        if stat[0] in ("Z", "X"):  # exited, not yet reaped by its parent
            return True
        start = writer.get("start")
        return start is not None and start != _start_token(pid)
    if sys.platform == "win32":  # os.kill would terminate the process there
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, owned by someone else
        return False
    except OSError:
        return None
    return False

"""``orchestra viewer``: serve the trace viewer over a trace store.

The lead CLI mounts :func:`viewer_command` as ``orchestra viewer``; a
:class:`~orchestra.errors.UserError` (missing or corrupt store, port in use) propagates to the
CLI's entry point, which prints it as one line.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from orchestra.errors import UserError

__all__ = ["viewer_command"]


def viewer_command(
    db: Annotated[Path | None, typer.Option(
        "--db", help="Trace store file (default: $ORCHESTRA_TRACE_DB or the user data dir).")] = None,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on. The default, loopback, keeps traces on this machine.",
    )] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0 picks a free one).")] = 8765,
    open_browser: Annotated[bool, typer.Option(
        "--open/--no-open", help="Open the viewer in the default web browser.")] = False,
) -> None:
    """Browse stored runs in a web page: timelines, live runs, comparisons and costs."""
    from orchestra.trace.viewer.server import _is_loopback, create_server

    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535 (got {port!r})")
    server = create_server(db, host, port, quiet=True)
    path = getattr(server.api.store, "path", db)
    out = sys.stdout
    out.write(f"orchestra viewer: {path} at {server.url}  (Ctrl+C to stop)\n")
    if not _is_loopback(host):
        sys.stderr.write(
            f"warning: listening on {host!r}: every machine that can reach it can read the "
            "prompts and outputs of your runs; use --host 127.0.0.1 to keep them local\n"
        )
    out.flush()
    if open_browser:
        import webbrowser

        threading.Timer(0.3, webbrowser.open, args=(server.url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
        server.api.store.close()

"""``orchestra viewer``: serve the trace viewer over a trace store.

The lead CLI mounts :func:`viewer_command` as ``orchestra viewer``; a
:class:`~orchestra.errors.UserError` (missing or corrupt store, port in use) propagates to the
CLI's entry point, which prints it as one line.
"""

from __future__ import annotations

import sys
import threading
from typing import Annotated

import typer

from orchestra.errors import UserError

__all__ = ["viewer_command"]


def viewer_command(
    db: Annotated[str | None, typer.Option(
        "--db", help="Trace store file or postgresql:// URL (default: $ORCHESTRA_TRACE_DB or "
                     "the user data dir).")] = None,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on. The default, loopback, keeps traces on this machine; "
                       "any other needs the access token.",
    )] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0 picks a free one).")] = 8765,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="ORCHESTRA_VIEWER_TOKEN", show_envvar=True,
        help="Access token to require (16+ of A-Z a-z 0-9 . _ ~ -). Default: none on loopback, "
             "a new one printed at start otherwise. Prefer the environment variable: "
             "a command line is visible to other users.")] = None,
    allow_host: Annotated[list[str] | None, typer.Option(
        "--allow-host", help="Another host name the browser may use to reach the viewer "
                             "(NAME or NAME:PORT; repeatable), e.g. behind a proxy.")] = None,
    open_browser: Annotated[bool, typer.Option(
        "--open/--no-open", help="Open the viewer in the default web browser.")] = False,
) -> None:
    """Browse stored runs in a web page: timelines, live runs, comparisons and costs."""
    import socket

    from orchestra.trace.viewer.server import create_server

    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535 (got {port!r})")
    server = create_server(db, host, port, quiet=True, token=token or None,
                           allow_hosts=allow_host or ())
    path = getattr(server.api.store, "path", db)
    out = sys.stdout
    out.write(f"orchestra viewer: {path} at {server.url}  (Ctrl+C to stop)\n")
    if not server.loopback:
        sys.stderr.write(
            f"warning: listening on {host!r}: other machines can reach it; every request needs "
            "the access token, sent over plain HTTP: use it on a trusted network or behind TLS\n"
        )
        if server.token_generated:
            # Printed once: the only place it is ever shown.
            named = server.access_url.replace(server.url, f"http://{socket.gethostname()}:"
                                                          f"{server.port}/")
            out.write(f"access token: {server.token}\n  open {server.access_url}\n"
                      f"  or   {named}\n")
    out.flush()
    if open_browser:
        import webbrowser

        threading.Timer(0.3, webbrowser.open, args=(server.access_url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
        server.api.store.close()

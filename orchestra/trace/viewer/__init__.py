"""The trace viewer: a local web app over the trace store (``orchestra viewer``).

The server lives in :mod:`orchestra.trace.viewer.server` (imported on first use so that
``import orchestra`` stays light); its module docstring documents the JSON API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestra.trace.viewer.server import ViewerServer

__all__ = ["ViewerServer", "create_server"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from orchestra.trace.viewer import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

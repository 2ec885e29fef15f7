"""The trace viewer's HTTP server: a JSON API and a single-page app over a trace store.

``orchestra viewer`` starts :class:`ViewerServer` (stdlib :class:`http.server.ThreadingHTTPServer`:
no web framework to install, one thread per connection, which a local tool for one user needs
and no more). The store is opened read-only; the runtime may write to it at the same time (SQLite
WAL), and the viewer shows new runs and new events as they arrive.

The page (``static/``) is vanilla JavaScript and CSS served from this package: no CDN, no
network. Every model output and prompt is put in the page as text (``textContent``), and the
page's Content-Security-Policy allows only the viewer's own scripts.

JSON API
--------
Every route is ``GET``; bodies are JSON (UTF-8). Errors are ``{"error": message, "status": code}``
with status 400 (bad parameter: the message quotes it), 404 (unknown run or route), 405 (not GET)
or 500.

``GET /api/runs``
    Run summaries, filtered, sorted and paged. Query parameters: ``limit`` (1-500, default 50),
    ``offset`` (default 0), ``search`` (substring of query, answer or run id), ``status``
    (``running``, ``ok``, ``budget`` or ``error``), ``policy``, ``pool``, ``sort`` (``started_at``,
    ``cost_usd``, ``calls``, ``rounds``, ``duration_s`` or ``query``; default ``started_at``),
    ``order`` (``asc`` or ``desc``, default ``desc``).
    Returns ``{"total": n_matching, "limit", "offset", "runs": [summary, ...]}`` where a summary
    is a row of the store's ``runs`` table (``run_id, started_at, finished_at, query, pool,
    policy, status, stop_reason, answer, cost_usd, input_tokens, output_tokens, calls, rounds,
    duration_s, budget, meta``).
``GET /api/facets``
    The values the filters can take: ``{"status": [...], "policy": [...], "pool": [...]}``.
``GET /api/runs/<run_id>``
    One run: ``{"run": summary, "events": [event, ...]}``, events in ``seq`` order as
    :func:`~orchestra.trace.events.event_to_dict` writes them. ``<run_id>`` may be a unique
    prefix. Unknown → 404.
``GET /api/runs/<run_id>/events?after=<seq>``
    Polling for live updates: ``{"run_id", "status", "last_seq", "events": [events with
    seq > after]}`` (``after`` defaults to -1: all events).
``GET /api/runs/<run_id>/stream?after=<seq>``
    The same as server-sent events (``text/event-stream``): one ``event: trace`` message per
    event (``id:`` its seq, ``data:`` its JSON), sent as the event is stored; then
    ``event: end`` (``data: {"status": ...}``) once the run is no longer running. A reconnecting
    client's ``Last-Event-ID`` header takes the place of ``after``. Comments keep the connection
    alive. The page falls back to polling ``/events`` where EventSource fails.
``GET /api/aggregates``
    Totals over the runs matching the same filters as ``/api/runs`` (``search``, ``status``,
    ``policy``, ``pool``): ``{"runs", "cost_usd", "calls", "by_model": [row, ...],
    "by_agent": [row, ...]}``, a row being ``{key, calls, errors, cost_usd, input_tokens,
    output_tokens, latency_s, runs}`` (see
    :meth:`~orchestra.trace.store.TraceStore.aggregate_calls`), costliest first.
``GET /api/compare?a=<run_id>&b=<run_id>``
    Two runs side by side: ``{"a": side, "b": side}``; a side is ``{"run": summary, "rounds":
    [{round, action, reason, models, agents, calls, cost_usd, errors, output}], "models":
    [models called, in order]}``.
``GET /api/health``
    ``{"ok": true, "db": path or null, "runs": n}``.

Pages (``/`` serves the app; the part after ``#`` picks the page): ``#/runs`` (the list),
``#/run/<id>``, ``#/compare/<a>/<b>``, ``#/aggregates``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from orchestra.errors import UserError
from orchestra.trace.store import SQLiteTraceStore, TraceStore

__all__ = ["STATIC_DIR", "ApiError", "ViewerAPI", "ViewerServer", "create_server"]

#: The page's files (``index.html``, ``app.js``, ``app.css``, ``favicon.svg``).
STATIC_DIR = Path(__file__).resolve().parent / "static"

_SORT_KEYS = ("started_at", "cost_usd", "calls", "rounds", "duration_s", "query")
_STATUSES = ("running", "ok", "budget", "error")
_MAX_LIMIT = 500
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}
_STATIC_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# Only the viewer's own files may run or load; data never becomes markup, and this is the
# second line of defence should that ever slip.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class ApiError(Exception):
    """An API failure with its HTTP status (400, 404, ...); the message is shown to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- the API
def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    value = values[-1].strip()
    return value or None


def _int_param(params: dict[str, list[str]], name: str, default: int, lo: int, hi: int) -> int:
    raw = _one(params, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"parameter {name!r} must be an integer (got {raw!r})") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"parameter {name!r} must be between {lo} and {hi} (got {value!r})")
    return value


def _filters(params: dict[str, list[str]]) -> dict[str, str | None]:
    status = _one(params, "status")
    if status is not None and status not in _STATUSES:
        raise ApiError(400, f"unknown status {status!r}; expected one of {list(_STATUSES)}")
    return {
        "search": _one(params, "search"),
        "status": status,
        "policy": _one(params, "policy"),
        "pool": _one(params, "pool"),
    }


class ViewerAPI:
    """The JSON API over a trace store, independent of HTTP (the server maps routes to it).

    Args:
        store: where the runs are read from.
    """

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    # ------------------------------------------------------------------ runs
    def runs(self, params: dict[str, list[str]]) -> dict[str, Any]:
        """``/api/runs``: a page of run summaries and how many runs match."""
        limit = _int_param(params, "limit", 50, 1, _MAX_LIMIT)
        offset = _int_param(params, "offset", 0, 0, 10**12)
        sort = _one(params, "sort") or "started_at"
        if sort not in _SORT_KEYS:
            raise ApiError(400, f"cannot sort by {sort!r}; expected one of {list(_SORT_KEYS)}")
        order = (_one(params, "order") or "desc").lower()
        if order not in ("asc", "desc"):
            raise ApiError(400, f"order must be 'asc' or 'desc' (got {order!r})")
        filters = _filters(params)
        total = self.store.count_runs(**filters)
        rows = self.store.list_runs(
            limit=limit, offset=offset, sort=sort, descending=order == "desc",  # type: ignore[arg-type]
            **filters,
        )
        return {"total": total, "limit": limit, "offset": offset, "runs": rows}

    def facets(self) -> dict[str, list[str]]:
        """``/api/facets``: the statuses, policies and pools present."""
        return self.store.run_facets()

    def resolve(self, run_id: str) -> dict[str, Any]:
        """The summary of the run with this id (or unique id prefix).

        Raises:
            ApiError: 404 when no run matches, 400 when a prefix matches several.
        """
        run = self.store.get_run(run_id)
        if run is not None:
            return run
        if len(run_id) >= 4:
            try:
                return self.store.find_run(run_id)
            except UserError as e:
                status = 400 if "ambiguous" in str(e) else 404
                raise ApiError(status, str(e) if status == 400 else f"no run {run_id!r}") from None
        raise ApiError(404, f"no run {run_id!r}")

    def run(self, run_id: str) -> dict[str, Any]:
        """``/api/runs/<id>``: the summary and every event."""
        run = self.resolve(run_id)
        return {"run": run, "events": self.store.events(run["run_id"])}

    def events(self, run_id: str, params: dict[str, list[str]]) -> dict[str, Any]:
        """``/api/runs/<id>/events``: the events after a seq (polling)."""
        run = self.resolve(run_id)
        after = _int_param(params, "after", -1, -1, 10**12)
        evs = self.store.events(run["run_id"], after_seq=after)
        # Read the status after the events: a run that reports "ok" here has no event left
        # unsent that was stored before the status changed.
        status = (self.store.get_run(run["run_id"]) or run)["status"]
        last = evs[-1]["seq"] if evs else after
        return {"run_id": run["run_id"], "status": status, "last_seq": last, "events": evs}

    # ------------------------------------------------------------------ aggregates
    def aggregates(self, params: dict[str, list[str]]) -> dict[str, Any]:
        """``/api/aggregates``: cost and calls per model and per agent over the filtered runs."""
        filters = _filters(params)
        by_model = self.store.aggregate_calls("model", **filters)
        by_agent = self.store.aggregate_calls("agent", **filters)
        return {
            "runs": self.store.count_runs(**filters),
            "cost_usd": sum(r["cost_usd"] for r in by_model),
            "calls": sum(r["calls"] for r in by_model),
            "filters": {k: v for k, v in filters.items() if v is not None},
            "by_model": by_model,
            "by_agent": by_agent,
        }

    # ------------------------------------------------------------------ compare
    def _side(self, run_id: str) -> dict[str, Any]:
        run = self.resolve(run_id)
        rounds: dict[int, dict[str, Any]] = {}

        def rnd(i: int) -> dict[str, Any]:
            return rounds.setdefault(i, {
                "round": i, "action": None, "reason": "", "models": [], "agents": [],
                "calls": 0, "cost_usd": 0.0, "errors": 0, "output": None,
            })

        models: list[str] = []
        for ev in self.store.events(run["run_id"]):
            kind, r = ev["kind"], ev.get("round")
            if r is None:
                continue
            if kind == "policy_decided":
                rnd(r).update(action=ev.get("action"), reason=ev.get("reason") or "")
            elif kind == "call_finished":
                side = rnd(r)
                side["models"].append(ev["model"])
                side["agents"].append(ev["agent"])
                side["calls"] += 1
                side["cost_usd"] += float(ev.get("cost_usd") or 0.0)
                side["errors"] += ev.get("error") is not None
                if ev["model"] not in models:
                    models.append(ev["model"])
            elif kind == "refined":
                rnd(r)["output"] = ev.get("output")
        return {"run": run, "rounds": [rounds[i] for i in sorted(rounds)], "models": models}

    def compare(self, params: dict[str, list[str]]) -> dict[str, Any]:
        """``/api/compare?a=&b=``: two runs side by side."""
        a, b = _one(params, "a"), _one(params, "b")
        if not a or not b:
            raise ApiError(400, f"compare needs two run ids, ?a=<id>&b=<id> (got a={a!r}, b={b!r})")
        return {"a": self._side(a), "b": self._side(b)}

    def health(self) -> dict[str, Any]:
        """``/api/health``."""
        path = getattr(self.store, "path", None)
        return {"ok": True, "db": str(path) if path else None, "runs": self.store.count_runs()}


# --------------------------------------------------------------------------- HTTP
def _finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity: send them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_bytes(obj: Any) -> bytes:
    try:
        text = json.dumps(obj, default=str, allow_nan=False, ensure_ascii=False)
    except ValueError:
        text = json.dumps(_finite(obj), default=str, allow_nan=False, ensure_ascii=False)
    return text.encode("utf-8")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"
    server_version = "orchestra-viewer"
    sys_version = ""

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)

    def _headers(self, status: int, content_type: str, length: int | None) -> None:
        self._responded = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self._headers(status, content_type, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, _json_bytes(obj), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "status": status})

    def _host_allowed(self) -> bool:
        # A page on another site must not read local traces through DNS rebinding: when the
        # server listens on loopback only, requests must name a loopback host.
        if not _is_loopback(str(self.server.server_address[0])):
            return True
        host = (self.headers.get("Host") or "").strip()
        if not host:  # browsers always send Host; a bare HTTP/1.0 client cannot be rebound
            return True
        if host.startswith("["):
            name = host[1:].split("]", 1)[0]
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return _is_loopback(name.lower())

    # ------------------------------------------------------------------ methods
    def do_GET(self) -> None:
        self._responded = False
        try:
            if not self._host_allowed():
                self._error(403, f"host {self.headers.get('Host')!r} is not allowed; open the "
                                 "viewer at its loopback address")
                return
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - a request must never kill the server
            if self._responded:  # failed mid-stream: the only thing left to do is hang up
                self.close_connection = True
            elif isinstance(e, ApiError):
                self._error(e.status, e.message)
            elif isinstance(e, UserError):
                self._error(400, str(e))
            elif isinstance(e, sqlite3.DatabaseError):
                self._error(500, f"the trace store could not be read ({e})")
            else:
                self._error(500, f"{type(e).__name__}: {e}")

    do_HEAD = do_GET

    def _not_allowed(self) -> None:
        self._responded = False
        self.close_connection = True  # the request body, if any, is not read
        self._error(405, f"method {self.command!r} is not allowed; the viewer is read-only (GET)")

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _route(self) -> None:
        parts = urlsplit(self.path)
        params = parse_qs(parts.query, keep_blank_values=False)
        # Split before decoding so an encoded "/" stays inside its segment.
        segs = [unquote(s) for s in parts.path.split("/") if s]
        api = self.server.api
        if not segs or segs == ["index.html"]:
            self._static("index.html")
        elif segs[0] == "static" and len(segs) == 2:
            self._static(segs[1])
        elif segs == ["favicon.ico"]:
            self._static("favicon.svg")
        elif segs[0] != "api":
            raise ApiError(404, f"no page {parts.path!r}; the viewer lives at /")
        elif segs == ["api", "runs"]:
            self._json(200, api.runs(params))
        elif segs == ["api", "facets"]:
            self._json(200, api.facets())
        elif segs == ["api", "aggregates"]:
            self._json(200, api.aggregates(params))
        elif segs == ["api", "compare"]:
            self._json(200, api.compare(params))
        elif segs == ["api", "health"]:
            self._json(200, api.health())
        elif len(segs) == 3 and segs[1] == "runs":
            self._json(200, api.run(segs[2]))
        elif len(segs) == 4 and segs[1] == "runs" and segs[3] == "events":
            self._json(200, api.events(segs[2], params))
        elif len(segs) == 4 and segs[1] == "runs" and segs[3] == "stream":
            self._stream(segs[2], params)
        else:
            raise ApiError(404, f"no API route {parts.path!r}; see the routes in "
                                "orchestra.trace.viewer.server")

    def _static(self, name: str) -> None:
        path = STATIC_DIR / name
        if not _STATIC_NAME.match(name) or not path.is_file():
            raise ApiError(404, f"no static file {name!r}")
        ctype = _CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        self._send(200, path.read_bytes(), ctype)

    # ------------------------------------------------------------------ live events
    def _stream(self, run_id: str, params: dict[str, list[str]]) -> None:
        api = self.server.api
        run = api.resolve(run_id)
        rid = run["run_id"]
        after = _int_param(params, "after", -1, -1, 10**12)
        last_id = self.headers.get("Last-Event-ID")
        if last_id and last_id.strip().lstrip("-").isdigit():
            after = int(last_id)
        self._headers(200, "text/event-stream; charset=utf-8", None)
        self.close_connection = True  # the stream ends the connection; no Content-Length
        if self.command == "HEAD":
            return
        out = self.wfile
        out.write(b"retry: 1000\n\n")
        out.flush()
        stopping = self.server.stopping
        beat = time.monotonic()
        while not stopping.is_set():
            evs = api.store.events(rid, after_seq=after)
            for ev in evs:
                after = ev["seq"]
                out.write(b"id: %d\nevent: trace\ndata: " % after + _json_bytes(ev) + b"\n\n")
            status = (api.store.get_run(rid) or run)["status"]
            if evs:
                out.flush()
                beat = time.monotonic()
            elif status != "running":
                out.write(b"event: end\ndata: " + _json_bytes({"status": status}) + b"\n\n")
                out.flush()
                return
            elif time.monotonic() - beat > 15:
                out.write(b": keep-alive\n\n")
                out.flush()
                beat = time.monotonic()
            stopping.wait(self.server.poll_s)


class ViewerServer(ThreadingHTTPServer):
    """The viewer's HTTP server over a trace store.

    Args:
        store: the trace store to show (opened read-only by :func:`create_server`).
        host: the address to listen on; loopback by default, so only this machine sees traces.
        port: the TCP port; 0 picks a free one (see :attr:`url`).
        quiet: do not log each request to stderr.
        poll_s: how often live streams look for new events, in seconds.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, store: TraceStore, host: str = "127.0.0.1", port: int = 8765, *,
                 quiet: bool = True, poll_s: float = 0.25) -> None:
        self.api = ViewerAPI(store)
        self.quiet = quiet
        self.poll_s = poll_s
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        """The address to open in a browser, e.g. ``http://127.0.0.1:8765/``."""
        host, port = self.server_address[0], self.server_address[1]
        shown = str(host)
        if shown in ("0.0.0.0", "::"):
            shown = "127.0.0.1"
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{port}/"

    def start(self) -> threading.Thread:
        """Serve in a background (daemon) thread; :meth:`stop` ends it."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="orchestra-viewer", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Stop serving: live streams end, the socket closes."""
        self.stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()


@dataclass(frozen=True)
class _Opened:
    store: TraceStore
    owned: bool


def _open(db: str | Path | TraceStore | None) -> _Opened:
    if isinstance(db, TraceStore):
        return _Opened(db, False)
    return _Opened(SQLiteTraceStore(db, readonly=True), True)


def create_server(db: str | Path | TraceStore | None = None, host: str = "127.0.0.1",
                  port: int = 8765, *, quiet: bool = True, poll_s: float = 0.25) -> ViewerServer:
    """A viewer server over a trace store file (read-only) or a store object, not yet serving.

    Args:
        db: the SQLite trace file (``None``: the default one, see
            :func:`~orchestra.trace.store.default_trace_path`), or a :class:`TraceStore`.
        host: the address to listen on.
        port: the TCP port (0: any free port).
        quiet: do not log requests.
        poll_s: how often live streams look for new events.

    Returns:
        The server; call ``serve_forever()`` (blocking) or ``start()`` (in a thread).

    Raises:
        UserError: the store file is missing or is not an orchestra trace database, or the
            address cannot be bound.
    """
    opened = _open(db)
    try:
        return ViewerServer(opened.store, host, port, quiet=quiet, poll_s=poll_s)
    except OSError as e:
        if opened.owned:
            opened.store.close()
        raise UserError(
            f"cannot listen on {host!r} port {port!r} ({e.strerror or e}); pass --port with "
            "another port (0 picks a free one) or --host with an address of this machine"
        ) from None

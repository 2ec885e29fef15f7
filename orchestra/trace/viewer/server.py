"""The trace viewer's HTTP server: a JSON API and a single-page app over a trace store.

``orchestra viewer`` starts :class:`ViewerServer` (stdlib :class:`http.server.ThreadingHTTPServer`:
no web framework to install, one thread per connection, which a local tool for one user needs
and no more). The store is opened read-only; the runtime may write to it at the same time (SQLite
WAL), and the viewer shows new runs and new events as they arrive.

Exposure
--------
Every request must name an allowed ``Host`` (else 403), which defeats DNS rebinding: on a
loopback bind the loopback names and the bind address; on any other bind also the machine's
hostname; plus ``allow_hosts``. A ``Host`` with a port must name the listening port. Any
non-loopback bind needs an access token (generated when none is given; ``orchestra viewer``
prints it once): ``Authorization: Bearer <token>``, or ``?token=<token>`` on the page's own
address (``/``), which answers with an ``HttpOnly; SameSite=Strict`` cookie that the page and
its event stream then send; anything else is 401. Tokens are compared in constant time.
Connections are capped (:attr:`ViewerLimits.max_connections`; one more is answered 503 by a
single helper thread, never given a thread of its own), an idle connection is closed after
:attr:`ViewerLimits.idle_timeout_s`, and an event stream ends when its client goes away or after
:attr:`ViewerLimits.stream_max_s` (``EventSource`` reconnects from its last event id).

Interrupted runs
----------------
The store keeps a run ``running`` until its process records the end; a process killed or
crashed never does. The viewer shows such a run as ``interrupted`` (with ``stop_reason`` saying
why and ``resume``, the command that continues it) when the process that wrote its last
``run_started`` is gone (same host: pid, start time and pid namespace, see
:mod:`orchestra.trace._process`), or, when that process cannot be checked from here (another
host, a store from an older version), when the run has had no event for
:attr:`ViewerLimits.stale_after_s`. Status filters and facets use the status shown.

The page (``static/``) is vanilla JavaScript and CSS served from this package: no CDN, no
network. Every model output and prompt is put in the page as text (``textContent``), and the
page's Content-Security-Policy allows only the viewer's own scripts.

JSON API
--------
Every route is ``GET``; bodies are JSON (UTF-8). Errors are ``{"error": message, "status": code}``
with status 400 (bad parameter: the message quotes it), 401 (no or wrong access token), 403 (a
``Host`` not allowed), 404 (unknown run or route), 405 (not GET), 500, or 503 (too many
connections; retry).

``GET /api/runs``
    Run summaries, filtered, sorted and paged. Query parameters: ``limit`` (1-500, default 50),
    ``offset`` (default 0), ``search`` (substring of query, answer or run id), ``status``
    (``running``, ``interrupted``, ``ok``, ``budget`` or ``error``), ``policy``, ``pool``,
    ``sort`` (``started_at``,
    ``cost_usd``, ``calls``, ``rounds``, ``duration_s`` or ``query``; default ``started_at``),
    ``order`` (``asc`` or ``desc``, default ``desc``).
    Returns ``{"total": n_matching, "limit", "offset", "runs": [summary, ...]}`` where a summary
    is a row of the store's ``runs`` table (``run_id, started_at, finished_at, query, pool,
    policy, status, stop_reason, answer, cost_usd, input_tokens, output_tokens, calls, rounds,
    duration_s, budget, meta, overruns, writer``), except that an interrupted run shows
    ``status: "interrupted"``, a ``stop_reason`` saying why and ``resume`` (the command that
    continues it, e.g. ``orchestra resume <run_id>``).
``GET /api/facets``
    The values the filters can take: ``{"status": [...], "policy": [...], "pool": [...]}``.
``GET /api/runs/<run_id>``
    One run: ``{"run": summary, "events": [event, ...]}``, events in ``seq`` order as
    :func:`~orchestra.trace.events.event_to_dict` writes them. ``<run_id>`` may be a unique
    prefix. Unknown → 404.
``GET /api/runs/<run_id>/events?after=<seq>``
    Polling for live updates: ``{"run_id", "status", "last_seq", "events": [events with
    seq > after]}`` (``after`` defaults to -1: all events); ``stop_reason`` and ``resume`` too
    when the run is interrupted.
``GET /api/runs/<run_id>/stream?after=<seq>``
    The same as server-sent events (``text/event-stream``): one ``event: trace`` message per
    event (``id:`` its seq, ``data:`` its JSON), sent as the event is stored; then
    ``event: end`` (``data: {"status": ...}``, plus ``stop_reason`` and ``resume`` for an
    interrupted run) once the run is no longer running. A reconnecting client's
    ``Last-Event-ID`` header takes the place of ``after``. Comments keep the connection alive
    (every :attr:`ViewerLimits.heartbeat_s`). The page falls back to polling ``/events`` where
    EventSource fails.
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

import hmac
import ipaddress
import json
import math
import queue
import re
import secrets
import selectors
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from orchestra.errors import UserError
from orchestra.trace.events import event_from_dict
from orchestra.trace.liveness import STALE_AFTER_S, as_shown
from orchestra.trace.pg_store import open_store
from orchestra.trace.store import MemoryTraceStore, TraceStore

__all__ = ["STATIC_DIR", "TOKEN_ENV", "ApiError", "ViewerAPI", "ViewerLimits", "ViewerServer",
           "create_server"]

#: The page's files (``index.html``, ``app.js``, ``app.css``, ``favicon.svg``).
STATIC_DIR = Path(__file__).resolve().parent / "static"

#: The environment variable ``orchestra viewer`` reads its access token from.
TOKEN_ENV = "ORCHESTRA_VIEWER_TOKEN"

_SORT_KEYS = ("started_at", "cost_usd", "calls", "rounds", "duration_s", "query")
_STATUSES = ("running", "interrupted", "ok", "budget", "error")
# Statuses the viewer decides (the store has both as "running").
_LIVE_STATUSES = ("running", "interrupted")
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,512}")
_PAGE_PATHS = ("/", "/index.html")
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


@dataclass(frozen=True)
class ViewerLimits:
    """How much the viewer serves at once, and for how long.

    Attributes:
        max_connections: open connections served at once (each has a thread); one more is
            answered 503 straight away.
        idle_timeout_s: a connection that sends nothing (no request, or a request that stalls)
            for this long is closed; also the longest a write may block.
        stream_max_s: an event stream ends after this long (the browser reconnects from its
            last event id), so no connection is held forever.
        heartbeat_s: a quiet event stream sends a comment this often (proxies and the client
            see it is alive; a client gone away is noticed).
        stale_after_s: a run still ``running`` whose process cannot be checked from here is
            shown as interrupted after this long without an event.
    """

    max_connections: int = 64
    idle_timeout_s: float = 30.0
    stream_max_s: float = 1800.0
    heartbeat_s: float = 15.0
    stale_after_s: float = STALE_AFTER_S

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise UserError(f"max_connections must be at least 1 (got {self.max_connections!r})")
        for name in ("idle_timeout_s", "stream_max_s", "heartbeat_s", "stale_after_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UserError(f"{name} must be a positive number of seconds (got {value!r})")


class ViewerAPI:
    """The JSON API over a trace store, independent of HTTP (the server maps routes to it).

    Args:
        store: where the runs are read from.
        stale_after_s: see :attr:`ViewerLimits.stale_after_s`.
    """

    def __init__(self, store: TraceStore, *, stale_after_s: float = ViewerLimits.stale_after_s
                 ) -> None:
        self.store = store
        self.stale_after_s = stale_after_s

    # ------------------------------------------------------------------ running or interrupted
    def shown(self, run: dict[str, Any]) -> dict[str, Any]:
        """The run as the viewer shows it (:func:`~orchestra.trace.liveness.as_shown`)."""
        return as_shown(self.store, run, stale_after_s=self.stale_after_s)

    def _live_runs(self, filters: dict[str, str | None], sort: str = "started_at",
                   descending: bool = True) -> list[dict[str, Any]]:
        """The runs the store has as ``running`` that match the other filters, as shown."""
        wanted = {**filters, "status": "running"}
        n = self.store.count_runs(**wanted)
        rows = self.store.list_runs(limit=max(n, 1), sort=sort,  # type: ignore[arg-type]
                                    descending=descending, **wanted)  # type: ignore[arg-type]
        return [self.shown(r) for r in rows]

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
        if filters["status"] in _LIVE_STATUSES:
            live = [r for r in self._live_runs(filters, sort, order == "desc")
                    if r["status"] == filters["status"]]
            return {"total": len(live), "limit": limit, "offset": offset,
                    "runs": live[offset:offset + limit]}
        total = self.store.count_runs(**filters)
        rows = self.store.list_runs(
            limit=limit, offset=offset, sort=sort, descending=order == "desc",  # type: ignore[arg-type]
            **filters,
        )
        return {"total": total, "limit": limit, "offset": offset,
                "runs": [self.shown(r) for r in rows]}

    def facets(self) -> dict[str, list[str]]:
        """``/api/facets``: the statuses (as shown), policies and pools present."""
        facets = self.store.run_facets()
        if "running" in facets["status"]:
            shown = {r["status"] for r in self._live_runs(_filters({}))}
            facets["status"] = sorted((set(facets["status"]) - {"running"}) | shown)
        return facets

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
        events = self.store.events(run["run_id"])
        # Shown after the events are read, so an interrupted run has no event missing.
        return {"run": self.shown(self.store.get_run(run["run_id"]) or run), "events": events}

    def events(self, run_id: str, params: dict[str, list[str]]) -> dict[str, Any]:
        """``/api/runs/<id>/events``: the events after a seq (polling)."""
        run = self.resolve(run_id)
        after = _int_param(params, "after", -1, -1, 10**12)
        # The status is read before the events: every event stored before the run ended is in
        # this answer, so a client that sees "ok" (or "interrupted") and no events is done.
        shown = self.shown(self.store.get_run(run["run_id"]) or run)
        evs = self.store.events(run["run_id"], after_seq=after)
        last = evs[-1]["seq"] if evs else after
        return {"run_id": run["run_id"], **_ending(shown), "last_seq": last, "events": evs}

    # ------------------------------------------------------------------ aggregates
    def aggregates(self, params: dict[str, list[str]]) -> dict[str, Any]:
        """``/api/aggregates``: cost and calls per model and per agent over the filtered runs."""
        filters = _filters(params)
        source, where = self.store, filters
        if filters["status"] in _LIVE_STATUSES:
            # The store cannot tell these apart; they are few: fold their events again into a
            # store of just those runs.
            source, where = MemoryTraceStore(), {**filters, "status": None}
            for r in self._live_runs(filters):
                if r["status"] == filters["status"]:
                    for ev in self.store.events(r["run_id"]):
                        source.append(event_from_dict(ev))
        by_model = source.aggregate_calls("model", **where)
        by_agent = source.aggregate_calls("agent", **where)
        return {
            "runs": source.count_runs(**where),
            "cost_usd": sum(r["cost_usd"] for r in by_model),
            "calls": sum(r["calls"] for r in by_model),
            "filters": {k: v for k, v in filters.items() if v is not None},
            "by_model": by_model,
            "by_agent": by_agent,
        }

    # ------------------------------------------------------------------ compare
    def _side(self, run_id: str) -> dict[str, Any]:
        run = self.shown(self.resolve(run_id))
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


def _ending(run: dict[str, Any]) -> dict[str, Any]:
    """What a client learns of a run's end: its status, and for an interrupted run why and the
    command that resumes it."""
    if run.get("status") == "interrupted":
        return {"status": "interrupted", "stop_reason": run.get("stop_reason"),
                "resume": run.get("resume")}
    return {"status": run.get("status")}


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``Host``-style ``name[:port]`` / ``[v6][:port]`` → (lower-case name, port); None when
    malformed."""
    v = value.strip().lower()
    port: str | None
    if v.startswith("["):
        name, sep, rest = v[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    elif v.count(":") == 1:
        name, _, port = v.partition(":")
    else:  # a name, or a bare IPv6 address
        name, port = v, None
    name = name.rstrip(".")
    if not name:
        return None
    if port is None:
        return name, None
    if not (port.isdigit() and int(port) <= 65535):
        return None
    return name, int(port)


def _same(given: str, token: str) -> bool:
    """Constant-time comparison (in the length of the token)."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"
    server_version = "orchestra-viewer"
    sys_version = ""
    _responded = False
    _cookie: str | None = None  # a Set-Cookie header to send with the response

    # ------------------------------------------------------------------ plumbing
    def setup(self) -> None:
        # Reads (a request that never comes or stalls) and writes (a client that stops
        # reading) give up after this long; the connection is then closed.
        super().setup()
        self.connection.settimeout(self.server.limits.idle_timeout_s)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)

    def _headers(self, status: int, content_type: str, length: int | None,
                 extra: dict[str, str] | None = None) -> None:
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
        if self._cookie:
            self.send_header("Set-Cookie", self._cookie)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str,
              extra: dict[str, str] | None = None) -> None:
        self._headers(status, content_type, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, _json_bytes(obj), "application/json; charset=utf-8", extra)

    def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        self._json(status, {"error": message, "status": status}, extra)

    # ------------------------------------------------------------------ who may ask
    def _host_refused(self) -> str | None:
        """Why the request's ``Host`` is refused (DNS rebinding), or None when it is allowed."""
        raw = (self.headers.get("Host") or "").strip()
        if not raw:  # browsers always send Host; a bare HTTP/1.0 client cannot be rebound
            return None
        if self.server.host_allowed(raw):
            return None
        if self.server.loopback:
            return (f"host {raw!r} is not allowed; open the viewer at its loopback address "
                    f"({self.server.url}) or start it with --allow-host NAME")
        return (f"host {raw!r} is not allowed; open the viewer by this machine's name or "
                f"address ({', '.join(sorted(self.server.allowed_names))}) or start it with "
                "--allow-host NAME")

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        scheme, _, value = (self.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer" and _same(value.strip(), token):
            return True
        name = self.server.cookie_name
        for header in self.headers.get_all("Cookie") or []:
            for part in header.split(";"):
                key, sep, val = part.strip().partition("=")
                if sep and key == name and _same(val.strip().strip('"'), token):
                    return True
        parts = urlsplit(self.path)
        if parts.path in _PAGE_PATHS:
            given = parse_qs(parts.query).get("token")
            if given and _same(given[-1], token):
                # The page and its event stream send this from now on; the page takes the
                # token out of its address bar.
                self._cookie = f"{name}={token}; Path=/; HttpOnly; SameSite=Strict"
                return True
        return False

    # ------------------------------------------------------------------ methods
    def do_GET(self) -> None:
        self._responded = False
        self._cookie = None
        try:
            refused = self._host_refused()
            if refused is not None:
                self._error(403, refused)
                return
            if not self._authorized():
                self._error(401, "this viewer needs its access token: open the address "
                                 "`orchestra viewer` printed (ending in ?token=...), or send "
                                 "'Authorization: Bearer <token>'",
                            {"WWW-Authenticate": 'Bearer realm="orchestra viewer"'})
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
        self._cookie = None
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
    def _client_gone(self) -> bool:
        """Whether the client closed its end (it sends nothing on an event stream, so a
        readable socket with nothing to read is a hang-up)."""
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self.connection, selectors.EVENT_READ)
                if not sel.select(0):
                    return False
            return not self.connection.recv(1, socket.MSG_PEEK)
        except (OSError, ValueError):
            return True

    def _stream(self, run_id: str, params: dict[str, list[str]]) -> None:
        api, limits = self.server.api, self.server.limits
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
        ends = beat + limits.stream_max_s
        check = 0.0
        while not stopping.is_set():
            now = time.monotonic()
            if now >= ends:  # the client reconnects with Last-Event-ID and carries on
                return
            # The status before the events: every event stored before the run ended is sent
            # before its end.
            row = api.store.get_run(rid) or run
            if row["status"] == "running" and now >= check:
                row = api.shown(row)  # is its process still there?
                check = now + 1.0
            evs = api.store.events(rid, after_seq=after)
            for ev in evs:
                after = ev["seq"]
                out.write(b"id: %d\nevent: trace\ndata: " % after + _json_bytes(ev) + b"\n\n")
            if evs:
                out.flush()
                beat = now
            elif row["status"] != "running":
                out.write(b"event: end\ndata: " + _json_bytes(_ending(row)) + b"\n\n")
                out.flush()
                return
            elif now - beat >= limits.heartbeat_s:
                out.write(b": keep-alive\n\n")
                out.flush()
                beat = now
            if self._client_gone():
                return
            stopping.wait(self.server.poll_s)


class ViewerServer(ThreadingHTTPServer):
    """The viewer's HTTP server over a trace store.

    Args:
        store: the trace store to show (opened read-only by :func:`create_server`).
        host: the address to listen on; loopback by default, so only this machine sees traces.
        port: the TCP port; 0 picks a free one (see :attr:`url`).
        quiet: do not log each request to stderr.
        poll_s: how often live streams look for new events, in seconds.
        token: the access token every request must carry (see the module docstring); None: none
            on a loopback address, a new random one (:attr:`token_generated`) on any other.
        allow_hosts: more names (``name`` or ``name:port``) the ``Host`` header may give.
        limits: connections, timeouts and when a silent run counts as interrupted.

    Raises:
        UserError: a malformed token or ``allow_hosts`` entry.
        OSError: the address cannot be bound.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, store: TraceStore, host: str = "127.0.0.1", port: int = 8765, *,
                 quiet: bool = True, poll_s: float = 0.25, token: str | None = None,
                 allow_hosts: Iterable[str] = (), limits: ViewerLimits | None = None) -> None:
        self.limits = limits or ViewerLimits()
        self.api = ViewerAPI(store, stale_after_s=self.limits.stale_after_s)
        self.quiet = quiet
        self.poll_s = poll_s
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.loopback = _is_loopback(host)
        extra = [self._allowed_entry(h) for h in allow_hosts]
        self.token_generated = token is None and not self.loopback
        if token is not None and not _TOKEN.fullmatch(token):
            raise UserError(
                f"the access token must be 16 to 512 letters, digits, '.', '_', '~' or '-' (got "
                f"{len(token)} characters{'' if token.isascii() else ', not all ASCII'}); pass "
                f"another with --token or ${TOKEN_ENV}, or none to have one generated")
        self.token = secrets.token_urlsafe(24) if self.token_generated else token
        # Over the cap, one helper thread answers 503 (never a thread per connection).
        self._slots = threading.BoundedSemaphore(self.limits.max_connections)
        self._refused: queue.Queue[socket.socket | None] = queue.Queue(maxsize=256)
        self._busy = self._busy_response()
        self._refuser = threading.Thread(target=self._refuse_loop, name="orchestra-viewer-503",
                                         daemon=True)
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)
        self.port = int(self.server_address[1])
        self.cookie_name = f"orchestra_viewer_{self.port}"
        # Host names this server answers to, each with the ports it may be named with.
        local = self.loopback or _is_wildcard(host)
        names = {host.lower().strip("[]"), str(self.server_address[0]).lower()}
        if local:
            names |= _LOOPBACK_NAMES
        if not self.loopback:
            names.add(socket.gethostname().lower())
        self._local = local
        self._allowed: dict[str, set[int]] = {n: {self.port} for n in names if n}
        for name, p in extra:
            self._allowed.setdefault(name, {self.port}).add(p if p is not None else self.port)
        self._refuser.start()

    @staticmethod
    def _allowed_entry(value: str) -> tuple[str, int | None]:
        parsed = _split_host(value)
        if parsed is None or any(c in parsed[0] for c in "/ @?#"):
            raise UserError(f"--allow-host takes a host name or address, optionally with a "
                            f"port (NAME or NAME:PORT) (got {value!r})")
        return parsed

    @property
    def allowed_names(self) -> frozenset[str]:
        """The host names (and addresses) the ``Host`` header may give."""
        return frozenset(self._allowed)

    def host_allowed(self, value: str) -> bool:
        """Whether a request's ``Host`` header value names this server."""
        parsed = _split_host(value)
        if parsed is None:
            return False
        name, port = parsed
        ports = self._allowed.get(name)
        if ports is None and self._local and _is_loopback(name):
            ports = {self.port}
        return ports is not None and (port is None or port in ports)

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

    @property
    def access_url(self) -> str:
        """:attr:`url` with the access token (``?token=...``) when the server needs one."""
        return self.url + (f"?token={self.token}" if self.token else "")

    # ------------------------------------------------------------------ connection cap
    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                self._refused.put_nowait(request)
            except queue.Full:  # a flood: hang up at once
                self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _busy_response(self) -> bytes:
        body = _json_bytes({"error": f"the viewer is serving its maximum of "
                                    f"{self.limits.max_connections} connections; retry in a "
                                    "moment", "status": 503})
        head = ("HTTP/1.1 503 Service Unavailable\r\n"
                "Content-Type: application/json; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nCache-Control: no-store\r\n"
                "Connection: close\r\n\r\n")
        return head.encode("ascii") + body

    def _refuse_loop(self) -> None:
        """Answer refused connections 503, then linger until the client hangs up (at most 2 s),
        reading what it sends, so that its request does not turn the close into a reset."""
        sel = selectors.DefaultSelector()
        try:
            while True:
                try:
                    sock = self._refused.get(timeout=0.05 if sel.get_map() else None)
                except queue.Empty:
                    sock = False  # type: ignore[assignment]
                if sock is None:
                    return
                if sock:
                    try:
                        sock.setblocking(False)
                        sock.send(self._busy)
                        sock.shutdown(socket.SHUT_WR)
                        sel.register(sock, selectors.EVENT_READ, time.monotonic() + 2.0)
                    except (OSError, ValueError):
                        sock.close()
                for key, _ in sel.select(0):
                    try:
                        more = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        more = b""
                    if not more:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()  # type: ignore[union-attr]
                now = time.monotonic()
                for key in list(sel.get_map().values()):
                    if key.data < now:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()  # type: ignore[union-attr]
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            sel.close()

    # ------------------------------------------------------------------ lifecycle
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

    def server_close(self) -> None:
        super().server_close()
        if self._refuser.is_alive():
            try:
                self._refused.put(None, timeout=1)
            except queue.Full:
                pass


@dataclass(frozen=True)
class _Opened:
    store: TraceStore
    owned: bool


def _open(db: str | Path | TraceStore | None) -> _Opened:
    if isinstance(db, TraceStore):
        return _Opened(db, False)
    store = open_store(db, readonly=True)
    assert store is not None
    return _Opened(store, True)


def create_server(db: str | Path | TraceStore | None = None, host: str = "127.0.0.1",
                  port: int = 8765, *, quiet: bool = True, poll_s: float = 0.25,
                  token: str | None = None, allow_hosts: Iterable[str] = (),
                  limits: ViewerLimits | None = None) -> ViewerServer:
    """A viewer server over a trace store file (read-only) or a store object, not yet serving.

    Args:
        db: the SQLite trace file or a ``postgresql://`` URL (``None``: the default one, see
            :func:`~orchestra.trace.pg_store.trace_target`), or a :class:`TraceStore`.
        host: the address to listen on.
        port: the TCP port (0: any free port).
        quiet: do not log requests.
        poll_s: how often live streams look for new events.
        token: the access token (see :class:`ViewerServer`); generated for a non-loopback
            ``host`` when None.
        allow_hosts: more names the ``Host`` header may give.
        limits: connections, timeouts, staleness (:class:`ViewerLimits`).

    Returns:
        The server; call ``serve_forever()`` (blocking) or ``start()`` (in a thread).

    Raises:
        UserError: the store file is missing or is not an orchestra trace database, the token
            or an allowed host is malformed, or the address cannot be bound.
    """
    opened = _open(db)
    try:
        return ViewerServer(opened.store, host, port, quiet=quiet, poll_s=poll_s, token=token,
                            allow_hosts=allow_hosts, limits=limits)
    except UserError:
        if opened.owned:
            opened.store.close()
        raise
    except OSError as e:
        if opened.owned:
            opened.store.close()
        raise UserError(
            f"cannot listen on {host!r} port {port!r} ({e.strerror or e}); pass --port with "
            "another port (0 picks a free one) or --host with an address of this machine"
        ) from None

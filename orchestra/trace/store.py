"""Trace stores: where events go as they happen, so a crash leaves the trace and the spend.

:class:`TraceStore` is the interface (a conformance suite in ``tests/unit/test_trace_store.py``
runs against every implementation); :class:`SQLiteTraceStore` is the default, a file under the
user's data dir; :class:`MemoryTraceStore` keeps everything in a process;
:class:`~orchestra.trace.pg_store.PostgresTraceStore` keeps the same tables in a PostgreSQL
database shared by several processes or machines (:func:`~orchestra.trace.pg_store.open_store`
opens either from a path or a ``postgresql://`` URL).

Two tables (SQLite):

``runs``: one row per run, a summary kept current as events arrive
(``run_id, started_at, finished_at, query, pool, policy, status, stop_reason, answer, cost_usd,
input_tokens, output_tokens, calls, rounds, duration_s, budget, meta, overruns, writer``);
``status`` is ``running`` until the run ends as ``ok``, ``budget`` (stopped by a limit),
``error`` or ``interrupted`` (Ctrl-C or a cancelled task; resumable when durable); ``overruns`` lists the calls charged above their reservation (see
:attr:`~orchestra.runtime.RunResult.overruns`); ``writer`` identifies the process that wrote the
last ``run_started`` (pid, host, start time: see :mod:`orchestra.trace._process`), so a reader
can tell a run still going from one whose process was killed.

``events``: ``(run_id, seq)`` → ``ts, kind, round, data`` where ``data`` is the event as JSON.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from orchestra.errors import UserError
from orchestra.trace._process import writer_identity
from orchestra.trace.events import INTERRUPTED, Event, event_to_dict

__all__ = [
    "AggregateBy",
    "MemoryTraceStore",
    "SQLiteTraceStore",
    "TraceStore",
    "default_trace_path",
]

RUN_COLUMNS = (
    "run_id", "started_at", "finished_at", "query", "pool", "policy", "status", "stop_reason",
    "answer", "cost_usd", "input_tokens", "output_tokens", "calls", "rounds", "duration_s",
    "budget", "meta", "overruns", "writer",
)
_JSON_COLUMNS = ("budget", "meta", "overruns", "writer")
# Events that change a run's summary row; the others are only appended to ``events``.
_SUMMARY_KINDS = frozenset({"run_started", "call_finished", "refined", "run_finished", "error"})
_COLS = ", ".join(RUN_COLUMNS)
_MARKS = ", ".join("?" for _ in RUN_COLUMNS)
SortKey = Literal["started_at", "cost_usd", "calls", "rounds", "duration_s", "query"]
#: What :meth:`TraceStore.aggregate_calls` groups finished calls by.
AggregateBy = Literal["model", "agent"]
_AGGREGATE_FIELDS = ("calls", "errors", "cost_usd", "input_tokens", "output_tokens", "latency_s",
                     "runs")


def default_trace_path() -> Path:
    """``$ORCHESTRA_TRACE_DB`` or ``<user data dir>/traces.sqlite``."""
    import os

    from orchestra._paths import data_home

    env = os.environ.get("ORCHESTRA_TRACE_DB")
    if env and env.startswith(("postgresql://", "postgres://")):
        raise UserError(
            "ORCHESTRA_TRACE_DB is a PostgreSQL URL, not a file: open it with "
            "orchestra.trace.pg_store.open_store() (or PostgresTraceStore), or set "
            "ORCHESTRA_TRACE_DB to a file path")
    return Path(env) if env else data_home() / "traces.sqlite"


def _summary_update(run: dict[str, Any], ev: dict[str, Any]) -> None:
    """Fold one event into a run summary (shared by every store)."""
    kind = ev["kind"]
    if kind == "run_started":
        if not ev.get("resumed") or not run.get("started_at"):
            run.update(
                run_id=ev["run_id"], started_at=ev["ts"], query=ev["query"], pool=ev["pool"],
                policy=ev["policy"], budget=ev.get("budget") or {}, meta=ev.get("meta") or {},
                cost_usd=0.0, input_tokens=0, output_tokens=0, calls=0, rounds=0, overruns=[],
            )
        run.update(status="running", finished_at=None, stop_reason=None,
                   writer=writer_identity())
    elif kind == "call_finished":
        if ev.get("overrun"):
            run["overruns"] = [*(run.get("overruns") or []), {
                "call_id": ev["call_id"], "agent": ev["agent"], "model": ev["model"],
                **ev["overrun"]}]
        run["cost_usd"] = (run.get("cost_usd") or 0.0) + ev["cost_usd"]
        run["input_tokens"] = (run.get("input_tokens") or 0) + ev["input_tokens"]
        run["output_tokens"] = (run.get("output_tokens") or 0) + ev["output_tokens"]
        run["calls"] = (run.get("calls") or 0) + int(ev.get("requests", 1))
    elif kind == "refined":
        run["rounds"] = max(run.get("rounds") or 0, ev["round"] + 1)
        run["answer"] = ev["output"]
    elif kind == "run_finished":
        run.update(
            finished_at=ev["ts"], status=ev["status"], stop_reason=ev["stop_reason"],
            answer=ev["answer"], cost_usd=ev["cost_usd"], input_tokens=ev["input_tokens"],
            output_tokens=ev["output_tokens"], calls=ev["calls"], rounds=ev["rounds"],
            duration_s=ev["duration_s"], overruns=ev.get("overruns", run.get("overruns") or []),
        )
    elif kind == "error" and ev.get("fatal"):
        if ev.get("error_type") == INTERRUPTED:
            run.update(status="interrupted", stop_reason=f"interrupted: {ev['message']}"[:500],
                       finished_at=ev["ts"])
        else:
            run.update(status="error", stop_reason=f"error: {ev['message']}"[:500],
                       finished_at=ev["ts"])


def fold_cached(summaries: dict[str, dict[str, Any]], ev: dict[str, Any],
                read: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
    """Fold ``ev`` into its run's summary, cached in ``summaries`` between events: a process
    is the only writer of its runs, so a database store reads a summary back (``read``) only
    for the first event it sees of a run, and forgets it when the run ends."""
    rid = ev["run_id"]
    run = summaries.get(rid)
    if run is None:
        run = read(rid) or {c: None for c in RUN_COLUMNS}
    _summary_update(run, ev)
    if ev["kind"] in ("run_finished", "error") and run.get("status") != "running":
        summaries.pop(rid, None)
    else:
        summaries[rid] = run
    return run


class TraceStore(ABC):
    """Where trace events are kept. Implementations must be thread-safe."""

    @abstractmethod
    def append(self, event: Event) -> None:
        """Store one event and fold it into its run's summary, durably before returning."""

    @abstractmethod
    def last_seq(self, run_id: str) -> int:
        """The highest ``seq`` stored for the run, -1 when none."""

    @abstractmethod
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run's summary row, or None."""

    @abstractmethod
    def events(self, run_id: str, after_seq: int = -1) -> list[dict[str, Any]]:
        """The run's events with ``seq > after_seq``, in order, as dicts."""

    @abstractmethod
    def list_runs(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        search: str | None = None,
        status: str | None = None,
        policy: str | None = None,
        pool: str | None = None,
        sort: SortKey = "started_at",
        descending: bool = True,
    ) -> list[dict[str, Any]]:
        """Run summaries, filtered, sorted and paged."""

    @abstractmethod
    def count_runs(
        self, *, search: str | None = None, status: str | None = None,
        policy: str | None = None, pool: str | None = None,
    ) -> int:
        """How many runs match the filters."""

    def aggregate_calls(
        self,
        by: AggregateBy,
        *,
        search: str | None = None,
        status: str | None = None,
        policy: str | None = None,
        pool: str | None = None,
    ) -> list[dict[str, Any]]:
        """Totals of the finished calls (``call_finished`` events, the refiner's included) of
        the runs that match the filters, grouped per model or per agent.

        This default reads every matching run's events; stores with a query language override it.

        Args:
            by: ``"model"`` or ``"agent"``.
            search / status / policy / pool: the same filters as :meth:`list_runs`.

        Returns:
            One dict per model (or agent): ``key, calls, errors, cost_usd, input_tokens,
            output_tokens, latency_s`` (summed) and ``runs`` (how many runs called it), the
            costliest first (then most calls, then by key).

        Raises:
            UserError: when ``by`` is neither ``"model"`` nor ``"agent"``.
        """
        _check_by(by)
        totals: dict[str, dict[str, Any]] = {}
        seen: dict[str, set[str]] = {}
        n = self.count_runs(search=search, status=status, policy=policy, pool=pool)
        for run in self.list_runs(limit=max(n, 1), search=search, status=status, policy=policy,
                                  pool=pool):
            for ev in self.events(run["run_id"]):
                if ev["kind"] != "call_finished":
                    continue
                key = str(ev.get(by))
                t = totals.setdefault(key, {"key": key, **{f: 0 for f in _AGGREGATE_FIELDS}})
                t["calls"] += 1
                t["errors"] += ev.get("error") is not None
                t["cost_usd"] += float(ev.get("cost_usd") or 0.0)
                t["input_tokens"] += int(ev.get("input_tokens") or 0)
                t["output_tokens"] += int(ev.get("output_tokens") or 0)
                t["latency_s"] += float(ev.get("latency_s") or 0.0)
                seen.setdefault(key, set()).add(run["run_id"])
        for key, t in totals.items():
            t["runs"] = len(seen[key])
            t["cost_usd"] = float(t["cost_usd"])
            t["latency_s"] = float(t["latency_s"])
        return sorted(totals.values(), key=lambda t: (-t["cost_usd"], -t["calls"], t["key"]))

    def run_facets(self) -> dict[str, list[str]]:
        """The distinct values of ``status``, ``policy`` and ``pool`` over all runs, sorted
        (what a filter menu offers)."""
        n = self.count_runs()
        out: dict[str, set[str]] = {"status": set(), "policy": set(), "pool": set()}
        for run in self.list_runs(limit=max(n, 1)):
            for k, values in out.items():
                if run.get(k) is not None:
                    values.add(str(run[k]))
        return {k: sorted(v) for k, v in out.items()}

    def find_run(self, prefix: str) -> dict[str, Any]:
        """The run whose id is ``prefix`` or starts with it (unique).

        Raises:
            UserError: when no run, or more than one, matches.
        """
        run = self.get_run(prefix)
        if run is not None:
            return run
        matches = [r for r in self.list_runs(limit=100_000) if r["run_id"].startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UserError(f"no run with id {prefix!r}; see `orchestra traces list`")
        raise UserError(
            f"run id prefix {prefix!r} is ambiguous ({len(matches)} runs); give more characters"
        )

    def close(self) -> None:
        """Release resources."""


def _check_by(by: str) -> None:
    if by not in ("model", "agent"):
        raise UserError(f"cannot aggregate calls by {by!r}; expected 'model' or 'agent'")


class MemoryTraceStore(TraceStore):
    """Keeps runs and events in memory (tests, notebooks, benchmarks)."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, Any]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def append(self, event: Event) -> None:
        ev = event_to_dict(event)
        with self._lock:
            self._events.setdefault(ev["run_id"], []).append(ev)
            run = self._runs.setdefault(ev["run_id"], {c: None for c in RUN_COLUMNS})
            _summary_update(run, ev)

    def last_seq(self, run_id: str) -> int:
        with self._lock:
            evs = self._events.get(run_id)
            return evs[-1]["seq"] if evs else -1

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            r = self._runs.get(run_id)
            return dict(r) if r else None

    def events(self, run_id: str, after_seq: int = -1) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._events.get(run_id, []) if e["seq"] > after_seq]

    def _match(self, r: dict[str, Any], search: str | None, status: str | None,
               policy: str | None, pool: str | None) -> bool:
        if status and r.get("status") != status:
            return False
        if policy and r.get("policy") != policy:
            return False
        if pool and r.get("pool") != pool:
            return False
        if search:
            s = search.lower()
            hay = f"{r.get('query') or ''} {r.get('answer') or ''} {r.get('run_id')}".lower()
            return s in hay
        return True

    def list_runs(self, *, limit: int = 50, offset: int = 0, search: str | None = None,
                  status: str | None = None, policy: str | None = None, pool: str | None = None,
                  sort: SortKey = "started_at", descending: bool = True) -> list[dict[str, Any]]:
        with self._lock:
            rows = [dict(r) for r in self._runs.values()
                    if self._match(r, search, status, policy, pool)]
        rows.sort(key=lambda r: (r.get(sort) is None, r.get(sort) or 0), reverse=descending)
        return rows[offset: offset + limit]

    def count_runs(self, *, search: str | None = None, status: str | None = None,
                   policy: str | None = None, pool: str | None = None) -> int:
        with self._lock:
            return sum(self._match(r, search, status, policy, pool) for r in self._runs.values())


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at REAL, finished_at REAL,
    query TEXT, pool TEXT, policy TEXT,
    status TEXT, stop_reason TEXT, answer TEXT,
    cost_usd REAL DEFAULT 0, input_tokens INTEGER DEFAULT 0, output_tokens INTEGER DEFAULT 0,
    calls INTEGER DEFAULT 0, rounds INTEGER DEFAULT 0, duration_s REAL,
    budget TEXT, meta TEXT, overruns TEXT, writer TEXT
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, kind TEXT NOT NULL,
    round INTEGER, data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
SCHEMA_VERSION = "1"


class SQLiteTraceStore(TraceStore):
    """A trace store in one SQLite file (WAL mode; safe for one writer process and readers).

    Args:
        path: the database file; created (with its folder) when missing.
        readonly: open an existing file for reading only (the viewer); a missing file is an error.
    """

    def __init__(self, path: str | Path | None = None, *, readonly: bool = False) -> None:
        self.path = Path(path) if path is not None else default_trace_path()
        self._lock = threading.RLock()
        self._summaries: dict[str, dict[str, Any]] = {}
        if readonly and not self.path.exists():
            raise UserError(
                f"trace store {str(self.path)!r} does not exist; run something first "
                "(`orchestra run ...`) or pass --db with the right path"
            )
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            uri = f"file:{self.path}?mode=ro" if readonly else str(self.path)
            self._conn = sqlite3.connect(
                uri, uri=readonly, check_same_thread=False, isolation_level=None, timeout=30
            )
            self._conn.row_factory = sqlite3.Row
            if not readonly:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(_SCHEMA)
                self._add_missing_columns()
                self._conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (SCHEMA_VERSION,),
                )
            self._conn.execute("SELECT count(*) FROM runs").fetchone()
            self._conn.execute("SELECT count(*) FROM events").fetchone()
        except sqlite3.DatabaseError as e:
            raise UserError(
                f"trace store {str(self.path)!r} is not a readable orchestra trace database "
                f"({e}); move it aside or pass --db with another path"
            ) from None

    def _add_missing_columns(self) -> None:
        """Bring a store written by an older version up to the current ``runs`` columns."""
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(runs)").fetchall()}
        for col in ("overruns", "writer"):
            if col not in have:
                try:
                    self._conn.execute(f"ALTER TABLE runs ADD COLUMN {col} TEXT")
                except sqlite3.OperationalError as e:  # another process added it meanwhile
                    if "duplicate column" not in str(e):
                        raise

    # ----------------------------------------------------------------- writing
    def append(self, event: Event) -> None:
        ev = event_to_dict(event)
        data = json.dumps(ev, default=str)
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(
                    "INSERT OR REPLACE INTO events(run_id, seq, ts, kind, round, data) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (ev["run_id"], ev["seq"], ev["ts"], ev["kind"], ev.get("round"), data),
                )
                if ev["kind"] in _SUMMARY_KINDS:
                    self._write_summary(cur, ev)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def _write_summary(self, cur: sqlite3.Cursor, ev: dict[str, Any]) -> None:
        run = fold_cached(self._summaries, ev, self._get_run_unlocked)
        row = {c: run.get(c) for c in RUN_COLUMNS}
        for c in _JSON_COLUMNS:
            row[c] = json.dumps(row[c]) if row[c] is not None else None
        cur.execute(f"INSERT OR REPLACE INTO runs({_COLS}) VALUES ({_MARKS})",
                    [row[c] for c in RUN_COLUMNS])

    # ----------------------------------------------------------------- reading
    @staticmethod
    def _row(r: sqlite3.Row) -> dict[str, Any]:
        return run_row(r)

    def _get_run_unlocked(self, run_id: str) -> dict[str, Any] | None:
        r = self._conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return self._row(r) if r else None

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._get_run_unlocked(run_id)

    def last_seq(self, run_id: str) -> int:
        with self._lock:
            r = self._conn.execute(
                "SELECT max(seq) FROM events WHERE run_id = ?", (run_id,)
            ).fetchone()
            return -1 if r[0] is None else int(r[0])

    def events(self, run_id: str, after_seq: int = -1) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq",
                (run_id, after_seq),
            ).fetchall()
        return [_event_of(run_id, int(r[0]), r[1]) for r in rows]

    def _where(self, search: str | None, status: str | None, policy: str | None,
               pool: str | None) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if status:
            clauses.append("status = ?")
            args.append(status)
        if policy:
            clauses.append("policy = ?")
            args.append(policy)
        if pool:
            clauses.append("pool = ?")
            args.append(pool)
        if search:
            clauses.append("(query LIKE ? OR answer LIKE ? OR run_id LIKE ?)")
            like = f"%{search}%"
            args += [like, like, like]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def list_runs(self, *, limit: int = 50, offset: int = 0, search: str | None = None,
                  status: str | None = None, policy: str | None = None, pool: str | None = None,
                  sort: SortKey = "started_at", descending: bool = True) -> list[dict[str, Any]]:
        if sort not in ("started_at", "cost_usd", "calls", "rounds", "duration_s", "query"):
            raise UserError(f"cannot sort runs by {sort!r}")
        where, args = self._where(search, status, policy, pool)
        order = f"{sort} {'DESC' if descending else 'ASC'}, rowid DESC"
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM runs{where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*args, int(limit), int(offset)],
            ).fetchall()
        return [self._row(r) for r in rows]

    def count_runs(self, *, search: str | None = None, status: str | None = None,
                   policy: str | None = None, pool: str | None = None) -> int:
        where, args = self._where(search, status, policy, pool)
        with self._lock:
            return int(self._conn.execute(f"SELECT count(*) FROM runs{where}", args).fetchone()[0])

    def aggregate_calls(self, by: AggregateBy, *, search: str | None = None,
                        status: str | None = None, policy: str | None = None,
                        pool: str | None = None) -> list[dict[str, Any]]:
        # One SQL query over the events' JSON. Each event's JSON is parsed once (a multi-path
        # json_extract into a small array), not once per field.
        _check_by(by)
        where, args = self._where(search, status, policy, pool)
        key = 0 if by == "model" else 1
        sql = (
            "WITH c AS MATERIALIZED (SELECT run_id, json_extract(data, '$.model', '$.agent', "
            "'$.cost_usd', '$.input_tokens', '$.output_tokens', '$.latency_s', '$.error') AS a "
            "FROM events WHERE kind = 'call_finished' "
            f"AND run_id IN (SELECT run_id FROM runs{where})) "
            f"SELECT a ->> {key} AS key, count(*) AS calls, sum(a ->> 6 IS NOT NULL) AS errors, "
            "total(a ->> 2) AS cost_usd, total(a ->> 3) AS input_tokens, "
            "total(a ->> 4) AS output_tokens, total(a ->> 5) AS latency_s, "
            "count(DISTINCT run_id) AS runs FROM c GROUP BY key ORDER BY cost_usd DESC, calls DESC, key"
        )
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [
            {
                "key": str(r["key"]), "calls": int(r["calls"]), "errors": int(r["errors"] or 0),
                "cost_usd": float(r["cost_usd"]), "input_tokens": int(r["input_tokens"]),
                "output_tokens": int(r["output_tokens"]), "latency_s": float(r["latency_s"]),
                "runs": int(r["runs"]),
            }
            for r in rows
        ]

    def run_facets(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with self._lock:
            for col in ("status", "policy", "pool"):  # fixed names, never user input
                rows = self._conn.execute(
                    f"SELECT DISTINCT {col} FROM runs WHERE {col} IS NOT NULL ORDER BY {col}"
                ).fetchall()
                out[col] = [str(r[0]) for r in rows]
        return out

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def run_row(r: Any) -> dict[str, Any]:
    """A stored run row (a mapping) as a dict, its JSON columns parsed. A JSON column that does
    not parse (a damaged store) becomes None and is named in ``damaged``, so one bad row never
    hides the others."""
    d = dict(r)
    for k in _JSON_COLUMNS:
        if d.get(k):
            try:
                d[k] = json.loads(d[k])
            except (ValueError, TypeError):
                d[k] = None
                d.setdefault("damaged", []).append(k)
    return d


def _event_of(run_id: str, seq: int, data: Any) -> dict[str, Any]:
    """A stored event; one that does not parse as an event (a damaged file) is kept in the
    sequence as ``kind: "damaged"`` with what could be read, instead of failing the read."""
    try:
        ev = json.loads(data)
    except (ValueError, TypeError) as e:
        return {"kind": "damaged", "run_id": run_id, "seq": seq, "ts": None,
                "message": f"event {seq} of run {run_id!r} is not JSON ({e})"}
    if not isinstance(ev, dict) or not isinstance(ev.get("kind"), str):
        return {"kind": "damaged", "run_id": run_id, "seq": seq, "ts": None,
                "message": f"event {seq} of run {run_id!r} is not an event object"}
    return ev


def iter_all_events(store: TraceStore, run_ids: Iterable[str]) -> Iterable[dict[str, Any]]:
    """Every event of the given runs, run by run."""
    for rid in run_ids:
        yield from store.events(rid)

"""A trace store in a PostgreSQL database, for several processes or machines writing one store
(``orchestra serve`` replicas), and :func:`open_store`, which picks it for a ``postgresql://``
(or ``postgres://``) URL and :class:`~orchestra.trace.store.SQLiteTraceStore` for a file.

The tables are the SQLite store's (:mod:`orchestra.trace.store`): ``runs`` (the summary of each
run, kept current as its events arrive) and ``events`` (``(run_id, seq)`` → ``ts, kind, round,
data``), with the JSON columns as text, so a damaged row reads back the same way (a ``damaged``
marker, never a failed read). The schema version is in ``trace_meta`` rather than ``meta``: the
key store (:mod:`orchestra.serve.keys`) has a ``meta`` table of its own, and both (and durable
runs' checkpoints) may live in one database.

Several processes may write at once, each its own runs: as with SQLite, one process writes a
run, so it keeps the run's summary in memory between events and each event is one transaction
(the event and the summary row, upserted). PostgreSQL text cannot hold NUL characters or lone
surrogates: they are stored as U+FFFD, and a non-finite number in an event as ``null``.

``psycopg`` (``pip install 'psycopg[binary]'``, in the ``serve`` extra) is imported when a store
is opened, not with this module.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from pathlib import Path
from typing import Any, Literal

from orchestra.errors import UserError
from orchestra.trace.events import Event, event_to_dict
from orchestra.trace.store import (
    _JSON_COLUMNS,
    _SUMMARY_KINDS,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    AggregateBy,
    SortKey,
    SQLiteTraceStore,
    TraceStore,
    _check_by,
    _event_of,
    default_trace_path,
    fold_cached,
    run_row,
)

__all__ = ["PostgresTraceStore", "is_database_url", "open_store", "redact_url", "trace_target"]

_URL_SCHEMES = ("postgresql://", "postgres://")
_KIND = "orchestra-traces"
# pg_advisory_xact_lock key serialising schema creation (the key store uses 7243315).
_SCHEMA_LOCK = 7243316
_SORTS = ("started_at", "cost_usd", "calls", "rounds", "duration_s", "query")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,
    query TEXT, pool TEXT, policy TEXT,
    status TEXT, stop_reason TEXT, answer TEXT,
    cost_usd DOUBLE PRECISION DEFAULT 0, input_tokens BIGINT DEFAULT 0,
    output_tokens BIGINT DEFAULT 0, calls BIGINT DEFAULT 0, rounds BIGINT DEFAULT 0,
    duration_s DOUBLE PRECISION,
    budget TEXT, meta TEXT, overruns TEXT, writer TEXT
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL, seq BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
    round BIGINT, data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_at);
CREATE TABLE IF NOT EXISTS trace_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE OR REPLACE FUNCTION orchestra_trace_json(t TEXT) RETURNS JSONB
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;  -- a damaged event is left out of aggregates, not an error
END $$
"""
_TABLES = {"runs", "events", "trace_meta"}


def is_database_url(target: object) -> bool:
    """Whether ``target`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``)."""
    return isinstance(target, str) and target.startswith(_URL_SCHEMES)


def redact_url(url: str) -> str:
    """A database URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def trace_target(path: str | Path | None) -> str | Path:
    """Where a trace store is: ``path`` (a file or a URL), or by default
    ``$ORCHESTRA_TRACE_DB`` (a file or a URL) or ``<user data dir>/traces.sqlite``."""
    if path is not None:
        return path if is_database_url(path) else Path(path)
    env = os.environ.get("ORCHESTRA_TRACE_DB")
    if is_database_url(env):
        assert env is not None
        return env
    return default_trace_path()


def open_store(path: str | Path | None | Literal[False], *,
               readonly: bool = False) -> TraceStore | None:
    """Open a trace store: ``False`` → none; ``None`` → the default (see :func:`trace_target`);
    a ``postgresql://`` URL → :class:`PostgresTraceStore`; a path → :class:`SQLiteTraceStore`.

    Raises:
        UserError: the store cannot be opened (see the classes).
    """
    if path is False:
        return None
    target = trace_target(path)
    if isinstance(target, str):
        return PostgresTraceStore(target, readonly=readonly)
    return SQLiteTraceStore(target, readonly=readonly)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:
        raise UserError(f"a postgresql:// trace store needs psycopg ({e}); "
                        "`pip install 'psycopg[binary]'` (or 'orchestra[serve]'), or pass a "
                        "file path") from None
    return psycopg


def _text(value: Any) -> Any:
    """A string PostgreSQL text can hold: NUL and lone surrogates become U+FFFD."""
    if not isinstance(value, str):
        return value
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def _clean(value: Any) -> Any:
    """``value`` with every string made storable (:func:`_text`) and non-finite floats None,
    so that its JSON also reads as PostgreSQL ``jsonb`` (which refuses those)."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    text = json.dumps(value, default=str)
    # Escapes jsonb refuses (\u0000, a lone surrogate) or tokens it lacks (NaN, Infinity):
    # rare, so only then is the value walked and written again.
    if "\\u0000" in text or "\\ud" in text or "NaN" in text or "Infinity" in text:
        text = json.dumps(_clean(json.loads(text)))
    return text


class PostgresTraceStore(TraceStore):
    """A trace store in a PostgreSQL database; safe for several processes (each writing its
    own runs) and threads.

    Args:
        url: ``postgresql://user:password@host:port/database`` (or ``postgres://``; any libpq
            URL). The tables are created when missing.
        readonly: only read (the viewer, ``traces list``): nothing is created, and a database
            without the tables is an error.
        timeout_s: how long to wait to connect, and for a lock, before failing.
    """

    def __init__(self, url: str, *, readonly: bool = False, timeout_s: float = 30.0) -> None:
        if not is_database_url(url):
            raise UserError(f"expected a postgresql:// URL for a PostgreSQL trace store (got "
                            f"{url!r}); pass a file path for a SQLite one")
        self.url = url
        self.where = redact_url(url)
        #: What messages, the viewer and its health endpoint show (the URL without password).
        self.path = self.where
        self.readonly = readonly
        self.timeout_s = float(timeout_s)
        self._psycopg = _psycopg()
        self._lock = threading.RLock()
        self._summaries: dict[str, dict[str, Any]] = {}
        self._pid = os.getpid()
        self._inherited: list[Any] = []
        self._conn = self._connect()
        try:
            self._init_schema()
        except self._psycopg.Error as e:
            raise self._failed(e) from None

    def __repr__(self) -> str:
        return f"PostgresTraceStore({self.where!r})"

    # ------------------------------------------------------------------ connection
    def _connect(self) -> Any:
        from psycopg.rows import dict_row

        options = f"-c lock_timeout={int(self.timeout_s * 1000)}"
        if self.readonly:
            options += " -c default_transaction_read_only=on"
        try:
            return self._psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                         connect_timeout=max(1, round(self.timeout_s)),
                                         options=options)
        except self._psycopg.Error as e:
            text = " ".join(str(e).split())
            raise UserError(f"cannot open trace store {self.where!r} ({text}); check the URL "
                            "and that the server is up, or pass --db with a file path") from None

    def _connection(self) -> Any:
        """This process's connection: a forked child opens its own (the inherited one is left
        alone, never closed), and a connection the server dropped is opened again."""
        if os.getpid() != self._pid:
            self._inherited.append(self._conn)
            self._pid = os.getpid()
            self._conn = self._connect()
        elif self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def _failed(self, e: Exception) -> UserError:
        text = " ".join(str(e).split())
        return UserError(f"trace store {self.where!r} failed ({type(e).__name__}: {text}); "
                         "check the database, or pass --db with another URL or a file path")

    def _init_schema(self) -> None:
        conn = self._connection()
        tables = {r["name"] for r in conn.execute(
            "SELECT table_name AS name FROM information_schema.tables "
            "WHERE table_schema = current_schema()").fetchall()}
        if "runs" in tables and "trace_meta" not in tables:
            raise UserError(f"{self.where!r} has a 'runs' table but is not an orchestra trace "
                            "store (no trace_meta table); pass --db with another database")
        if self.readonly:
            if not _TABLES <= tables:
                raise UserError(f"trace store {self.where!r} holds no orchestra traces yet; run "
                                "something first (`orchestra run --db URL ...`) or pass --db "
                                "with the right URL")
        elif not _TABLES <= tables or not self._has_function(conn):
            # DDL only on a new store (CREATE INDEX takes table locks even when the index
            # exists), one process at a time (concurrent CREATE ... IF NOT EXISTS collide).
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(_SCHEMA)
                for k, v in (("kind", _KIND), ("schema_version", SCHEMA_VERSION)):
                    conn.execute("INSERT INTO trace_meta(key, value) VALUES (%s, %s) "
                                 "ON CONFLICT (key) DO NOTHING", (k, v))
        row = conn.execute("SELECT value FROM trace_meta WHERE key = 'kind'").fetchone()
        if row is None or row["value"] != _KIND:
            raise UserError(f"{self.where!r} is not an orchestra trace store (trace_meta kind "
                            f"{row and row['value']!r}); pass --db with another database")

    @staticmethod
    def _has_function(conn: Any) -> bool:
        row = conn.execute("SELECT to_regprocedure('orchestra_trace_json(text)') AS f").fetchone()
        return row is not None and row["f"] is not None

    def _query(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return list(self._connection().execute(sql, args).fetchall())
            except self._psycopg.Error as e:
                raise self._failed(e) from None

    # ----------------------------------------------------------------- writing
    def append(self, event: Event) -> None:
        if self.readonly:
            raise UserError(f"trace store {self.where!r} was opened read-only")
        ev = event_to_dict(event)
        data = _dumps(ev)
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO events(run_id, seq, ts, kind, round, data) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, seq) DO UPDATE "
                        "SET ts = EXCLUDED.ts, kind = EXCLUDED.kind, round = EXCLUDED.round, "
                        "data = EXCLUDED.data",
                        (_text(ev["run_id"]), ev["seq"], ev["ts"], _text(ev["kind"]),
                         ev.get("round"), data))
                    if ev["kind"] in _SUMMARY_KINDS:
                        self._write_summary(conn, ev)
            except self._psycopg.Error as e:
                # The summary cached for this run may now be ahead of the table: read it back.
                self._summaries.pop(ev["run_id"], None)
                raise self._failed(e) from None

    def _write_summary(self, conn: Any, ev: dict[str, Any]) -> None:
        run = fold_cached(self._summaries, ev, self._get_run_unlocked)
        row = {c: _text(run.get(c)) for c in RUN_COLUMNS}
        for c in _JSON_COLUMNS:
            row[c] = _dumps(run.get(c)) if run.get(c) is not None else None
        cols = ", ".join(RUN_COLUMNS)
        marks = ", ".join("%s" for _ in RUN_COLUMNS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in RUN_COLUMNS if c != "run_id")
        conn.execute(f"INSERT INTO runs({cols}) VALUES ({marks}) "
                     f"ON CONFLICT (run_id) DO UPDATE SET {updates}",
                     [row[c] for c in RUN_COLUMNS])

    # ----------------------------------------------------------------- reading
    def _get_run_unlocked(self, run_id: str) -> dict[str, Any] | None:
        r = self._connection().execute("SELECT * FROM runs WHERE run_id = %s",
                                       (_text(run_id),)).fetchone()
        return _row(r) if r else None

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM runs WHERE run_id = %s", (_text(run_id),))
        return _row(rows[0]) if rows else None

    def last_seq(self, run_id: str) -> int:
        rows = self._query("SELECT max(seq) AS m FROM events WHERE run_id = %s", (_text(run_id),))
        return -1 if rows[0]["m"] is None else int(rows[0]["m"])

    def events(self, run_id: str, after_seq: int = -1) -> list[dict[str, Any]]:
        rows = self._query("SELECT seq, data FROM events WHERE run_id = %s AND seq > %s "
                           "ORDER BY seq", (_text(run_id), int(after_seq)))
        return [_event_of(run_id, int(r["seq"]), r["data"]) for r in rows]

    @staticmethod
    def _where(search: str | None, status: str | None, policy: str | None,
               pool: str | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        for col, value in (("status", status), ("policy", policy), ("pool", pool)):
            if value:
                clauses.append(f"{col} = %s")
                args.append(_text(value))
        if search:
            # As SQLite's LIKE: case-insensitive, no escape character.
            clauses.append("(query ILIKE %s ESCAPE '' OR answer ILIKE %s ESCAPE '' "
                           "OR run_id ILIKE %s ESCAPE '')")
            like = f"%{_text(search)}%"
            args += [like, like, like]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def list_runs(self, *, limit: int = 50, offset: int = 0, search: str | None = None,
                  status: str | None = None, policy: str | None = None, pool: str | None = None,
                  sort: SortKey = "started_at", descending: bool = True) -> list[dict[str, Any]]:
        if sort not in _SORTS:
            raise UserError(f"cannot sort runs by {sort!r}; expected one of {list(_SORTS)}")
        where, args = self._where(search, status, policy, pool)
        # NULLs sort as SQLite sorts them (smallest), so both stores page alike.
        order = (f"{sort} DESC NULLS LAST, run_id DESC" if descending
                 else f"{sort} ASC NULLS FIRST, run_id DESC")
        rows = self._query(f"SELECT * FROM runs{where} ORDER BY {order} LIMIT %s OFFSET %s",
                           [*args, max(0, int(limit)), max(0, int(offset))])
        return [_row(r) for r in rows]

    def count_runs(self, *, search: str | None = None, status: str | None = None,
                   policy: str | None = None, pool: str | None = None) -> int:
        where, args = self._where(search, status, policy, pool)
        return int(self._query(f"SELECT count(*) AS n FROM runs{where}", args)[0]["n"])

    def find_run(self, prefix: str) -> dict[str, Any]:
        run = self.get_run(prefix)
        if run is not None:
            return run
        like = re.sub(r"([\\%_])", r"\\\1", _text(prefix)) + "%"
        rows = self._query("SELECT * FROM runs WHERE run_id LIKE %s ESCAPE '\\' LIMIT 2",
                           (like,))
        if len(rows) == 1:
            return _row(rows[0])
        if not rows:
            raise UserError(f"no run with id {prefix!r}; see `orchestra traces list`")
        n = self._query("SELECT count(*) AS n FROM runs WHERE run_id LIKE %s ESCAPE '\\'",
                        (like,))[0]["n"]
        raise UserError(
            f"run id prefix {prefix!r} is ambiguous ({n} runs); give more characters")

    def aggregate_calls(self, by: AggregateBy, *, search: str | None = None,
                        status: str | None = None, policy: str | None = None,
                        pool: str | None = None) -> list[dict[str, Any]]:
        # One SQL query; each event's JSON is parsed once (a damaged one is left out).
        _check_by(by)
        where, args = self._where(search, status, policy, pool)

        def num(field: str) -> str:
            return (f"coalesce(sum(CASE WHEN jsonb_typeof(a -> '{field}') = 'number' "
                    f"THEN (a ->> '{field}')::double precision END), 0)")

        sql = (
            "WITH c AS MATERIALIZED (SELECT run_id, orchestra_trace_json(data) AS a "
            "FROM events WHERE kind = 'call_finished' "
            f"AND run_id IN (SELECT run_id FROM runs{where})) "
            f"SELECT a ->> '{by}' AS key, count(*) AS calls, count(a ->> 'error') AS errors, "
            f"{num('cost_usd')} AS cost_usd, {num('input_tokens')} AS input_tokens, "
            f"{num('output_tokens')} AS output_tokens, {num('latency_s')} AS latency_s, "
            "count(DISTINCT run_id) AS runs FROM c WHERE a IS NOT NULL GROUP BY 1 "
            "ORDER BY cost_usd DESC, calls DESC, key NULLS FIRST"
        )
        return [
            {
                "key": str(r["key"]), "calls": int(r["calls"]), "errors": int(r["errors"] or 0),
                "cost_usd": float(r["cost_usd"]), "input_tokens": int(r["input_tokens"]),
                "output_tokens": int(r["output_tokens"]), "latency_s": float(r["latency_s"]),
                "runs": int(r["runs"]),
            }
            for r in self._query(sql, args)
        ]

    def run_facets(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for col in ("status", "policy", "pool"):  # fixed names, never user input
            rows = self._query(f"SELECT DISTINCT {col} AS v FROM runs WHERE {col} IS NOT NULL "
                               f"ORDER BY {col}")
            out[col] = [str(r["v"]) for r in rows]
        return out

    def close(self) -> None:
        with self._lock:
            if os.getpid() == self._pid:
                self._conn.close()


_row = run_row  # as SQLiteTraceStore reads them

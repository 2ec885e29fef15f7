"""Durable runs in a PostgreSQL database: ``Orchestra(durable="postgresql://...")``, so that
runs started on one machine can be resumed on another (``orchestra serve`` replicas).

The same semantics as the SQLite file per run (:class:`~orchestra.durable.RunFile`), in shared
tables:

``checkpoints``, ``checkpoint_blobs``, ``checkpoint_writes``
    LangGraph's ``AsyncPostgresSaver`` (package ``langgraph-checkpoint-postgres``); the
    thread id is the run id.
``orchestra_run``
    one row per unfinished run: its terms, its input, the seconds it has used.
``orchestra_calls``
    the journal: ``(run_id, call_id)`` → the finished call's record, committed before its
    ``call_finished`` event is emitted.
``orchestra_finished``
    the mark a finished run leaves (its checkpoints, journal and terms are deleted in the same
    transaction), so a later resume says "already finished" and a new run with the same id
    "used before".
``orchestra_holders``
    who holds each run (pid, host, what, since), for the message another process gets.

The lock on a run is a session-level advisory lock (``pg_try_advisory_lock`` on a 64-bit hash
of the run id) on a connection of its own, held from open to close: the server releases it
when the holder's connection ends, so a killed process (SIGKILL included) never leaves a stale
lock, and two threads of one process exclude each other too (each opens its own connection).
The checkpoints and our rows share the other connection, so their writes are ordered.

``psycopg`` and the saver are imported when a run is opened; without them the error names
``pip install 'orchestra[serve]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from orchestra.durable import DurableRun, RunBusyError
from orchestra.errors import UserError
from orchestra.trace.pg_store import is_database_url, redact_url

if TYPE_CHECKING:
    from orchestra._state import CallRecord

__all__ = ["PgRun", "is_database_url", "lock_key"]

# pg_advisory_lock keys serialising schema set-up (the key store uses 7243315, traces 7243316).
_SCHEMA_LOCK = 7243317
_SAVER_LOCK = 7243318

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orchestra_run (
    run_id TEXT PRIMARY KEY, terms TEXT NOT NULL, input TEXT NOT NULL,
    elapsed_s DOUBLE PRECISION NOT NULL DEFAULT 0, created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS orchestra_calls (
    run_id TEXT NOT NULL, call_id TEXT NOT NULL, record TEXT NOT NULL,
    finished_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (run_id, call_id)
);
CREATE TABLE IF NOT EXISTS orchestra_finished (
    run_id TEXT PRIMARY KEY, finished_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS orchestra_holders (
    run_id TEXT PRIMARY KEY, backend_pid INTEGER NOT NULL, holder TEXT NOT NULL
)
"""
_TABLES = {"orchestra_run", "orchestra_calls", "orchestra_finished", "orchestra_holders"}


def lock_key(run_id: str) -> int:
    """The advisory lock key of a run: a signed 64-bit hash of its id."""
    digest = hashlib.sha256(b"orchestra-run\0" + run_id.encode("utf-8", "surrogatepass"))
    return int.from_bytes(digest.digest()[:8], "big", signed=True)


def _imports() -> tuple[Any, Any, Any]:
    try:
        import psycopg
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
    except ImportError as e:
        raise UserError(f"durable runs in PostgreSQL need psycopg and "
                        f"langgraph-checkpoint-postgres ({e}): pip install 'orchestra[serve]' "
                        "(or 'psycopg[binary]' 'langgraph-checkpoint-postgres'), or pass "
                        "durable=True for SQLite files") from None
    return psycopg, AsyncPostgresSaver, dict_row


class PgRun(DurableRun):
    """One run's checkpoints, terms and journal in a PostgreSQL database, opened under the
    run's advisory lock (an async context manager; see
    :class:`~orchestra.durable.DurableRun` for the attributes).

    Args:
        url: the database (``postgresql://user:password@host/db``); the tables are created when
            missing.
        run_id: the run.
        resume: whether the run is being resumed (else started).
        timeout_s: how long to wait to connect.
    """

    def __init__(self, url: str, run_id: str, *, resume: bool, timeout_s: float = 30.0) -> None:
        super().__init__(run_id, resume=resume)
        if not is_database_url(url):
            raise UserError(f"expected a postgresql:// URL for durable runs in PostgreSQL "
                            f"(got {url!r}); pass a folder for SQLite checkpoint files")
        self.url = url
        self.where = redact_url(url)
        self.timeout_s = timeout_s
        self._key = lock_key(run_id)
        self._conn: Any = None  # the saver's and our tables'
        self._lock_conn: Any = None  # holds the run's advisory lock, nothing else
        self._psycopg: Any = None

    async def _connect(self) -> Any:
        psycopg, _, dict_row = _imports()
        try:
            # As LangGraph's own from_conn_string: autocommit, no prepared statements.
            return await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, prepare_threshold=0, row_factory=dict_row,
                connect_timeout=max(1, round(self.timeout_s)))
        except psycopg.Error as e:
            text = " ".join(str(e).split())
            raise UserError(f"cannot open the durable run store {self.where!r} ({text}); check "
                            "the URL and that the server is up") from None

    # ------------------------------------------------------------------ open / close
    async def __aenter__(self) -> Self:
        psycopg, saver_cls, _ = _imports()
        self._psycopg = psycopg
        try:
            self._lock_conn = await self._connect()
            await self._setup_schema()
            await self._acquire()
            self._conn = await self._connect()
            self.saver = saver_cls(self._conn)
            await self._setup_saver()
            await self._load()
        except BaseException:
            await self._close()
            raise
        return self

    async def _setup_schema(self) -> None:
        conn = self._lock_conn
        rows = await (await conn.execute(
            "SELECT table_name AS name FROM information_schema.tables "
            "WHERE table_schema = current_schema()")).fetchall()
        if _TABLES <= {r["name"] for r in rows}:
            return  # no DDL on a store in use (it takes table locks)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for stmt in _SCHEMA.split(";"):  # one at a time: statements are prepared
                await conn.execute(stmt)

    async def _setup_saver(self) -> None:
        """LangGraph's tables and migrations, once per database: its ``CREATE INDEX
        CONCURRENTLY`` cannot run in a transaction, so a session lock on the other connection
        keeps two processes from migrating at once."""
        latest = len(self.saver.MIGRATIONS) - 1
        done = await (await self._conn.execute(
            "SELECT to_regclass('checkpoint_migrations') IS NOT NULL AS t")).fetchone()
        if done["t"]:
            row = await (await self._conn.execute(
                "SELECT max(v) AS v FROM checkpoint_migrations")).fetchone()
            if row["v"] is not None and row["v"] >= latest:
                return
        await self._lock_conn.execute("SELECT pg_advisory_lock(%s)", (_SAVER_LOCK,))
        try:
            await self.saver.setup()
        finally:
            await self._lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_SAVER_LOCK,))

    async def _acquire(self) -> None:
        conn = self._lock_conn
        row = await (await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok",
                                        (self._key,))).fetchone()
        if not row["ok"]:
            holder = await self._holder()
            raise RunBusyError(
                f"run {self.run_id!r} is in use by {holder}; one process at a time may run or "
                f"resume a run: wait for that one to finish (or stop it, then `orchestra resume "
                f"{self.run_id}`)")
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "what": "resume" if self.resume else "run",
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        await conn.execute(
            "INSERT INTO orchestra_holders (run_id, backend_pid, holder) "
            "VALUES (%s, pg_backend_pid(), %s) ON CONFLICT (run_id) DO UPDATE "
            "SET backend_pid = EXCLUDED.backend_pid, holder = EXCLUDED.holder",
            (self.run_id, json.dumps(info)))

    async def _holder(self) -> str:
        """Who holds the run: the holder row written by the session that holds its lock."""
        import asyncio

        hi, lo = (self._key >> 32) & 0xFFFFFFFF, self._key & 0xFFFFFFFF
        for _ in range(20):  # the holder writes its row just after it takes the lock
            row = await (await self._lock_conn.execute(
                "SELECT h.holder FROM pg_locks l JOIN orchestra_holders h "
                "ON h.backend_pid = l.pid AND h.run_id = %s "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid::bigint = %s AND l.objid::bigint = %s",
                (self.run_id, hi, lo))).fetchone()
            if row is not None:
                info = json.loads(row["holder"])
                return (f"process {info['pid']} on {info.get('host', '?')} "
                        f"({info.get('what', 'run')} since {info.get('since', '?')})")
            await asyncio.sleep(0.005)
        return "another process"

    async def _load(self) -> None:
        conn = self._conn
        done = await (await conn.execute(
            "SELECT finished_at FROM orchestra_finished WHERE run_id = %s",
            (self.run_id,))).fetchone()
        if done is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(done["finished_at"]))
            if self.resume:
                raise UserError(f"run {self.run_id!r} already finished (at {when}); nothing to "
                                "resume")
            raise UserError(f"run id {self.run_id!r} was used before (it finished at {when}); "
                            "choose another run id")
        row = await (await conn.execute(
            "SELECT terms, input, elapsed_s FROM orchestra_run WHERE run_id = %s",
            (self.run_id,))).fetchone()
        if self.resume and row is None and not await self._has_checkpoints():
            raise UserError(f"no checkpoint for run {self.run_id!r} in {self.where!r}; was it "
                            f"started with durable={self.where!r}?")
        if row is not None:
            self.terms, self.input = json.loads(row["terms"]), json.loads(row["input"])
            self.elapsed_s = float(row["elapsed_s"])
        calls = await (await conn.execute(
            "SELECT call_id, record FROM orchestra_calls WHERE run_id = %s",
            (self.run_id,))).fetchall()
        self.finished = {r["call_id"]: json.loads(r["record"]) for r in calls}

    async def _close(self, delete: bool = False) -> None:
        self._stop_heartbeat()
        try:
            if self._conn is not None and delete:
                # One transaction: the run's checkpoints, journal and terms go, its mark stays.
                async with self._conn.transaction():
                    await self._conn.execute(
                        "INSERT INTO orchestra_finished (run_id, finished_at) VALUES (%s, %s) "
                        "ON CONFLICT (run_id) DO UPDATE SET finished_at = EXCLUDED.finished_at",
                        (self.run_id, time.time()))
                    await self._conn.execute("DELETE FROM orchestra_calls WHERE run_id = %s",
                                             (self.run_id,))
                    await self._conn.execute("DELETE FROM orchestra_run WHERE run_id = %s",
                                             (self.run_id,))
                    await self.saver.adelete_thread(self.run_id)
        finally:
            if self._lock_conn is not None and self.saver is not None:
                # The holder row goes with the lock (a killed holder's is overwritten); a
                # connection already gone took the lock with it.
                with contextlib.suppress(self._psycopg.Error):
                    await self._lock_conn.execute(
                        "DELETE FROM orchestra_holders WHERE run_id = %s "
                        "AND backend_pid = pg_backend_pid()", (self.run_id,))
            conns, self._conn, self._lock_conn = (self._conn, self._lock_conn), None, None
            for conn in conns:
                if conn is not None:
                    # Closing the lock's connection releases the lock (the server does it).
                    with contextlib.suppress(self._psycopg.Error):
                        await conn.close()

    # ------------------------------------------------------------------ writes
    async def start(self, terms: dict[str, Any], init: Mapping[str, Any]) -> None:
        if self.terms is not None or await self._has_checkpoints():
            raise UserError(
                f"run id {self.run_id!r} was used before (its checkpoints are in "
                f"{self.where!r}); resume it (`orchestra resume {self.run_id}`) or choose "
                "another run id")
        self.terms, self.input = terms, dict(init)
        await self._write("INSERT INTO orchestra_run (run_id, terms, input, elapsed_s, "
                          "created_at) VALUES (%s, %s, %s, 0, %s)",
                          (self.run_id, json.dumps(terms), json.dumps(self.input), time.time()))

    async def _has_checkpoints(self) -> bool:
        async with self.saver.lock:
            row = await (await self._conn.execute(
                "SELECT 1 FROM checkpoints WHERE thread_id = %s LIMIT 1",
                (self.run_id,))).fetchone()
        return row is not None

    async def record_call(self, record: CallRecord, elapsed_s: float) -> None:
        self.finished[record["call_id"]] = record
        await self._write(
            "INSERT INTO orchestra_calls (run_id, call_id, record, finished_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (run_id, call_id) DO UPDATE "
            "SET record = EXCLUDED.record, finished_at = EXCLUDED.finished_at",
            (self.run_id, record["call_id"], json.dumps(record), time.time()), elapsed_s)

    async def save_elapsed(self, elapsed_s: float) -> None:
        await self._write(None, (), elapsed_s)

    async def _write(self, sql: str | None, params: tuple[Any, ...],
                     elapsed_s: float | None = None) -> None:
        assert self._conn is not None
        # The saver's lock: its statements and ours never interleave on the one connection.
        async with self.saver.lock, self._conn.transaction():
            if sql is not None:
                await self._conn.execute(sql, params)
            if elapsed_s is not None:
                await self._conn.execute(
                    "UPDATE orchestra_run SET elapsed_s = greatest(elapsed_s, %s) "
                    "WHERE run_id = %s", (elapsed_s, self.run_id))

"""Durable runs: per run, one checkpoint file, one lock, its terms and a journal of finished calls.

Layout of the checkpoint folder (``<data dir>/checkpoints/`` for ``durable=True``)::

    <key>.sqlite   LangGraph's checkpoints of the run (``AsyncSqliteSaver``, WAL), and two tables
                   of ours: ``orchestra_run`` (one row: the run's terms, its input, the seconds
                   it has used) and ``orchestra_calls`` (the journal: each finished call's record,
                   committed before its ``call_finished`` event is emitted)
    <key>.lock     flock'ed by the one process running or resuming the run; says who that is

When the run reaches its answer its ``.sqlite`` file is deleted (nothing is left to resume;
the trace store keeps the run) and its ``.lock`` file keeps only ``{"finished": <time>}``, a
few bytes that make a later ``resume`` say "already finished" and a new run with the same id
say "used before". So the folder's size is that of the interrupted and failed runs only.

``<key>`` is the run id when it is a plain lower-case name (``[a-z0-9][a-z0-9._-]*``, at most
100 characters, like the default uuid), otherwise ``_`` + a SHA-256 of it.

Why a file per run rather than one shared file: runs never share a database, so concurrent
processes never wait on (or fail with) each other's SQLite write locks, whatever LangGraph's
saver does inside a transaction; one file also makes the terms, the journal and the checkpoints
one SQLite connection, so their writes are ordered. The lock is an advisory ``flock`` on a side
file: the OS releases it when its holder dies (SIGKILL included), so it is never stale, and it
is per open file, so two threads of one process exclude each other too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from orchestra.errors import UserError

if TYPE_CHECKING:
    import aiosqlite

    from orchestra._state import CallRecord
    from orchestra.policies.base import Policy
    from orchestra.spec import Budget, Pool

__all__ = ["DurableRun", "RunBusyError", "RunFile", "RunLock", "RunTerms", "finished_mark",
           "pool_spec", "resumed_terms", "run_key"]

_SAFE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
#: How often a running durable run records the seconds it has used (a kill loses at most this).
HEARTBEAT_S = 1.0
#: Version of what ``orchestra_run.terms`` holds.
TERMS_VERSION = 1


class RunBusyError(UserError):
    """Another process (or thread) is running or resuming this run id right now."""


def run_key(run_id: str) -> str:
    """The file name stem for a run id (the id itself when it is a safe lower-case name)."""
    if _SAFE_ID.fullmatch(run_id) and run_id not in (".", ".."):
        return run_id
    return "_" + hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class RunLock:
    """An exclusive, non-blocking lock on a run id (``flock`` on ``<key>.lock``).

    Args:
        path: the lock file.
        run_id: for messages.
    """

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self._fd: int | None = None

    def acquire(self, what: str) -> None:
        """Take the lock or raise :class:`RunBusyError` naming the holder.

        Args:
            what: what this process is doing with the run (``run`` or ``resume``), for the
                holder line another process reads.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_nb(fd)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunBusyError(
                f"run {self.run_id!r} is in use by {holder}; one process at a time may run or "
                f"resume a run: wait for that one to finish (or stop it, then `orchestra resume "
                f"{self.run_id}`)"
            ) from None
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    def release(self, tombstone: Mapping[str, Any] | None = None) -> None:
        """Let the lock go; ``tombstone``: what the file keeps afterwards (a finished run's
        mark, see :func:`finished_mark`), otherwise it is left empty."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # before unlocking: the next holder writes its own line
            if tombstone is not None:
                os.pwrite(fd, json.dumps(dict(tombstone)).encode(), 0)
            _unlock(fd)
        finally:
            os.close(fd)


def finished_mark(lock_path: Path) -> dict[str, Any] | None:
    """The mark a finished run left in its lock file (``{"finished": ts}``), or None."""
    try:
        info = json.loads(lock_path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("finished") else None


def _read_holder(fd: int) -> str:
    info: dict[str, Any] = {}
    for _ in range(20):  # the holder writes its line just after it takes the lock
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            info = {}
        if info.get("pid"):
            break
        time.sleep(0.005)
    if not info.get("pid"):
        return "another process"
    return (f"process {info['pid']} on {info.get('host', '?')} ({info.get('what', 'run')} "
            f"since {info.get('since', '?')})")


try:
    import fcntl

    def _lock_nb(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows: a mandatory lock on a byte past the holder line
    import msvcrt

    def _lock_nb(fd: int) -> None:
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]

    def _unlock(fd: int) -> None:
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------- terms
def _import_path(fn: Callable[..., Any]) -> str | None:
    """``module:qualname`` that imports back to ``fn``, or None (a lambda, a closure...)."""
    import importlib

    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or not qual or "<" in qual:
        return None
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qual}" if obj is fn else None


def pool_spec(pool: Pool) -> dict[str, Any] | None:
    """The pool's full spec as JSON data that :meth:`Pool.from_dict` rebuilds, or None when it
    cannot be (a tool given as a callable without an import path, a non-JSON parameter)."""
    data = pool.model_dump(mode="python")
    for agent in data.get("agents") or []:
        for tool in agent.get("tools") or []:
            fn = tool.get("function")
            if callable(fn):
                path = _import_path(fn)
                if path is None:
                    return None
                tool["function"] = path
    try:
        return json.loads(json.dumps(data))  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        return None


def _jsonable(value: Any) -> Any | None:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return None


def policy_terms(spec: Any, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """How a run's policy is stored: its name, the name or recipe it was resolved from (None
    for the pool's default or an object) and its parameters."""
    stored_params = _jsonable(dict(params))
    if isinstance(spec, (str, Path)):
        s = str(spec)
        source: str | None = str(Path(s).resolve()) if Path(s).is_file() else s
        restorable = stored_params is not None
    else:
        source, restorable = None, spec is None and stored_params is not None
    return {"name": name, "spec": source, "params": stored_params or {},
            "restorable": restorable}


# ---------------------------------------------------------------------------------- the file
_SCHEMA = """
CREATE TABLE IF NOT EXISTS orchestra_run (
    run_id TEXT PRIMARY KEY, terms TEXT NOT NULL, input TEXT NOT NULL,
    elapsed_s REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS orchestra_calls (
    call_id TEXT PRIMARY KEY, record TEXT NOT NULL, finished_at REAL NOT NULL
);
"""


class DurableRun(ABC):
    """One durable run's checkpoints, terms and journal, opened under the run's lock (an async
    context manager): :class:`RunFile` (a SQLite file per run) or
    :class:`~orchestra.durable_pg.PgRun` (a PostgreSQL database shared by several machines).

    Attributes:
        saver: the LangGraph checkpointer of the run.
        terms: the stored terms (None for a new run, or a run made before terms were stored).
        input: the run's initial state as stored when it started.
        elapsed_s: seconds the run used in earlier attempts.
        finished: the journal: call id → the finished call's record.
    """

    def __init__(self, run_id: str, *, resume: bool) -> None:
        self.run_id = run_id
        self.resume = resume
        self.terms: dict[str, Any] | None = None
        self.input: dict[str, Any] | None = None
        self.elapsed_s = 0.0
        self.finished: dict[str, CallRecord] = {}
        self.saver: Any = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._finished = False

    @abstractmethod
    async def __aenter__(self) -> Self:
        """Take the run's lock and read what is stored of it.

        Raises:
            UserError: the run finished (``already finished`` / ``was used before``), or there
                is nothing to resume.
            RunBusyError: another process or thread holds the run.
        """

    async def __aexit__(self, *exc: object) -> None:
        await self._close(delete=self._finished)

    @abstractmethod
    async def _close(self, delete: bool = False) -> None:
        """Stop the heartbeat and let the lock go; ``delete``: the run finished, so its
        checkpoints go and a mark that it finished stays."""

    def finished_run(self) -> None:
        """The run reached its answer: its checkpoints are deleted when it is closed (nothing
        is left to resume; the trace store keeps the run)."""
        self._finished = True

    @abstractmethod
    async def start(self, terms: dict[str, Any], init: Mapping[str, Any]) -> None:
        """Record a new run's terms and input, before anything else happens.

        Raises:
            UserError: when the run id was used before.
        """

    @abstractmethod
    async def record_call(self, record: CallRecord, elapsed_s: float) -> None:
        """Make a finished call durable (committed before this returns)."""

    @abstractmethod
    async def save_elapsed(self, elapsed_s: float) -> None:
        """Record the seconds the run has used (never fewer than recorded before)."""

    def start_heartbeat(self, elapsed: Callable[[], float]) -> None:
        """Record the seconds used every :data:`HEARTBEAT_S` until the run is closed, so a kill
        loses at most that much of the seconds limit."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT_S)
                await self.save_elapsed(elapsed())

        self._heartbeat = asyncio.create_task(beat())

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None


class RunFile(DurableRun):
    """One run's checkpoint file, opened under the run's lock (an async context manager; see
    :class:`DurableRun` for the attributes).

    Args:
        directory: the checkpoint folder.
        run_id: the run.
        resume: whether the run is being resumed (else started).
        legacy: the single shared checkpoint file of earlier versions, to migrate from.
    """

    def __init__(self, directory: Path, run_id: str, *, resume: bool,
                 legacy: Path | None = None) -> None:
        super().__init__(run_id, resume=resume)
        self.directory = directory
        self.legacy = legacy
        key = run_key(run_id)
        self.path = directory / f"{key}.sqlite"
        self.lock = RunLock(directory / f"{key}.lock", run_id)
        self._conn: aiosqlite.Connection | None = None

    async def __aenter__(self) -> Self:
        done = finished_mark(self.lock.path)
        if done is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(done["finished"])))
            if self.resume:
                raise UserError(f"run {self.run_id!r} already finished (at {when}); nothing to "
                                "resume")
            raise UserError(f"run id {self.run_id!r} was used before (it finished at {when}); "
                            "choose another run id")
        migrate = self.resume and not self.path.exists() and self._legacy_has_run()
        if self.resume and not self.path.exists() and not migrate:
            raise UserError(f"no checkpoint for run {self.run_id!r} in "
                            f"{str(self.directory)!r}; was it started with durable=True?")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.lock.acquire("resume" if self.resume else "run")
        try:
            await self._open()
            if migrate:
                await self._migrate_legacy()
        except BaseException:
            await self._close()
            raise
        return self

    async def _open(self) -> None:
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        # One connection for the saver and our tables: its writes and ours are ordered, and no
        # second connection can invalidate its read snapshot (SQLITE_BUSY_SNAPSHOT).
        self._conn = await aiosqlite.connect(str(self.path), timeout=30)
        self.saver = AsyncSqliteSaver(self._conn)
        await self.saver.setup()  # WAL
        # As the trace store: a commit survives the process being killed (it is in the WAL);
        # only an OS crash or power cut can lose the last commits (then a call may be re-sent).
        await self._conn.execute("PRAGMA synchronous=NORMAL")
        async with self.saver.lock:
            await self._conn.executescript(_SCHEMA)
            await self._conn.commit()
            async with self._conn.execute(
                    "SELECT terms, input, elapsed_s FROM orchestra_run WHERE run_id = ?",
                    (self.run_id,)) as cur:
                row = await cur.fetchone()
            async with self._conn.execute("SELECT call_id, record FROM orchestra_calls") as cur:
                rows = await cur.fetchall()
        if row is not None:
            self.terms, self.input, self.elapsed_s = json.loads(row[0]), json.loads(row[1]), row[2]
        self.finished = {r[0]: json.loads(r[1]) for r in rows}

    async def _close(self, delete: bool = False) -> None:
        self._stop_heartbeat()
        try:
            if self._conn is not None:
                await self._conn.close()
            if delete:
                # Under the lock: no other process is using these files.
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        finally:
            self._conn = None
            # A finished run leaves only its lock file, holding the mark that says so.
            self.lock.release({"finished": time.time()} if delete else None)

    async def start(self, terms: dict[str, Any], init: Mapping[str, Any]) -> None:
        """Record a new run's terms and input, before anything else happens.

        Raises:
            UserError: when the run id was used before.
        """
        if self.terms is not None or await self._has_checkpoints():
            raise UserError(
                f"run id {self.run_id!r} was used before (its checkpoints are in "
                f"{str(self.path)!r}); resume it (`orchestra resume {self.run_id}`) or choose "
                "another run id")
        self.terms, self.input = terms, dict(init)
        await self._write("INSERT INTO orchestra_run (run_id, terms, input, elapsed_s, created_at)"
                          " VALUES (?, ?, ?, 0, ?)",
                          (self.run_id, json.dumps(terms), json.dumps(self.input), time.time()))

    async def _has_checkpoints(self) -> bool:
        assert self._conn is not None
        async with self.saver.lock, self._conn.execute(
                "SELECT 1 FROM checkpoints WHERE thread_id = ? LIMIT 1", (self.run_id,)) as cur:
            return await cur.fetchone() is not None

    async def record_call(self, record: CallRecord, elapsed_s: float) -> None:
        """Make a finished call durable (committed before this returns)."""
        self.finished[record["call_id"]] = record
        await self._write(
            "INSERT OR REPLACE INTO orchestra_calls (call_id, record, finished_at) VALUES (?, ?, ?)",
            (record["call_id"], json.dumps(record), time.time()), elapsed_s)

    async def save_elapsed(self, elapsed_s: float) -> None:
        await self._write(None, (), elapsed_s)

    async def _write(self, sql: str | None, params: tuple[Any, ...],
                     elapsed_s: float | None = None) -> None:
        assert self._conn is not None
        async with self.saver.lock:
            if sql is not None:
                await self._conn.execute(sql, params)
            if elapsed_s is not None:
                await self._conn.execute(
                    "UPDATE orchestra_run SET elapsed_s = max(elapsed_s, ?) WHERE run_id = ?",
                    (elapsed_s, self.run_id))
            await self._conn.commit()

    def _legacy_has_run(self) -> bool:
        """Whether the single shared checkpoint file of earlier versions
        (``<data dir>/checkpoints.sqlite``) holds this run."""
        if self.legacy is None or not self.legacy.is_file():
            return False
        try:
            src = sqlite3.connect(f"file:{self.legacy}?mode=ro", uri=True, timeout=30)
            try:
                return src.execute("SELECT 1 FROM checkpoints WHERE thread_id = ? LIMIT 1",
                                   (self.run_id,)).fetchone() is not None
            finally:
                src.close()
        except sqlite3.Error:
            return False

    async def _migrate_legacy(self) -> None:
        """Copy this run's checkpoints from the shared file of earlier versions into its own
        file. Its terms were not stored then: it resumes on the terms of the Orchestra that
        resumes it."""
        assert self._conn is not None and self.legacy is not None
        async with self.saver.lock:
            await self._conn.execute("ATTACH DATABASE ? AS legacy", (str(self.legacy),))
            try:
                for table in ("checkpoints", "writes"):
                    async with self._conn.execute(f"PRAGMA legacy.table_info({table})") as cur:
                        old = {r[1] for r in await cur.fetchall()}
                    async with self._conn.execute(f"PRAGMA main.table_info({table})") as cur:
                        cols = ", ".join(r[1] for r in await cur.fetchall() if r[1] in old)
                    await self._conn.execute(
                        f"INSERT OR IGNORE INTO main.{table} ({cols}) SELECT {cols} "
                        f"FROM legacy.{table} WHERE thread_id = ?", (self.run_id,))
                await self._conn.commit()
            finally:
                await self._conn.execute("DETACH DATABASE legacy")


# ---------------------------------------------------------------------------------- resume
def policy_name(policy: Any) -> str:
    """A policy's name as traces show it."""
    return str(getattr(policy, "name", type(policy).__name__))


@dataclass(frozen=True)
class RunTerms:
    """What a run runs on: stored when a durable run starts, used again when it resumes."""

    pool: Pool
    policy: Policy
    budget: Budget
    max_think_steps: int

    def record(self, policy_spec: Any, policy_params: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON stored with the run (``policy_spec``: the policy as the caller gave it)."""
        return {
            "version": TERMS_VERSION,
            "pool": {"name": self.pool.name, "source": self.pool.source,
                     "spec": pool_spec(self.pool)},
            "policy": policy_terms(policy_spec, policy_name(self.policy), policy_params),
            "budget": self.budget.model_dump(),
            "max_think_steps": self.max_think_steps,
        }


def resumed_terms(stored: dict[str, Any] | None, own: RunTerms, *, run_id: str,
                  policy_arg: Any, policy_params: Mapping[str, Any]) -> RunTerms:
    """The terms a run resumes on: the stored ones, with the resuming Orchestra's own objects
    where they are the same (its pool object keeps tool callables, its policy is loaded).

    Raises:
        UserError: when the Orchestra names another policy explicitly, or when the stored pool
            or policy cannot be rebuilt (a tool callable or a policy object with no import path)
            and the Orchestra does not provide the same one.
    """
    from orchestra.policies.resolve import resolve_policy
    from orchestra.spec import Budget, Pool

    if stored is None:  # a run checkpointed before terms were stored
        return own
    sp, pol = stored["pool"], stored["policy"]
    if sp["spec"] is not None and pool_spec(own.pool) == sp["spec"]:
        pool = own.pool
    elif sp["spec"] is not None:
        pool = Pool.from_dict(sp["spec"], source=sp.get("source") or f"the pool of run {run_id!r}")
    elif own.pool.name == sp["name"]:
        pool = own.pool
    else:
        raise UserError(
            f"run {run_id!r} ran on pool {sp['name']!r}, whose tools were Python callables that "
            f"cannot be stored; resume it with an Orchestra built on that pool (got pool "
            f"{own.pool.name!r})")
    own_name = policy_name(own.policy)
    if policy_arg is not None and own_name != pol["name"]:
        raise UserError(
            f"run {run_id!r} was started with policy {pol['name']!r}; a resumed run keeps its "
            f"policy (got {own_name!r}): drop the policy option, or start a new run")
    if pool is own.pool and own_name == pol["name"] and (
            not pol["restorable"] or _jsonable(dict(policy_params)) == pol["params"]):
        policy = own.policy
    elif pol["restorable"]:
        policy = resolve_policy(pol["spec"], pool, pol["params"])
    else:
        raise UserError(
            f"run {run_id!r} was started with the policy object {pol['name']!r}, which cannot be "
            "stored; resume it with an Orchestra given that policy (policy=...)")
    return RunTerms(pool=pool, policy=policy, budget=Budget(**stored["budget"]),
                    max_think_steps=int(stored.get("max_think_steps", own.max_think_steps)))

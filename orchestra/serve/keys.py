"""API keys for ``orchestra serve`` with per-key budgets that hold under load, in one SQLite file
(or a PostgreSQL database: ``KeyStore("postgresql://...")``).

**Keys.** A key is ``osk-`` followed by 43 url-safe characters: 256 random bits from
:func:`secrets.token_urlsafe`. Only its SHA-256 digest is stored, with the first 12 characters
(``osk-`` + 8) in clear: the prefix shown by ``orchestra keys list`` and the index a lookup goes
through, after which the digests are compared in constant time (:func:`hmac.compare_digest`).
A slow hash (scrypt, argon2) protects *guessable* secrets against offline guessing; a 256-bit
random secret cannot be guessed whatever the hash, so SHA-256 is as safe here and costs
microseconds instead of tens of milliseconds on every request.

**Budgets** are hard limits in USD, each optional, per key:

- ``per_request``: the most one request may reserve;
- ``per_day``: the most the key may spend in one **UTC calendar day** (00:00 to 24:00 UTC; a
  request counts towards the day its hold was taken, also when it settles after midnight);
- ``total``: the most the key may ever spend.

**Holds.** Before a request calls any model, :meth:`KeyStore.hold` reserves
``min(want, per_request, day left, total left)``, where *left* subtracts the settled spend **and**
every live hold, in one ``BEGIN IMMEDIATE`` transaction: SQLite lets one writer in at a time
across threads and processes, so N concurrent requests on one key can never reserve more than
the limits leave (PostgreSQL: the transaction locks the key's row, ``SELECT ... FOR UPDATE``,
so keys do not wait on each other). :meth:`KeyStore.settle` records what the request really cost and frees the
rest, in the same file and also atomically; settling twice is a no-op. A provider that bills
more than the hold is never dropped: the whole spend is recorded and the excess counted as an
*overrun* (shown by :meth:`KeyStore.usage` and ``orchestra keys usage``); the windows it pushes
past their limit refuse every further hold.

A hold not settled within its ``ttl_s`` (its server crashed or hung) expires: it stops counting
as held and is charged **in full** as spend whose real amount is unknown (the provider may have
billed the call: the same rule as the runtime's ``billed_unknown``), so a crash can never free
budget that was spent. A settle that arrives later replaces the charge with the real spend.

Money is kept as integers of 10⁻⁹ USD (nano-dollars): sums are exact, holds round down and
spends round up, so rounding can never let a key spend past its limit. SQLite commits with
``synchronous=FULL`` (a settle is on disk when it returns): about 9 ms per hold + settle pair on
this project's machines.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

from orchestra._paths import data_home
from orchestra.errors import UserError

__all__ = [
    "DEFAULT_MIN_USD",
    "KEY_PREFIX",
    "WINDOWS",
    "BudgetRefused",
    "Hold",
    "InvalidKey",
    "KeyInfo",
    "KeyStore",
    "KeyStoreError",
    "Window",
    "default_keys_path",
    "fit_units",
    "from_units",
    "to_units",
    "utc_day",
]

Window = Literal["per_request", "per_day", "total"]
WINDOWS: tuple[Window, ...] = ("per_request", "per_day", "total")
_WINDOW_WORDS: dict[Window, str] = {"per_request": "per-request", "per_day": "per-day",
                                     "total": "total"}
_WINDOW_FIX: dict[Window, str] = {
    "per_request": "ask for less (a smaller max_tokens) or use a key with a higher per-request "
                   "limit",
    "per_day": "wait for the next UTC day (it starts at 00:00 UTC) or use a key with a higher "
               "per-day limit",
    "total": "use another key (`orchestra keys create NAME --total-usd X`)",
}

KEY_PREFIX = "osk-"
_VISIBLE = len(KEY_PREFIX) + 8
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_UNITS_PER_USD = 1_000_000_000
DEFAULT_MIN_USD = 1e-9
"""The smallest hold worth making: one unit of the books."""
_KIND = "orchestra-keys"
_SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL,
    per_request BIGINT, per_day BIGINT, total BIGINT,
    spent BIGINT NOT NULL DEFAULT 0,
    overrun BIGINT NOT NULL DEFAULT 0,
    overruns INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS keys_prefix ON keys(prefix);
CREATE TABLE IF NOT EXISTS days (
    key_id TEXT NOT NULL REFERENCES keys(id),
    day TEXT NOT NULL,
    spent BIGINT NOT NULL DEFAULT 0,
    overrun BIGINT NOT NULL DEFAULT 0,
    overruns INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day)
);
CREATE TABLE IF NOT EXISTS holds (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys(id),
    request_id TEXT NOT NULL,
    day TEXT NOT NULL,
    amount BIGINT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('live', 'settled', 'expired')),
    spent BIGINT,
    overrun BIGINT NOT NULL DEFAULT 0,
    expired_at REAL,
    settled_at REAL
);
CREATE INDEX IF NOT EXISTS holds_live ON holds(key_id, state, day);
CREATE INDEX IF NOT EXISTS holds_request ON holds(request_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


# ---------------------------------------------------------------------------- money and windows
def to_units(usd: float, *, up: bool) -> int:
    """``usd`` in nano-dollars, rounded ``up`` (a spend) or down (a limit, a hold). A value that
    is a whole number of units but for float noise (``0.3``) is that number either way."""
    x = usd * _UNITS_PER_USD
    r = round(x)
    if math.isclose(x, r, rel_tol=1e-12, abs_tol=1e-6):
        return int(r)
    return math.ceil(x) if up else math.floor(x)


def from_units(units: int | None) -> float | None:
    return None if units is None else units / _UNITS_PER_USD


def utc_day(ts: float) -> str:
    """The UTC calendar day of a unix time, ``YYYY-MM-DD``: the ``per_day`` window it is in."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def fit_units(want: int | None, limits: Mapping[Window, int | None],
              spent: Mapping[Window, int], held: Mapping[Window, int],
              ) -> tuple[int | None, Window | None]:
    """What one more hold may reserve, and the window that bounds it.

    ``min(want, per_request, per_day − spent − held today, total − spent − held)`` over the
    bounds that exist (a left-over below 0, after an overrun, is 0); ``(None, None)`` when
    nothing bounds it (no ``want`` and no limit). On a tie the limit is named rather than
    ``want``; the window is None when ``want`` alone is the smallest.
    """
    bounds: list[tuple[int, Window | None]] = []
    per_request = limits.get("per_request")
    if per_request is not None:
        bounds.append((per_request, "per_request"))
    windows: tuple[Window, ...] = ("per_day", "total")
    for w in windows:
        limit = limits.get(w)
        if limit is not None:
            bounds.append((max(0, limit - spent.get(w, 0) - held.get(w, 0)), w))
    if want is not None:
        bounds.append((want, None))
    if not bounds:
        return None, None
    return min(bounds, key=lambda b: b[0])


def _usd_arg(name: str, value: Any, *, fix: str, allow_none: bool = True,
             positive: bool = False) -> float | None:
    """``value`` checked as an amount of USD: a finite number >= 0 (> 0 when ``positive``)."""
    if value is None and allow_none:
        return None
    ok = (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
          and (value > 0 if positive else value >= 0))
    if not ok:
        expected = "a finite number of USD > 0" if positive else "a finite number of USD >= 0"
        raise UserError(f"{name}: expected {expected} (got {value!r}); {fix}")
    return float(value)


def money(x: float | None) -> str:
    if x is None:
        return "no limit"
    return f"${x:.9f}".rstrip("0").rstrip(".") if x else "$0"


# ---------------------------------------------------------------------------- errors
class KeyStoreError(UserError):
    """The key store file cannot be used (not a key store, damaged, locked too long)."""


class InvalidKey(UserError):
    """No such key, or a revoked one: answered as HTTP 401."""

    status = 401

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body."""
        return {"error": {"message": str(self), "type": "invalid_request_error", "param": None,
                          "code": "invalid_api_key"}}


class BudgetRefused(UserError):
    """A hold that does not fit a key's budget: answered as HTTP 429.

    Attributes:
        window: the window that is used up (``per_request``, ``per_day`` or ``total``).
        key_name, limit_usd, spent_usd, held_usd: the key and that window's books at the
            moment of the refusal (``held_usd``: live holds of requests in flight).
    """

    status = 429

    def __init__(self, message: str, window: Window, *, key_name: str = "",
                 limit_usd: float = 0.0, spent_usd: float = 0.0, held_usd: float = 0.0) -> None:
        super().__init__(message)
        self.window: Window = window
        self.key_name = key_name
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.held_usd = held_usd

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body (OpenAI's own for an exhausted quota)."""
        return {"error": {"message": str(self), "type": "insufficient_quota", "param": None,
                          "code": "insufficient_quota"}}


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class KeyInfo:
    """A key as stored: never its secret."""

    id: str
    name: str
    prefix: str
    """The first characters of the raw key (``osk-`` + 8), to recognise it in listings."""
    created_at: float
    revoked_at: float | None
    per_request_usd: float | None
    per_day_usd: float | None
    total_usd: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def limits(self) -> dict[Window, float | None]:
        return {"per_request": self.per_request_usd, "per_day": self.per_day_usd,
                "total": self.total_usd}


@dataclass(frozen=True)
class Hold:
    """A reservation on a key for one request; settle it with :meth:`KeyStore.settle`."""

    id: str
    key_id: str
    key_name: str
    request_id: str
    amount_usd: float | None
    """What the request may spend; None when the key has no limit and no amount was asked for."""
    day: str
    created_at: float
    expires_at: float


def default_keys_path() -> Path:
    """``<data home>/keys.sqlite`` (``$ORCHESTRA_HOME`` or the platform's user data dir)."""
    return data_home() / "keys.sqlite"


def _digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()


_DUMMY_DIGEST = _digest(KEY_PREFIX + "x" * 43)


# ---------------------------------------------------------------------------- the store
Row = dict[str, Any]


def _redact(url: str) -> str:
    """A database URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


class _Tx:
    """One transaction (or one autocommit statement) on SQLite or PostgreSQL; SQL is written
    with ``?`` placeholders and rows come back as dicts."""

    def __init__(self, conn: Any, pg: bool) -> None:
        self.conn = conn
        self.pg = pg

    def all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        if self.pg:
            return list(self.conn.execute(sql.replace("?", "%s"), args).fetchall())
        return [dict(r) for r in self.conn.execute(sql, args).fetchall()]

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> Row | None:
        rows = self.all(sql, args)
        return rows[0] if rows else None

    def run(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        self.conn.execute(sql.replace("?", "%s") if self.pg else sql, args)


class KeyStore:
    """API keys and their budgets in one SQLite file (or one PostgreSQL database); safe across
    threads and processes.

    Args:
        path: the SQLite file (created with its folder when missing; default
            :func:`default_keys_path`), or a ``postgresql://`` URL: the same store in a
            PostgreSQL database (needs ``psycopg``), where a transaction locks the key's row
            (``SELECT ... FOR UPDATE``) instead of the whole file.
        timeout_s: how long a write waits for another writer before :class:`KeyStoreError`.
        clock: the time source (unix seconds); tests pass a fake one.
    """

    def __init__(self, path: str | Path | None = None, *, timeout_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s)
                and timeout_s > 0):
            raise UserError(f"timeout_s: expected seconds > 0 (got {timeout_s!r})")
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._inherited: list[Any] = []
        self.url: str | None = None
        self.path: Path | None = None
        """The SQLite file (None for PostgreSQL); :attr:`where` names either for messages."""
        self._pg = isinstance(path, str) and path.startswith(("postgresql://", "postgres://"))
        if self._pg:
            assert isinstance(path, str)
            self.url = path
            self.where = _redact(path)
            self._errors: tuple[type[Exception], ...] = (self._psycopg().Error,)
        else:
            file = Path(path) if path is not None else default_keys_path()
            self.path, self.where = file, str(file)
            self._errors = (sqlite3.Error,)
            if file.is_dir():
                raise KeyStoreError(f"key store {self.where!r} is a folder; pass a file path "
                                    "(e.g. --keys ~/keys.sqlite)")
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise KeyStoreError(f"cannot create the folder of key store {self.where!r} "
                                    f"({e}); pass --keys with a writable path") from None
        self._conn = self._connect()
        self._init_schema()

    # ------------------------------------------------------------------ connection
    @staticmethod
    def _psycopg() -> Any:
        try:
            import psycopg
        except ImportError as e:
            raise KeyStoreError(f"a postgresql:// key store needs psycopg ({e}); "
                                "`pip install 'psycopg[binary]'`, or pass a file path") from None
        return psycopg

    def _connect(self) -> Any:
        try:
            if self._pg:
                psycopg = self._psycopg()
                from psycopg.rows import dict_row

                return psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                       connect_timeout=max(1, round(self.timeout_s)))
            conn = sqlite3.connect(self.where, timeout=self.timeout_s, isolation_level=None,
                                   check_same_thread=False)
        except self._errors as e:
            raise KeyStoreError(f"cannot open key store {self.where!r} ({e}); pass --keys with "
                                "a reachable database or a writable file path") from None
        conn.row_factory = sqlite3.Row
        return conn

    def _connection(self) -> Any:
        """This process's connection: a forked child opens its own (a connection must not
        cross ``fork``; the inherited one is left untouched, never closed)."""
        if os.getpid() != self._pid:
            self._inherited.append(self._conn)
            self._pid = os.getpid()
            self._conn = self._connect()
        elif self._pg and (self._conn.closed or self._conn.broken):  # the server restarted
            self._conn = self._connect()
        return self._conn

    def _damaged(self, e: Exception) -> KeyStoreError:
        text = " ".join(str(e).split())  # one line (PostgreSQL adds CONTEXT lines)
        locked = ("locked" in text or "busy" in text) if not self._pg else \
            type(e).__name__ in ("LockNotAvailable", "QueryCanceled")
        if locked:
            return KeyStoreError(
                f"key store {self.where!r} stayed locked for {self.timeout_s:g} s ({text}): "
                "another process holds a write transaction on it; retry, or stop the process "
                "that holds it")
        if self._pg or not ("not a database" in text or "malformed" in text):
            return KeyStoreError(f"key store {self.where!r} failed ({type(e).__name__}: {text}); "
                                 "check the database (or the file's permissions and disk), or "
                                 "pass --keys with another URL or path")
        return KeyStoreError(
            f"key store {self.where!r} is not a readable orchestra key store ({text}); move it "
            "aside (keep it: it holds the keys and their spend) or pass --keys with another "
            "path")

    @contextmanager
    def _write(self) -> Iterator[_Tx]:
        """One write transaction. SQLite: ``BEGIN IMMEDIATE`` takes the file's write lock before
        anything is read, so what is read cannot change until ``COMMIT``. PostgreSQL: the
        statements lock the rows they will change (:meth:`_find` with ``lock``)."""
        with self._lock:
            conn = self._connection()
            tx = _Tx(conn, self._pg)
            try:
                if self._pg:
                    tx.run("BEGIN")
                    tx.run(f"SET LOCAL lock_timeout = '{int(self.timeout_s * 1000)}ms'")
                else:
                    tx.run("BEGIN IMMEDIATE")
            except self._errors as e:
                self._rollback(conn)
                raise self._damaged(e) from None
            try:
                yield tx
                tx.run("COMMIT")
            except self._errors as e:
                self._rollback(conn)
                raise self._damaged(e) from None
            except BaseException:
                self._rollback(conn)
                raise

    def _rollback(self, conn: Any) -> None:
        try:
            in_tx = (conn.info.transaction_status != 0) if self._pg else conn.in_transaction
            if in_tx:
                conn.execute("ROLLBACK")
        except self._errors:  # a lost connection: the database rolled back by itself
            pass

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        with self._lock:
            try:
                return _Tx(self._connection(), self._pg).all(sql, args)
            except self._errors as e:
                raise self._damaged(e) from None

    def _init_schema(self) -> None:
        if not self._pg:
            self._wal()
        schema = _SCHEMA if not self._pg else _SCHEMA.replace(" REAL", " DOUBLE PRECISION")
        with self._write() as tx:
            if self._pg:  # concurrent CREATE TABLE IF NOT EXISTS can collide in PostgreSQL
                tx.run("SELECT pg_advisory_xact_lock(7243315)")
                tables = {r["name"] for r in tx.all(
                    "SELECT table_name AS name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()")}
            else:
                tables = {r["name"] for r in tx.all(
                    "SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "keys" not in tables and not self._pg:
                raise KeyStoreError(
                    f"{self.where!r} is a database but not an orchestra key store (it holds "
                    f"tables {sorted(tables)!r}); pass --keys with another path")
            # DDL only on a new store: PostgreSQL's CREATE INDEX (even IF NOT EXISTS) takes
            # table locks that would deadlock with the holds of running servers.
            for stmt in schema.split(";") if not {"keys", "days", "holds", "meta"} <= tables \
                    else ():
                if stmt.strip():
                    tx.run(stmt)
            kind = tx.one("SELECT value FROM meta WHERE key='kind'")
            if kind is None:
                for k, v in (("kind", _KIND), ("schema_version", _SCHEMA_VERSION)):
                    tx.run("INSERT INTO meta(key, value) VALUES (?, ?)", (k, v))
            elif kind["value"] != _KIND:
                raise KeyStoreError(f"{self.where!r} is not an orchestra key store (kind "
                                    f"{kind['value']!r}); pass --keys with another path")

    def _wal(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                # Switching to WAL needs the file to itself; other openers may be doing the same.
                self._conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise self._damaged(e) from None
                time.sleep(0.05)
            except sqlite3.Error as e:
                raise self._damaged(e) from None
        # Money: a commit is on disk when it returns (WAL's NORMAL may lose the last ones).
        self._conn.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        with self._lock:
            if os.getpid() == self._pid:
                self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ keys
    @staticmethod
    def _info(r: Row) -> KeyInfo:
        return KeyInfo(id=r["id"], name=r["name"], prefix=r["prefix"],
                       created_at=r["created_at"], revoked_at=r["revoked_at"],
                       per_request_usd=from_units(r["per_request"]),
                       per_day_usd=from_units(r["per_day"]), total_usd=from_units(r["total"]))

    def create(self, name: str, *, per_request_usd: float | None = None,
               per_day_usd: float | None = None, total_usd: float | None = None,
               ) -> tuple[str, KeyInfo]:
        """A new key named ``name``: ``(raw key, info)``. The raw key is shown this once; only
        its digest is kept."""
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name.startswith("key_"):
            raise UserError(
                f"key name: expected 1-64 letters, digits or ._@- starting with a letter or digit, "
                f"not starting with 'key_' (got {name!r}); e.g. 'alice' or 'team-a.prod'")
        limits: dict[str, int | None] = {}
        for arg, value in (("per_request_usd", per_request_usd), ("per_day_usd", per_day_usd),
                           ("total_usd", total_usd)):
            usd = _usd_arg(arg, value, fix=f"pass a limit such as {arg}=5.0, or none for no "
                                          "limit")
            limits[arg] = None if usd is None else to_units(usd, up=False)
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(8)
        taken = UserError(f"a key named {name!r} already exists (revoked keys keep their name, "
                          "so that their spend stays attributable); pick another name")
        try:
            with self._write() as tx:
                if tx.one("SELECT 1 AS x FROM keys WHERE name=?", (name,)):
                    raise taken
                tx.run("INSERT INTO keys(id, name, prefix, hash, created_at, per_request, "
                       "per_day, total) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (key_id, name, raw[:_VISIBLE], _digest(raw), self._clock(),
                        limits["per_request_usd"], limits["per_day_usd"], limits["total_usd"]))
                row = tx.one("SELECT * FROM keys WHERE id=?", (key_id,))
        except KeyStoreError as e:  # PostgreSQL: another process created the name meanwhile
            if "UniqueViolation" in str(e):
                raise taken from None
            raise
        assert row is not None
        return raw, self._info(row)

    def authenticate(self, raw_key: str) -> KeyInfo | None:
        """The key whose secret is ``raw_key``, or None (unknown, malformed or revoked). The
        digests are compared in constant time; a miss does the same work as a hit."""
        if not isinstance(raw_key, str) or not raw_key.startswith(KEY_PREFIX):
            return None
        digest = _digest(raw_key)
        rows = self._read("SELECT * FROM keys WHERE prefix=?", (raw_key[:_VISIBLE],))
        found = None
        hashes: list[tuple[str, Row | None]] = [(r["hash"], r) for r in rows]
        for stored, r in hashes or [(_DUMMY_DIGEST, None)]:
            if hmac.compare_digest(stored, digest) and r is not None:
                found = r
        if found is None or found["revoked_at"] is not None:
            return None
        return self._info(found)

    def _find(self, tx: _Tx, key: KeyInfo | str, *, lock: bool = False) -> Row:
        """The key's row; with ``lock``, locked until the transaction ends (PostgreSQL; SQLite's
        ``BEGIN IMMEDIATE`` already holds the whole file)."""
        ref = key.id if isinstance(key, KeyInfo) else key
        suffix = " FOR UPDATE" if lock and self._pg else ""
        row = tx.one("SELECT * FROM keys WHERE id=?" + suffix, (ref,)) or \
            tx.one("SELECT * FROM keys WHERE name=?" + suffix, (ref,))
        if row is None:
            names = [r["name"] for r in tx.all("SELECT name FROM keys ORDER BY name")]
            raise InvalidKey(f"no key {ref!r} in {self.where!r} (known: "
                             f"{', '.join(names) or 'none'}); `orchestra keys list` shows them")
        return row

    def get(self, key_id_or_name: str) -> KeyInfo:
        """A key by id or name (revoked ones too)."""
        with self._write() as tx:
            return self._info(self._find(tx, key_id_or_name))

    def revoke(self, key_id_or_name: str) -> KeyInfo:
        """Revoke a key: it authenticates no more and gets no new holds; holds already live
        still settle, so what they spend is counted. Revoking twice is a no-op."""
        with self._write() as tx:
            row = self._find(tx, key_id_or_name, lock=True)
            if row["revoked_at"] is None:
                tx.run("UPDATE keys SET revoked_at=? WHERE id=?", (self._clock(), row["id"]))
                row = self._find(tx, row["id"])
        return self._info(row)

    def list(self, *, include_revoked: bool = True) -> list[KeyInfo]:
        """Every key, oldest first."""
        rows = self._read("SELECT * FROM keys ORDER BY created_at, name")
        return [self._info(r) for r in rows if include_revoked or r["revoked_at"] is None]

    # ------------------------------------------------------------------ budgets
    def _expire(self, tx: _Tx, row: Row, now: float) -> Row:
        """Expire the key's live holds past their ttl: each is charged its whole amount as spend
        of unknown size (its server stopped before settling; the provider may have billed).
        The key's row, as it is now."""
        key_id = row["id"]
        rows = tx.all("SELECT id, day, amount FROM holds WHERE key_id=? AND state='live' "
                      "AND expires_at<=?", (key_id, now))
        for r in rows:
            charge = r["amount"] or 0
            tx.run("UPDATE holds SET state='expired', spent=?, expired_at=? WHERE id=?",
                   (charge, now, r["id"]))
            self._add_spend(tx, key_id, r["day"], charge, 0)
        return self._find(tx, key_id) if rows else row

    @staticmethod
    def _add_spend(tx: _Tx, key_id: str, day: str, spent: int, overrun: int) -> None:
        n = 1 if overrun > 0 else 0
        tx.run("UPDATE keys SET spent=spent+?, overrun=overrun+?, overruns=overruns+? "
               "WHERE id=?", (spent, overrun, n, key_id))
        tx.run("INSERT INTO days(key_id, day, spent, overrun, overruns) VALUES (?, ?, ?, ?, ?) "
               "ON CONFLICT(key_id, day) DO UPDATE SET spent=days.spent+excluded.spent, "
               "overrun=days.overrun+excluded.overrun, overruns=days.overruns+excluded.overruns",
               (key_id, day, spent, overrun, n))

    @staticmethod
    def _books(tx: _Tx, row: Row, day: str,
               ) -> tuple[dict[Window, int | None], dict[Window, int], dict[Window, int]]:
        """Limits, settled spend and live holds of the key's ``per_day`` (``day``) and ``total``
        windows."""
        kid = row["id"]
        d = tx.one("SELECT spent FROM days WHERE key_id=? AND day=?", (kid, day))
        h = tx.one("SELECT COALESCE(SUM(amount), 0) AS total, "
                   "COALESCE(SUM(CASE WHEN day=? THEN amount END), 0) AS today "
                   "FROM holds WHERE key_id=? AND state='live'", (day, kid))
        assert h is not None
        limits: dict[Window, int | None] = {w: row[w] for w in WINDOWS}
        spent: dict[Window, int] = {"per_day": d["spent"] if d else 0, "total": row["spent"]}
        held: dict[Window, int] = {"per_day": int(h["today"]), "total": int(h["total"])}
        return limits, spent, held

    def hold(self, key: KeyInfo, want_usd: float | None, *, request_id: str, ttl_s: float,
             min_usd: float = DEFAULT_MIN_USD) -> Hold:
        """Reserve what ``request_id`` may spend on ``key``, atomically:
        ``min(want, per_request, day left, total left)`` (see :func:`fit_units`).

        Raises:
            BudgetRefused: less than ``min_usd`` fits (names the window, its limit, spent and
                held).
            InvalidKey: the key is unknown or was revoked.
        """
        want = _usd_arg("want_usd", want_usd, fix="pass the request's worst-case cost in USD, or "
                        "None for as much as the key's limits allow")
        floor = _usd_arg("min_usd", min_usd, allow_none=False, positive=True,
                         fix="pass the smallest hold worth making, e.g. 1e-9") or 0.0
        if not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s) and ttl_s > 0):
            raise UserError(f"ttl_s: expected seconds > 0 (got {ttl_s!r}); pass how long the "
                            "request may run before its hold is presumed lost, e.g. 600")
        floor_units = max(1, to_units(floor, up=True))
        want_units = None if want is None else to_units(want, up=False)
        if want_units is not None and want_units < floor_units:
            raise UserError(f"want_usd={want_usd!r} is below min_usd={min_usd!r}; ask for at "
                            "least min_usd or lower min_usd")
        with self._write() as tx:
            row = self._find(tx, key, lock=True)
            if row["revoked_at"] is not None:
                raise InvalidKey(f"key {row['name']!r} ({row['prefix']}…) was revoked; create a "
                                 "new one with `orchestra keys create NAME`")
            now = self._clock()
            day = utc_day(now)
            row = self._expire(tx, row, now)
            limits, spent, held = self._books(tx, row, day)
            amount, window = fit_units(want_units, limits, spent, held)
            if amount is not None and amount < floor_units:
                assert window is not None  # want >= floor, so a limit binds
                raise self._refusal(row, window, limits, spent, held, amount, floor_units)
            hold = Hold(id="hold_" + secrets.token_hex(8), key_id=row["id"], key_name=row["name"],
                        request_id=str(request_id), amount_usd=from_units(amount), day=day,
                        created_at=now, expires_at=now + ttl_s)
            tx.run("INSERT INTO holds(id, key_id, request_id, day, amount, created_at, "
                   "expires_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, 'live')",
                   (hold.id, hold.key_id, hold.request_id, day, amount, now, hold.expires_at))
        return hold

    @staticmethod
    def _refusal(row: Row, window: Window, limits: Mapping[Window, int | None],
                 spent: Mapping[Window, int], held: Mapping[Window, int], fits: int,
                 floor: int) -> BudgetRefused:
        limit = from_units(limits[window]) or 0.0
        s = from_units(spent.get(window, 0)) or 0.0
        h = from_units(held.get(window, 0)) or 0.0
        if window == "per_request":
            books = f"limit {money(limit)} per request"
        else:
            books = (f"limit {money(limit)}, spent {money(s)}, held by requests in flight "
                     f"{money(h)}, left {money(from_units(fits))}")
        return BudgetRefused(
            f"key {row['name']!r}: {_WINDOW_WORDS[window]} budget exhausted ({books}; this "
            f"request needs at least {money(from_units(floor))}); {_WINDOW_FIX[window]}",
            window, key_name=row["name"], limit_usd=limit, spent_usd=s, held_usd=h)

    def settle(self, hold: Hold, spent_usd: float) -> None:
        """Record what the request spent and free the rest of its hold, atomically.

        A spend above the hold is recorded whole and its excess counted as an overrun. Settling
        a hold twice is a no-op (the first settle counts). A hold that had expired (charged in
        full) gets its charge replaced by ``spent_usd``.
        """
        usd = _usd_arg("spent_usd", spent_usd, allow_none=False,
                       fix="pass what the request really cost (0 when nothing was sent)") or 0.0
        units = to_units(usd, up=True)
        with self._write() as tx:
            self._find(tx, hold.key_id, lock=True)  # one writer per key, also in PostgreSQL
            r = tx.one("SELECT * FROM holds WHERE id=?", (hold.id,))
            if r is None:
                raise KeyStoreError(f"no hold {hold.id!r} in key store {self.where!r}; "
                                    "settle a hold on the store that made it")
            if r["state"] == "settled":
                return
            charged = r["spent"] if r["state"] == "expired" else 0
            over = max(0, units - r["amount"]) if r["amount"] is not None else 0
            tx.run("UPDATE holds SET state='settled', spent=?, overrun=?, settled_at=? "
                   "WHERE id=?", (units, over, self._clock(), hold.id))
            self._add_spend(tx, r["key_id"], r["day"], units - charged, over)

    def usage(self, key: KeyInfo | str) -> dict[str, Any]:
        """A key's books now, in USD.

        ``{"key", "id", "prefix", "revoked", "day", <window>: {limit, spent, held, left,
        overruns, overrun_usd, exceeded}, "expired": {count, charged_usd, note}, "live_holds"}``
        for ``per_request`` (spent: the largest single request; held: the largest live hold;
        overruns: settled requests that spent more than the per-request limit), ``per_day``
        (today, UTC) and ``total``.
        """
        with self._write() as tx:
            row = self._find(tx, key, lock=True)
            now = self._clock()
            day = utc_day(now)
            row = self._expire(tx, row, now)
            limits, spent, held = self._books(tx, row, day)
            kid = row["id"]
            big = tx.one(
                "SELECT COALESCE(MAX(CASE WHEN state='settled' THEN spent END), 0) AS spent, "
                "COALESCE(MAX(CASE WHEN state='live' THEN amount END), 0) AS held, "
                "SUM(CASE WHEN state='expired' THEN 1 ELSE 0 END) AS expired, "
                "COALESCE(SUM(CASE WHEN state='expired' THEN spent END), 0) AS charged, "
                "SUM(CASE WHEN state='live' THEN 1 ELSE 0 END) AS live "
                "FROM holds WHERE key_id=?", (kid,))
            assert big is not None
            spent["per_request"], held["per_request"] = int(big["spent"]), int(big["held"])
            d = tx.one("SELECT overrun, overruns FROM days WHERE key_id=? AND day=?", (kid, day))
            overruns: dict[Window, tuple[int, int]] = {
                "per_day": (d["overruns"], d["overrun"]) if d else (0, 0),
                "total": (row["overruns"], row["overrun"]),
                "per_request": (0, 0),
            }
            if limits["per_request"] is not None:
                p = tx.one("SELECT COUNT(*) AS n, COALESCE(SUM(spent-?), 0) AS excess FROM holds "
                           "WHERE key_id=? AND state='settled' AND spent>?",
                           (limits["per_request"], kid, limits["per_request"]))
                assert p is not None
                overruns["per_request"] = (int(p["n"]), int(p["excess"]))
        exp_n = int(big["expired"] or 0)
        out: dict[str, Any] = {"key": row["name"], "id": kid, "prefix": row["prefix"],
                               "revoked": row["revoked_at"] is not None, "day": day,
                               "live_holds": int(big["live"] or 0)}
        for w in WINDOWS:
            limit = limits[w]
            left = None
            if limit is not None:
                left = limit if w == "per_request" else max(0, limit - spent[w] - held[w])
            out[w] = {"limit": from_units(limit), "spent": from_units(spent[w]),
                      "held": from_units(held[w]), "left": from_units(left),
                      "overruns": overruns[w][0], "overrun_usd": from_units(overruns[w][1]),
                      "exceeded": limit is not None and spent[w] > limit}
        out["expired"] = {
            "count": exp_n, "charged_usd": from_units(int(big["charged"])),
            "note": ("holds whose server never settled them (it crashed or hung past the "
                     "hold's ttl): each is charged in full, the real spend is unknown")
            if exp_n else ""}
        return out

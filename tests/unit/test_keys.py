"""API keys and per-key budgets (orchestra/serve/keys.py): hashing at rest, the hold / settle
arithmetic of each window, expiry, overruns, bad input and bad files, the ``orchestra keys`` CLI,
and a hypothesis model of the books (the concurrency proof is
tests/integration/test_keys_concurrency.py)."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from pg_server import fresh_database, serve_or_skip

from orchestra.errors import UserError
from orchestra.serve.keys import (
    KEY_PREFIX,
    BudgetRefused,
    Hold,
    InvalidKey,
    KeyStore,
    KeyStoreError,
    fit_units,
    from_units,
    to_units,
    utc_day,
)

T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
DAY = 86_400.0


class Clock:
    def __init__(self, t: float = T0 + 3600) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    yield from serve_or_skip()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> KeyStore:
    """The same tests on both stores (PostgreSQL: a fresh database on a server the tests
    start, skipped with the reason where it cannot start)."""
    if request.param == "sqlite":
        return KeyStore(tmp_path / "keys.sqlite", clock=clock)
    return KeyStore(fresh_database(request.getfixturevalue("postgres")), clock=clock)


@pytest.fixture
def sqlite_store(tmp_path: Path, clock: Clock) -> KeyStore:
    return KeyStore(tmp_path / "keys.sqlite", clock=clock)


def units(x: float | None) -> int:
    assert x is not None
    return to_units(x, up=False)


# ---------------------------------------------------------------------------- keys
def test_keys_are_high_entropy_and_stored_only_as_a_hash(sqlite_store: KeyStore) -> None:
    store = sqlite_store
    assert store.path is not None
    raw, info = store.create("alice", per_day_usd=5.0)
    raw2, _ = store.create("bob")
    assert raw.startswith(KEY_PREFIX) and len(raw) == len(KEY_PREFIX) + 43 and raw != raw2
    assert info.prefix == raw[:12] and not info.revoked
    assert store.authenticate(raw) == info
    store.close()
    blobs = b"".join(p.read_bytes() for p in store.path.parent.iterdir() if p.is_file())
    assert raw.encode() not in blobs and raw[12:].encode() not in blobs
    row = sqlite3.connect(store.path).execute("SELECT hash FROM keys WHERE name='alice'").fetchone()
    assert row[0] == hashlib.sha256(raw.encode()).hexdigest()


def test_authenticate_refuses_wrong_malformed_and_revoked_keys(store: KeyStore) -> None:
    raw, info = store.create("alice")
    flipped = raw[:-1] + ("A" if raw[-1] != "A" else "B")  # same visible prefix, wrong secret
    for bad in (flipped, raw + "x", raw[:12], "", "sk-" + raw[4:], raw.upper()):
        assert store.authenticate(bad) is None, bad
    assert store.authenticate(None) is None  # type: ignore[arg-type]
    assert store.revoke("alice").revoked
    assert store.authenticate(raw) is None
    assert store.revoke(info.id).revoked  # by id, and twice is a no-op
    with pytest.raises(InvalidKey, match="was revoked") as e:
        store.hold(info, 0.1, request_id="r", ttl_s=60)
    assert e.value.status == 401
    assert e.value.body()["error"]["code"] == "invalid_api_key"
    assert [k.name for k in store.list(include_revoked=False)] == []
    assert [k.name for k in store.list()] == ["alice"]


def test_names_are_checked_and_unique(store: KeyStore) -> None:
    store.create("alice")
    with pytest.raises(UserError, match="already exists"):
        store.create("alice")
    for bad in ("", " alice", "a b", "key_123", "x" * 65, "-a"):
        with pytest.raises(UserError, match="key name: expected"):
            store.create(bad)


@pytest.mark.parametrize("limit", [-1.0, math.nan, math.inf, True, "5"])
def test_bad_limits_name_the_value_and_the_fix(store: KeyStore, limit: Any) -> None:
    with pytest.raises(UserError, match=r"per_day_usd: expected a finite number of USD >= 0 "
                                        rf"\(got {repr(limit)[:4]}.*pass a limit such as"):
        store.create("alice", per_day_usd=limit)


def test_unknown_key_lists_the_known_ones(store: KeyStore) -> None:
    store.create("alice")
    for call in (lambda: store.usage("carol"), lambda: store.revoke("carol")):
        with pytest.raises(InvalidKey, match=r"no key 'carol' .*known: alice"):
            call()


# ---------------------------------------------------------------------------- windows
def test_hold_is_the_smallest_of_want_and_every_window(store: KeyStore) -> None:
    _, k = store.create("k", per_request_usd=0.4, per_day_usd=1.0, total_usd=1.5)
    assert store.hold(k, 0.1, request_id="a", ttl_s=60).amount_usd == 0.1  # want
    assert store.hold(k, None, request_id="b", ttl_s=60).amount_usd == 0.4  # per request
    assert store.hold(k, 0.9, request_id="c", ttl_s=60).amount_usd == 0.4  # per request
    h = store.hold(k, 0.9, request_id="d", ttl_s=60)  # the day has 1.0 - 0.9 held left
    assert units(h.amount_usd) == units(0.1)
    with pytest.raises(BudgetRefused) as e:
        store.hold(k, 0.1, request_id="e", ttl_s=60)
    assert e.value.window == "per_day" and e.value.status == 429
    assert (e.value.limit_usd, e.value.spent_usd, e.value.held_usd) == (1.0, 0.0, 1.0)
    msg = str(e.value)
    assert "key 'k'" in msg and "per-day" in msg and "held by requests in flight $1" in msg
    assert "next UTC day" in msg
    assert e.value.body()["error"]["type"] == "insufficient_quota"


def test_total_binds_across_days_and_the_day_resets_at_utc_midnight(store: KeyStore,
                                                                    clock: Clock) -> None:
    _, k = store.create("k", per_day_usd=1.0, total_usd=1.5)
    store.settle(store.hold(k, None, request_id="a", ttl_s=60), 0.8)
    late = store.hold(k, None, request_id="b", ttl_s=DAY)  # the 0.2 left today
    assert units(late.amount_usd) == units(0.2)
    clock.t = T0 + DAY  # next UTC day, 00:00
    # today is fresh, but the total counts yesterday's spend and its live hold
    h = store.hold(k, None, request_id="c", ttl_s=60)
    assert units(h.amount_usd) == units(1.5 - 0.8 - 0.2)
    store.settle(late, 0.2)  # a hold counts for the day it was taken
    u = store.usage(k)
    assert u["day"] == "2026-01-02" and u["per_day"]["spent"] == 0 and u["per_day"]["held"] == 0.5
    assert u["total"]["spent"] == 1.0
    store.settle(h, 0.5)
    with pytest.raises(BudgetRefused, match="total budget exhausted") as e:
        store.hold(k, None, request_id="d", ttl_s=60)
    assert e.value.window == "total" and e.value.spent_usd == 1.5


def test_per_request_refusal_and_min_usd(store: KeyStore) -> None:
    _, k = store.create("k", per_request_usd=0.001)
    with pytest.raises(BudgetRefused, match="per-request budget") as e:
        store.hold(k, 0.5, request_id="a", ttl_s=60, min_usd=0.01)
    assert e.value.window == "per_request"
    with pytest.raises(UserError, match="below min_usd"):
        store.hold(k, 0.001, request_id="a", ttl_s=60, min_usd=0.01)


def test_no_limits_and_no_want_is_an_unbounded_hold(store: KeyStore) -> None:
    _, k = store.create("free")
    h = store.hold(k, None, request_id="a", ttl_s=60)
    assert h.amount_usd is None
    store.settle(h, 12.5)
    u = store.usage("free")
    assert u["total"]["spent"] == 12.5 and u["total"]["overruns"] == 0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"want_usd": -0.1}, r"want_usd: expected .*got -0.1"),
    ({"want_usd": math.nan}, r"want_usd: expected .*got nan"),
    ({"ttl_s": 0}, r"ttl_s: expected seconds > 0 \(got 0\)"),
    ({"ttl_s": math.inf}, r"ttl_s: expected seconds > 0 \(got inf\)"),
    ({"min_usd": 0.0}, r"min_usd: expected a finite number of USD > 0 \(got 0.0\)"),
])
def test_bad_hold_arguments(store: KeyStore, kwargs: dict[str, Any], match: str) -> None:
    _, k = store.create("k", total_usd=1.0)
    args: dict[str, Any] = {"want_usd": 0.1, "request_id": "r", "ttl_s": 60, **kwargs}
    want = args.pop("want_usd")
    with pytest.raises(UserError, match=match):
        store.hold(k, want, **args)


# ---------------------------------------------------------------------------- settle
def test_settle_frees_the_rest_and_is_idempotent(store: KeyStore) -> None:
    _, k = store.create("k", total_usd=1.0)
    h = store.hold(k, 0.6, request_id="a", ttl_s=60)
    assert store.usage(k)["total"]["held"] == 0.6
    store.settle(h, 0.25)
    store.settle(h, 0.25)
    store.settle(h, 0.9)  # a second settle of any amount changes nothing
    u = store.usage(k)["total"]
    assert (u["spent"], u["held"], u["left"]) == (0.25, 0.0, 0.75)
    with pytest.raises(UserError, match=r"spent_usd: expected .*got -1"):
        store.settle(store.hold(k, 0.1, request_id="b", ttl_s=60), -1)
    forged = Hold(id="hold_nope", key_id=k.id, key_name="k", request_id="x", amount_usd=1.0,
                  day="2026-01-01", created_at=T0, expires_at=T0)
    with pytest.raises(KeyStoreError, match="no hold 'hold_nope'"):
        store.settle(forged, 0.1)


def test_an_overrun_is_recorded_shown_and_blocks_further_holds(store: KeyStore) -> None:
    _, k = store.create("k", per_request_usd=0.5, per_day_usd=1.0)
    h = store.hold(k, 0.5, request_id="a", ttl_s=60)
    store.settle(h, 1.2)  # the provider billed more than the hold
    u = store.usage(k)
    assert u["per_day"]["spent"] == 1.2 and u["per_day"]["exceeded"]
    assert (u["per_day"]["overruns"], u["per_day"]["overrun_usd"]) == (1, 0.7)
    assert (u["total"]["overruns"], u["total"]["overrun_usd"]) == (1, 0.7)
    assert (u["per_request"]["overruns"], u["per_request"]["overrun_usd"]) == (1, 0.7)
    with pytest.raises(BudgetRefused) as e:
        store.hold(k, 0.01, request_id="b", ttl_s=60)
    assert e.value.window == "per_day" and e.value.spent_usd == 1.2


def test_expired_holds_are_charged_in_full_and_a_late_settle_corrects_them(
        store: KeyStore, clock: Clock) -> None:
    _, k = store.create("k", total_usd=1.0)
    lost = store.hold(k, 0.4, request_id="crashed", ttl_s=30)
    slow = store.hold(k, 0.4, request_id="slow", ttl_s=30)
    clock.t += 31
    u = store.usage(k)
    assert u["total"]["held"] == 0 and u["total"]["spent"] == 0.8 and u["live_holds"] == 0
    assert u["expired"]["count"] == 2 and u["expired"]["charged_usd"] == 0.8
    assert "real spend is unknown" in u["expired"]["note"]
    assert units(store.hold(k, None, request_id="c", ttl_s=30).amount_usd) == units(0.2)
    store.settle(slow, 0.1)  # the slow one settles after all: its real spend replaces the charge
    u = store.usage(k)
    assert u["expired"]["count"] == 1 and math.isclose(u["total"]["spent"], 0.5)
    store.settle(lost, 0.5)  # more than it held: an overrun
    assert store.usage(k)["total"]["overrun_usd"] == pytest.approx(0.1)


# ---------------------------------------------------------------------------- files
def test_a_corrupt_or_foreign_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(KeyStoreError, match=r"bad.sqlite' is not a readable orchestra key store "
                                            r".*move it aside"):
        KeyStore(bad)
    other = tmp_path / "traces.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE runs (x)").connection.commit()
    with pytest.raises(KeyStoreError, match=r"not an orchestra key store \(it holds tables "
                                            r"\['runs'\]\)"):
        KeyStore(other)
    with pytest.raises(KeyStoreError, match="is a folder"):
        KeyStore(tmp_path)


def test_a_locked_store_says_so(store: KeyStore) -> None:
    _, k = store.create("k", total_usd=1.0)
    # the same store, a short wait; another process in the middle of a write on the key
    impatient = KeyStore(store.url or store.path, timeout_s=0.2)
    if store.url:
        import psycopg

        blocker: Any = psycopg.connect(store.url, autocommit=True)
        blocker.execute("BEGIN")
        blocker.execute("SELECT 1 FROM keys WHERE id=%s FOR UPDATE", (k.id,))
    else:
        blocker = sqlite3.connect(store.where, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(KeyStoreError, match=r"stayed locked for 0.2 s .*another process holds"):
        impatient.hold(k, 0.1, request_id="r", ttl_s=60)
    blocker.execute("ROLLBACK")
    assert impatient.hold(k, 0.1, request_id="r", ttl_s=60).amount_usd == 0.1
    blocker.close()


def test_an_unreachable_postgres_says_so() -> None:
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    with pytest.raises(KeyStoreError, match=r"cannot open key store 'postgresql://me:\*\*\*@"):
        KeyStore("postgresql://me:secret@/nope?host=/nonexistent-folder", timeout_s=1)


def test_default_path_is_in_the_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    assert KeyStore().path == tmp_path / "home" / "keys.sqlite"


# ---------------------------------------------------------------------------- arithmetic
LIMIT = st.none() | st.integers(0, 10**12)


@settings(max_examples=300, deadline=None)
@given(want=LIMIT, per_request=LIMIT, per_day=LIMIT, total=LIMIT,
       spent_day=st.integers(0, 10**12), held_day=st.integers(0, 10**12),
       spent_before=st.integers(0, 10**12), held_before=st.integers(0, 10**12))
def test_fit_is_the_largest_amount_that_fits_every_window(
        want: int | None, per_request: int | None, per_day: int | None, total: int | None,
        spent_day: int, held_day: int, spent_before: int, held_before: int) -> None:
    limits = {"per_request": per_request, "per_day": per_day, "total": total}
    spent = {"per_day": spent_day, "total": spent_day + spent_before}
    held = {"per_day": held_day, "total": held_day + held_before}
    amount, window = fit_units(want, limits, spent, held)  # type: ignore[arg-type]
    if want is None and per_request is None and per_day is None and total is None:
        assert (amount, window) == (None, None)
        return
    assert amount is not None and amount >= 0
    # it fits: nothing goes past a limit that was not already past it
    if want is not None:
        assert amount <= want
    if per_request is not None:
        assert amount <= per_request
    for w, limit in (("per_day", per_day), ("total", total)):
        if limit is not None:
            room = limit - spent[w] - held[w]
            assert amount <= max(0, room)
    # and it is the largest that fits: one more unit breaks a bound, the one named
    bounds = {"per_request": per_request,
              "per_day": None if per_day is None else max(0, per_day - spent_day - held_day),
              "total": None if total is None else max(0, total - spent["total"] - held["total"])}
    if window is None:
        assert amount == want
        assert all(b is None or b > amount for b in bounds.values())
    else:
        assert bounds[window] == amount
        assert want is None or want >= amount


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 1e6, allow_nan=False), st.booleans())
def test_units_round_towards_safety(usd: float, up: bool) -> None:
    u = to_units(usd, up=up)
    x = usd * 1e9
    assert (u >= x - 1e-6 * max(1, x) if up else u <= x + 1e-6 * max(1, x))
    assert to_units(from_units(u) or 0.0, up=not up) == u  # a stored amount round-trips


def test_utc_day() -> None:
    assert utc_day(T0) == "2026-01-01" and utc_day(T0 - 1) == "2025-12-31"


# ---------------------------------------------------------------------------- a model of the books
class Books(RuleBasedStateMachine):
    """Random holds, settles (under and over the hold), repeated settles and clock jumps across
    expiry and UTC midnight, against a plain model of the same rules."""

    TTL = 3600.0

    @initialize(per_request=st.none() | st.integers(1, 6),
                per_day=st.none() | st.integers(0, 12), total=st.none() | st.integers(0, 20))
    def start(self, per_request: int | None, per_day: int | None, total: int | None) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.clock = Clock(T0 + DAY - 4 * 3600)
        self.store = KeyStore(Path(self.dir.name) / "k.sqlite", clock=self.clock)
        tenth = 100_000_000  # limits in tenths of a dollar, as units
        self.limits = {w: None if v is None else v * tenth
                       for w, v in (("per_request", per_request), ("per_day", per_day),
                                    ("total", total))}
        _, self.key = self.store.create(
            "k", **{f"{w}_usd": from_units(v) for w, v in self.limits.items()})
        # hold id -> [amount, day, expires_at, state, charged]
        self.model: dict[str, list[Any]] = {}
        self.holds: dict[str, Hold] = {}

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
            self.dir.cleanup()

    def _expire(self) -> None:
        for m in self.model.values():
            if m[3] == "live" and m[2] <= self.clock.t:
                m[3], m[4] = "expired", m[0] or 0

    def _windows(self) -> tuple[dict[str, int], dict[str, int]]:
        day = utc_day(self.clock.t)
        spent = {"per_day": sum(m[4] for m in self.model.values() if m[1] == day),
                 "total": sum(m[4] for m in self.model.values())}
        held = {"per_day": sum(m[0] or 0 for m in self.model.values()
                               if m[3] == "live" and m[1] == day),
                "total": sum(m[0] or 0 for m in self.model.values() if m[3] == "live")}
        return spent, held

    @rule(want=st.none() | st.integers(1, 8 * 10**8))
    def hold(self, want: int | None) -> None:
        self._expire()
        spent, held = self._windows()
        expected, _ = fit_units(want, self.limits, spent, held)  # type: ignore[arg-type]
        try:
            h = self.store.hold(self.key, from_units(want), request_id="r", ttl_s=self.TTL)
        except BudgetRefused as e:
            assert expected is not None and expected < 1
            assert e.window in ("per_request", "per_day", "total")
            return
        got = None if h.amount_usd is None else to_units(h.amount_usd, up=False)
        assert got == expected
        self.holds[h.id] = h
        self.model[h.id] = [got, h.day, h.expires_at, "live", 0]

    @rule(data=st.data(), fraction=st.sampled_from([0, 0.25, 0.5, 1, 1.5, 3]))
    def settle(self, data: st.DataObject, fraction: float) -> None:
        if not self.holds:
            return
        hid = data.draw(st.sampled_from(list(self.holds)))  # in order made (ids are random)
        m = self.model[hid]
        spent_units = int((m[0] if m[0] is not None else 10**8) * fraction)
        self.store.settle(self.holds[hid], from_units(spent_units) or 0.0)
        self._expire()
        if m[3] != "settled":
            m[3], m[4] = "settled", spent_units

    @rule(seconds=st.sampled_from([1.0, 600.0, 3599.0, 3601.0, 4 * 3600.0, DAY]))
    def wait(self, seconds: float) -> None:
        self.clock.t += seconds

    @invariant()
    def books_match_the_model_and_only_overruns_pass_a_limit(self) -> None:
        if not hasattr(self, "store"):
            return
        self._expire()
        u = self.store.usage(self.key)
        spent, held = self._windows()
        for w in ("per_day", "total"):
            assert to_units(u[w]["spent"], up=True) == spent[w], w
            assert to_units(u[w]["held"], up=True) == held[w], w
            limit = self.limits[w]
            if limit is not None:
                overrun = to_units(u[w]["overrun_usd"], up=True)
                assert spent[w] + held[w] <= limit + overrun, (w, u)
        assert u["expired"]["count"] == sum(m[3] == "expired" for m in self.model.values())


TestBooks = Books.TestCase
TestBooks.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)


# ---------------------------------------------------------------------------- the CLI
def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from orchestra.cli import main

    try:
        main(["keys", *args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_create_list_usage_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    path = str(tmp_path / "k.sqlite")
    code, out, err = cli(capsys, "create", "alice", "--per-day-usd", "2", "--total-usd", "10",
                         "--keys", path)
    raw = out.strip()
    assert code == 0 and raw.startswith(KEY_PREFIX) and "shown only this once" in err
    store = KeyStore(path)
    k = store.authenticate(raw)
    assert k is not None and (k.per_day_usd, k.total_usd, k.per_request_usd) == (2.0, 10.0, None)
    store.settle(store.hold(k, 0.5, request_id="r", ttl_s=60), 0.75)  # an overrun of 0.25
    store.hold(k, 0.1, request_id="s", ttl_s=60)

    code, out, _ = cli(capsys, "list", "--keys", path)
    assert code == 0 and "alice" in out and raw[:12] in out and raw[12:] not in out
    assert "$0.75 / $2" in out and "$0.75 / $10" in out and "1 ($0.1)" in out
    assert "1 (+$0.25)" in out

    code, out, _ = cli(capsys, "usage", "alice", "--keys", path, "--json")
    u = json.loads(out)
    assert code == 0 and u["per_day"]["spent"] == 0.75 and u["total"]["overruns"] == 1
    code, out, _ = cli(capsys, "usage", "alice", "--keys", path)
    assert code == 0 and "today (" in out and "$1.15" in out  # left today: 2 - 0.75 - 0.1

    code, out, _ = cli(capsys, "revoke", "alice", "--keys", path)
    assert code == 0 and "revoked 'alice'" in out
    assert store.authenticate(raw) is None
    code, out, _ = cli(capsys, "list", "--keys", path)
    assert "revoked" in out

    code, _, err = cli(capsys, "usage", "bob", "--keys", path)
    assert code == 2 and "no key 'bob'" in err and "known: alice" in err
    code, _, err = cli(capsys, "create", "alice", "--keys", path)
    assert code == 2 and "already exists" in err
    code, _, err = cli(capsys, "create", "carol", "--total-usd", "-1", "--keys", path)
    assert code == 2 and "--total-usd" in err

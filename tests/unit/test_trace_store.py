"""Conformance suite: every TraceStore implementation behaves the same (memory, SQLite, and
PostgreSQL on a real server the tests start: tests/pg_server.py, a fresh database per test,
skipped with the reason where the server cannot start)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_server import fresh_database

from orchestra.errors import UserError
from orchestra.trace.events import CallFinished, ErrorEvent, Refined, RunFinished, RunStarted
from orchestra.trace.store import MemoryTraceStore, SQLiteTraceStore, TraceStore


def _pg_url(request: pytest.FixtureRequest) -> str:
    return fresh_database(request.getfixturevalue("postgres_server_url"), "traces")


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TraceStore]:
    if request.param == "memory":
        s: TraceStore = MemoryTraceStore()
    elif request.param == "sqlite":
        s = SQLiteTraceStore(tmp_path / "t.sqlite")
    else:
        from orchestra.trace.pg_store import PostgresTraceStore

        s = PostgresTraceStore(_pg_url(request))
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a database store lives: a SQLite file or a PostgreSQL URL."""
    return str(tmp_path / "t.sqlite") if request.param == "sqlite" else _pg_url(request)


def _raw(target: str, sql: str, args: tuple[Any, ...] = ()) -> None:
    """Write to a store's tables behind its back (to damage a row)."""
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(sql.replace("?", "%s"), args)
    else:
        import sqlite3

        conn = sqlite3.connect(target)
        with conn:
            conn.execute(sql, args)
        conn.close()


def fill(store: TraceStore, rid: str, query: str, cost: float, ts: float,
         status: str = "ok", finish: bool = True) -> None:
    seq = 0

    def put(ev: Any) -> None:
        nonlocal seq
        store.append(ev.__class__(**{**ev.__dict__, "seq": seq}))
        seq += 1

    put(RunStarted(run_id=rid, query=query, pool="p", policy="cheapest", budget={"usd": 1}, ts=ts))
    put(CallFinished(run_id=rid, round=0, call_id="c1", agent="a", model="m", model_id="test/m",
                     output="out", input_tokens=3, output_tokens=2, cost_usd=cost, latency_s=0.1,
                     ts=ts + 1))
    put(Refined(run_id=rid, round=0, refiner="pass", inputs=[], output="out", ts=ts + 2))
    if finish:
        put(RunFinished(run_id=rid, answer="out", stop_reason="answered" if status == "ok" else "budget:usd",
                        status=status, cost_usd=cost, input_tokens=3, output_tokens=2, calls=1,
                        rounds=1, duration_s=2.0, ts=ts + 3))


def test_summary_is_kept_current(store: TraceStore) -> None:
    fill(store, "r1", "capital of France", 0.5, 100.0, finish=False)
    run = store.get_run("r1")
    assert run is not None
    # A run that has not finished (or crashed) still shows its spend so far.
    assert run["status"] == "running" and run["cost_usd"] == pytest.approx(0.5) and run["calls"] == 1
    store.append(ErrorEvent(run_id="r1", seq=3, where="run", error_type="Boom", message="died",
                            fatal=True))
    run = store.get_run("r1")
    assert run is not None and run["status"] == "error" and run["cost_usd"] == pytest.approx(0.5)
    assert store.last_seq("r1") == 3


def test_events_come_back_in_order_and_after_seq(store: TraceStore) -> None:
    fill(store, "r1", "q", 0.1, 1.0)
    evs = store.events("r1")
    assert [e["kind"] for e in evs] == ["run_started", "call_finished", "refined", "run_finished"]
    assert [e["seq"] for e in store.events("r1", after_seq=1)] == [2, 3]
    assert store.events("nope") == [] and store.last_seq("nope") == -1


def test_list_filters_sorts_and_pages(store: TraceStore) -> None:
    for i in range(25):
        fill(store, f"run{i:02d}", f"question {i} {'paris' if i % 5 == 0 else ''}", cost=i / 100,
             ts=1000.0 + i, status="budget" if i % 2 else "ok")
    assert store.count_runs() == 25
    newest = store.list_runs(limit=10)
    assert [r["run_id"] for r in newest][:3] == ["run24", "run23", "run22"]
    page2 = store.list_runs(limit=10, offset=10)
    assert page2[0]["run_id"] == "run14"
    assert store.count_runs(search="paris") == 5
    assert {r["run_id"] for r in store.list_runs(search="PARIS")} == {f"run{i:02d}" for i in (0, 5, 10, 15, 20)}
    assert store.count_runs(status="budget") == 12
    by_cost = store.list_runs(sort="cost_usd", descending=False, limit=3)
    assert [r["run_id"] for r in by_cost] == ["run00", "run01", "run02"]


def test_find_run_by_prefix(store: TraceStore) -> None:
    fill(store, "abc123", "q", 0.1, 1.0)
    fill(store, "abd456", "q", 0.1, 2.0)
    assert store.find_run("abc")["run_id"] == "abc123"
    with pytest.raises(UserError, match="ambiguous"):
        store.find_run("ab")
    with pytest.raises(UserError, match="no run"):
        store.find_run("zzz")


def test_sqlite_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    s = SQLiteTraceStore(path)
    fill(s, "r1", "q", 0.25, 1.0)
    s.close()
    again = SQLiteTraceStore(path, readonly=True)
    assert again.get_run("r1")["cost_usd"] == pytest.approx(0.25)  # type: ignore[index]


def test_corrupt_or_missing_file_is_a_clear_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UserError, match="not a readable orchestra trace database"):
        SQLiteTraceStore(bad)
    with pytest.raises(UserError, match="does not exist"):
        SQLiteTraceStore(tmp_path / "missing.sqlite", readonly=True)


def test_aggregate_calls_and_facets(store: TraceStore) -> None:
    fill(store, "r1", "q", 0.25, 1.0)
    fill(store, "r2", "q", 0.5, 2.0, status="budget")
    store.append(CallFinished(run_id="r2", seq=4, round=1, call_id="c2", agent="b", model="n",
                              model_id="test/n", output="", input_tokens=1, output_tokens=0,
                              cost_usd=0.0, latency_s=0.5, error="boom", ts=9.0))
    by_model = store.aggregate_calls("model")
    assert [(t["key"], t["calls"], t["errors"], t["runs"]) for t in by_model] == [
        ("m", 2, 0, 2), ("n", 1, 1, 1)]
    assert by_model[0]["cost_usd"] == pytest.approx(0.75)
    assert by_model[0]["input_tokens"] == 6 and by_model[0]["output_tokens"] == 4
    assert by_model[1]["latency_s"] == pytest.approx(0.5)
    assert [t["key"] for t in store.aggregate_calls("agent", status="ok")] == ["a"]
    with pytest.raises(UserError, match="cannot aggregate calls by 'pool'"):
        store.aggregate_calls("pool")  # type: ignore[arg-type]
    assert store.run_facets() == {"status": ["budget", "ok"], "policy": ["cheapest"],
                                  "pool": ["p"]}


def test_text_a_database_may_refuse_is_kept_readable(store: TraceStore) -> None:
    """A NUL character (PostgreSQL text cannot hold one) does not fail a write."""
    fill(store, "r1", "nul\x00 here", 0.1, 1.0)
    run = store.get_run("r1")
    assert run is not None and run["query"].startswith("nul") and run["status"] == "ok"
    assert store.events("r1")[0]["query"].startswith("nul")
    assert store.aggregate_calls("model")[0]["calls"] == 1


def test_damaged_rows_are_read_around(target: str) -> None:
    """A row whose JSON does not parse is reported as damaged; the rest still reads."""
    from orchestra.trace.pg_store import open_store

    s = open_store(target)
    assert s is not None
    fill(s, "r1", "q", 0.1, 1.0)
    fill(s, "r2", "q", 0.2, 2.0)
    _raw(target, "UPDATE runs SET meta = ? WHERE run_id = ?", ("{not json", "r1"))
    _raw(target, "UPDATE events SET data = ? WHERE run_id = ? AND seq = ?", ("][", "r1", 2))
    run = s.get_run("r1")
    assert run is not None and run["meta"] is None and run["damaged"] == ["meta"]
    assert [e["kind"] for e in s.events("r1")] == [
        "run_started", "call_finished", "damaged", "run_finished"]
    assert {r["run_id"] for r in s.list_runs()} == {"r1", "r2"}
    if target.startswith("postgresql://"):  # SQLite's json_extract fails the whole query
        _raw(target, "UPDATE events SET data = ? WHERE run_id = ? AND seq = ?", ("{", "r1", 1))
        assert [(t["key"], t["runs"]) for t in s.aggregate_calls("model")] == [("m", 1)]
    s.close()


def test_open_store_picks_the_store_from_the_target(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestra.trace.pg_store import open_store, trace_target

    assert open_store(False) is None
    s = open_store(tmp_path / "a.sqlite")
    assert isinstance(s, SQLiteTraceStore) and s.path == tmp_path / "a.sqlite"
    s.close()
    monkeypatch.setenv("ORCHESTRA_TRACE_DB", "postgresql://u@/db?host=/nowhere")
    assert trace_target(None) == "postgresql://u@/db?host=/nowhere"
    with pytest.raises(UserError, match="is a PostgreSQL URL, not a file"):
        SQLiteTraceStore()
    monkeypatch.setenv("ORCHESTRA_TRACE_DB", str(tmp_path / "env.sqlite"))
    assert trace_target(None) == tmp_path / "env.sqlite"


def test_unreachable_or_foreign_postgres_is_a_clear_user_error(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from orchestra.trace.pg_store import PostgresTraceStore

    with pytest.raises(UserError, match=r"cannot open trace store 'postgresql://me:\*\*\*@.*"
                                        r"pass --db"):
        PostgresTraceStore(f"postgresql://me:secret@/db?host={tmp_path}", timeout_s=2)
    with pytest.raises(UserError, match="expected a postgresql:// URL"):
        PostgresTraceStore(str(tmp_path / "x.sqlite"))
    url = _pg_url(request)
    with pytest.raises(UserError, match="holds no orchestra traces yet"):
        PostgresTraceStore(url, readonly=True)
    _raw(url, "CREATE TABLE runs (id INTEGER)")
    with pytest.raises(UserError, match="not an orchestra trace store"):
        PostgresTraceStore(url)


def test_postgres_store_survives_reopening_and_shares_a_database_with_the_key_store(
        request: pytest.FixtureRequest) -> None:
    from orchestra.serve.keys import KeyStore
    from orchestra.trace.pg_store import PostgresTraceStore

    url = _pg_url(request)
    keys = KeyStore(url)  # its own ``meta`` table; the trace store's is ``trace_meta``
    keys.create("bob", per_day_usd=1.0)
    s = PostgresTraceStore(url)
    fill(s, "r1", "q", 0.25, 1.0)
    s.close()
    again = PostgresTraceStore(url, readonly=True)
    assert again.get_run("r1")["cost_usd"] == pytest.approx(0.25)  # type: ignore[index]
    with pytest.raises(UserError, match="read-only"):
        fill(again, "r2", "q", 0.1, 2.0)
    again.close()
    assert KeyStore(url).usage("bob")["per_day"]["spent"] == 0


def test_threads_writing_their_own_runs_at_once_lose_nothing(store: TraceStore) -> None:
    import threading

    def write(t: int) -> None:
        for i in range(5):
            fill(store, f"t{t}-{i}", "q", 0.01, 1.0 + i)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert store.count_runs() == store.count_runs(status="ok") == 20
    assert all(len(store.events(f"t{t}-{i}")) == 4 for t in range(4) for i in range(5))
    assert store.aggregate_calls("model")[0]["cost_usd"] == pytest.approx(0.2)


def _write_runs(url: str, prefix: str, n: int) -> None:
    from orchestra.trace.pg_store import PostgresTraceStore

    s = PostgresTraceStore(url)
    for i in range(n):
        fill(s, f"{prefix}{i:02d}", f"{prefix} question {i}", 0.01 * (i + 1), 100.0 + i,
             finish=i % 4 != 3)
    s.close()


def test_two_processes_write_one_postgres_store_at_once(request: pytest.FixtureRequest) -> None:
    from orchestra.trace.pg_store import PostgresTraceStore

    url = _pg_url(request)  # an empty database: both writers create the tables at once
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_runs, args=(url, p, 20)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    s = PostgresTraceStore(url, readonly=True)
    assert s.count_runs() == 40 and s.count_runs(status="running") == 10
    for p in ("a", "b"):
        for i in range(20):
            run = s.get_run(f"{p}{i:02d}")
            assert run is not None and run["cost_usd"] == pytest.approx(0.01 * (i + 1))
            assert [e["seq"] for e in s.events(f"{p}{i:02d}")] == list(range(4 if i % 4 != 3
                                                                              else 3))
    assert s.aggregate_calls("model")[0]["calls"] == 40
    s.close()


def test_cli_viewer_export_and_orchestra_take_a_postgres_url(
        request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``postgresql://`` URL goes wherever a trace file does: ``--db`` of ``traces`` (and
    ``run``), the viewer, ``traces export``, ``Orchestra(store=...)`` and $ORCHESTRA_TRACE_DB."""
    import json

    from orchestra import Orchestra
    from orchestra.cli import main
    from orchestra.testing import FunctionBackend, make_pool
    from orchestra.trace.pg_store import PostgresTraceStore
    from orchestra.trace.viewer.server import create_server

    url = _pg_url(request).replace("postgres@", "postgres:pw@")  # trust auth ignores it
    o = Orchestra(make_pool(), backend=FunctionBackend(lambda r: "Paris"), store=url)
    assert isinstance(o.store, PostgresTraceStore)
    rid = o.run("capital of France?", meta={"gold": "Paris"}).trace_id
    monkeypatch.setenv("ORCHESTRA_TRACE_DB", url)
    o2 = Orchestra(make_pool(), backend=FunctionBackend(lambda r: "Rome"))
    assert isinstance(o2.store, PostgresTraceStore)  # the default store, from the environment
    rid2 = o2.run("capital of Italy?").trace_id
    monkeypatch.delenv("ORCHESTRA_TRACE_DB")

    with pytest.raises(SystemExit) as e:
        main(["traces", "list", "--json", "--db", url])
    assert e.value.code in (0, None)
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [rid2, rid] and listed[1]["answer"] == "Paris"
    with pytest.raises(SystemExit):
        main(["traces", "show", rid[:8], "--json", "--db", url])
    shown = json.loads(capsys.readouterr().out)
    assert shown["run"]["run_id"] == rid and shown["events"][-1]["kind"] == "run_finished"
    out = tmp_path / "runs.jsonl"
    with pytest.raises(SystemExit):
        main(["traces", "export", "--db", url, "--out", str(out)])
    assert "exported 2 runs" in capsys.readouterr().out
    assert {json.loads(line)["run_id"] for line in out.read_text().splitlines()} == {rid, rid2}

    viewer = create_server(url, port=0)
    try:
        health = viewer.api.health()
        assert health["runs"] == 2 and health["db"].startswith("postgresql://postgres:***@")
    finally:
        viewer.server_close()

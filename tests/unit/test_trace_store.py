"""Conformance suite: every TraceStore implementation behaves the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestra.errors import UserError
from orchestra.trace.events import CallFinished, ErrorEvent, Refined, RunFinished, RunStarted
from orchestra.trace.store import MemoryTraceStore, SQLiteTraceStore, TraceStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TraceStore:
    if request.param == "memory":
        return MemoryTraceStore()
    return SQLiteTraceStore(tmp_path / "t.sqlite")


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

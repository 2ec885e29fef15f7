"""Exporting stored runs as training examples and reading them back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestra.errors import UserError
from orchestra.trace.events import (
    CallFinished,
    CallStarted,
    ErrorEvent,
    PolicyDecided,
    Refined,
    RunFinished,
    RunStarted,
)
from orchestra.trace.export import (
    TraceExample,
    export_runs,
    normalize_answer,
    read_examples,
)
from orchestra.trace.store import MemoryTraceStore, SQLiteTraceStore, TraceStore

T0 = 1_750_000_000.0


def add_run(store: TraceStore, run_id: str, *, query: str, answer: str | None, t: float,
            policy: str = "ensemble", pool: str = "demo", status: str = "ok",
            gold: Any = None, unfinished_call: bool = False) -> None:
    """A two-call run: decision, two parallel calls (one failed), refine, finish."""
    seq = iter(range(100))

    def put(ev: Any) -> None:
        store.append(ev)

    meta = {"gold": gold} if gold is not None else {}
    put(RunStarted(run_id=run_id, seq=next(seq), ts=t, query=query, pool=pool, policy=policy,
                   budget={"usd": 1.0}, meta=meta))
    put(PolicyDecided(run_id=run_id, seq=next(seq), ts=t + 0.1, round=0, action="route",
                      reason="two cheap models", scores={"small": 0.7, "tiny": 0.4},
                      calls=[{"call_id": "c0", "agent": "assistant", "model": "small",
                              "max_tokens": 64, "reserved_usd": 0.01},
                             {"call_id": "c1", "agent": "assistant", "model": "tiny",
                              "max_tokens": 64, "reserved_usd": 0.001}],
                      dropped=[{"agent": "assistant", "model": "large", "limit": "usd"}]))
    for i, m in enumerate(("small", "tiny")):
        put(CallStarted(run_id=run_id, seq=next(seq), ts=t + 0.2, round=0, call_id=f"c{i}",
                        agent="assistant", model=m, model_id=f"test/{m}",
                        messages=[{"role": "user", "content": query}], max_tokens=64,
                        reserved_usd=0.01))
    put(CallFinished(run_id=run_id, seq=next(seq), ts=t + 0.5, round=0, call_id="c0",
                     agent="assistant", model="small", model_id="test/small",
                     output=answer or "", input_tokens=12, output_tokens=3, cost_usd=0.002,
                     latency_s=0.3))
    if not unfinished_call:
        put(CallFinished(run_id=run_id, seq=next(seq), ts=t + 0.6, round=0, call_id="c1",
                         agent="assistant", model="tiny", model_id="test/tiny", output="",
                         input_tokens=12, output_tokens=0, cost_usd=0.0, latency_s=0.4,
                         error="BackendError: timeout"))
    put(Refined(run_id=run_id, seq=next(seq), ts=t + 0.7, round=0, refiner="vote",
                inputs=[{"agent": "assistant", "model": "small", "output": answer}],
                output=answer or "", votes={answer or "": 1}))
    if status == "error":
        put(ErrorEvent(run_id=run_id, seq=next(seq), ts=t + 0.8, where="run",
                       error_type="RunError", message="boom", fatal=True))
    elif status != "running":
        put(RunFinished(run_id=run_id, seq=next(seq), ts=t + 0.8, answer=answer,
                        stop_reason="answered" if status == "ok" else "budget:usd",
                        status=status,  # type: ignore[arg-type]
                        cost_usd=0.002, input_tokens=24, output_tokens=3, calls=2, rounds=1,
                        duration_s=0.8))


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TraceStore:
    s: TraceStore = (SQLiteTraceStore(tmp_path / "t.sqlite") if request.param == "sqlite"
                     else MemoryTraceStore())
    add_run(s, "r1", query="Capital of France?", answer="Paris.", t=T0, gold="paris")
    add_run(s, "r2", query="Capital of Italy?", answer="Milan", t=T0 + 1, gold=["Rome", "Roma"],
            policy="cheapest")
    add_run(s, "r3", query="2+2?", answer="The 4", t=T0 + 2, gold="4", status="budget", pool="math")
    add_run(s, "r4", query="No gold here", answer="whatever", t=T0 + 3)
    add_run(s, "r5", query="Broken", answer=None, t=T0 + 4, status="error", unfinished_call=True)
    add_run(s, "r6", query="In progress", answer="…", t=T0 + 5, status="running")
    return s


def test_round_trip_through_read_examples(store: TraceStore, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "examples.jsonl"
    n = export_runs(store, out)
    assert n == 5  # the running run is not exported
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    examples = list(read_examples(out))
    assert all(isinstance(e, TraceExample) for e in examples)
    assert [e.run_id for e in examples] == ["r1", "r2", "r3", "r4", "r5"]  # oldest first
    # The file's objects are exactly the validated examples.
    assert [json.loads(line) for line in lines] == [e.model_dump(mode="json") for e in examples]

    r1 = examples[0]
    assert (r1.query, r1.pool, r1.policy, r1.status) == ("Capital of France?", "demo", "ensemble", "ok")
    assert r1.answer == "Paris." and r1.stop_reason == "answered"
    assert r1.cost_usd == pytest.approx(0.002)
    assert len(r1.decisions) == 1
    d = r1.decisions[0]
    assert (d.round, d.action, d.reason) == (0, "route", "two cheap models")
    assert d.scores == {"small": 0.7, "tiny": 0.4}
    assert [(c.agent, c.model) for c in d.calls] == [("assistant", "small"), ("assistant", "tiny")]
    assert [(c.agent, c.model, c.role) for c in r1.calls] == [("assistant", "small", "route"),
                                                             ("assistant", "tiny", "route")]
    ok, failed = r1.calls
    assert (ok.input_tokens, ok.output_tokens, ok.cost_usd, ok.latency_s) == (12, 3, 0.002, 0.3)
    assert ok.output == "Paris." and ok.error is None
    assert failed.error == "BackendError: timeout" and failed.output == ""

    r5 = examples[4]
    assert r5.status == "error" and r5.stop_reason == "error: boom"
    assert r5.calls[1].model == "tiny" and "did not finish" in (r5.calls[1].error or "")


def test_grading_by_gold_and_by_given_grades(store: TraceStore, tmp_path: Path) -> None:
    out = tmp_path / "g.jsonl"
    export_runs(store, out)
    scores = {e.run_id: e.score for e in read_examples(out)}
    # "Paris." vs "paris": punctuation and case ignored; "The 4" vs "4": articles ignored;
    # "Milan" is none of ["Rome", "Roma"]; no gold → no score.
    assert scores == {"r1": 1.0, "r2": 0.0, "r3": 1.0, "r4": None, "r5": None}

    export_runs(store, out, grades={"r2": 0.5, "No gold here": 0.25, "Capital of France?": 0.0,
                                    "r1": 0.75})
    scores = {e.run_id: e.score for e in read_examples(out)}
    # A run id wins over a query; a query applies when no run id matches; gold fills the rest.
    assert scores == {"r1": 0.75, "r2": 0.5, "r3": 1.0, "r4": 0.25, "r5": None}


def test_filters(store: TraceStore, tmp_path: Path) -> None:
    out = tmp_path / "f.jsonl"

    def ids(**filters: Any) -> list[str]:
        export_runs(store, out, **filters)
        return [e.run_id for e in read_examples(out)]

    assert ids(status="ok") == ["r1", "r2", "r4"]
    assert ids(status="budget") == ["r3"]
    assert ids(status="error") == ["r5"]
    assert ids(policy="cheapest") == ["r2"]
    assert ids(pool="math") == ["r3"]
    assert ids(search="Capital") == ["r1", "r2"]
    assert ids(search="Capital", policy="ensemble") == ["r1"]
    assert ids(search="nothing matches this") == []
    assert out.read_text() == ""
    with pytest.raises(UserError, match="'running'"):
        export_runs(store, out, status="running")
    with pytest.raises(UserError, match="'r1'"):
        export_runs(store, out, grades={"r1": "good"})  # type: ignore[dict-item]


def test_normalize_answer() -> None:
    assert normalize_answer("  The  Eiffel-Tower!! ") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"


def test_read_examples_rejects_bad_lines(tmp_path: Path, store: TraceStore) -> None:
    good = tmp_path / "good.jsonl"
    export_runs(store, good)
    first = json.loads(good.read_text().splitlines()[0])

    def bad(line: str) -> str:
        p = tmp_path / "bad.jsonl"
        p.write_text(json.dumps(first) + "\n\n" + line + "\n")
        with pytest.raises(UserError) as e:
            list(read_examples(p))
        return str(e.value)

    assert ":3:" in bad("{not json")  # blank lines are skipped but counted
    msg = bad(json.dumps({**first, "cost_usd": "cheap"}))
    assert ":3:" in msg and "cost_usd" in msg and "'cheap'" in msg
    assert "version 2" in bad(json.dumps({**first, "version": 2}))
    msg = bad(json.dumps({**first, "calls": [{**first["calls"][0], "role": 7}]}))
    assert "role" in msg and "7" in msg
    assert "extra_field" in bad(json.dumps({**first, "extra_field": 1}))
    with pytest.raises(UserError, match="orchestra traces export"):
        list(read_examples(tmp_path / "missing.jsonl"))


def test_export_command_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestra.cli import main

    db = tmp_path / "t.sqlite"
    s = SQLiteTraceStore(db)
    add_run(s, "r1", query="Capital of France?", answer="Paris", t=T0, gold="Paris")
    add_run(s, "r2", query="Capital of Italy?", answer="Rome", t=T0 + 1, policy="cheapest")
    s.close()
    grades = tmp_path / "grades.json"
    grades.write_text(json.dumps({"Capital of Italy?": 0.5}))
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as e:
        main(["traces", "export", "--db", str(db), "--out", str(out), "--grades", str(grades)])
    assert e.value.code in (0, None)
    assert "exported 2 runs" in capsys.readouterr().out
    assert [(x.run_id, x.score) for x in read_examples(out)] == [("r1", 1.0), ("r2", 0.5)]

    with pytest.raises(SystemExit) as e:
        main(["traces", "export", "--db", str(db), "--out", str(out), "--policy", "cheapest"])
    assert [x.run_id for x in read_examples(out)] == ["r2"]

    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit) as e:
        main(["traces", "export", "--db", str(db), "--out", str(out), "--grades", str(bad)])
    assert e.value.code == 2
    assert "must hold a JSON object" in " ".join(capsys.readouterr().err.split())


def test_a_stored_bad_run_is_skipped_not_fatal(store: TraceStore, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """An older version stored a call with negative usage (cost -0.99999): that run is skipped
    with its reason and every other run is still exported (it used to break the whole export)."""
    add_run(store, "bad", query="Lying provider", answer="x", t=T0 + 6)
    store.append(CallFinished(run_id="bad", seq=50, ts=T0 + 6.5, round=0, call_id="c9",
                              agent="assistant", model="small", model_id="test/small",
                              output="x", input_tokens=-5, output_tokens=-1_000_000,
                              cost_usd=-0.99999, latency_s=0.1))
    out = tmp_path / "e.jsonl"
    skipped: list[tuple[str, str]] = []
    n = export_runs(store, out, on_skip=lambda rid, why: skipped.append((rid, why)))
    assert n == 5 and [e.run_id for e in read_examples(out)] == ["r1", "r2", "r3", "r4", "r5"]
    assert [rid for rid, _ in skipped] == ["bad"]
    assert "input_tokens" in skipped[0][1] and "-5" in skipped[0][1]
    assert export_runs(store, out) == 5  # without a callback too

    if isinstance(store, SQLiteTraceStore):
        from orchestra.cli import main

        with pytest.raises(SystemExit) as e:
            main(["traces", "export", "--db", str(store.path), "--out", str(out)])
        assert e.value.code in (0, None)
        captured = capsys.readouterr()
        assert "exported 5 runs" in captured.out and "1 skipped" in captured.out
        assert "skipped run bad: " in captured.err


def test_overruns_are_exported_with_the_call_and_the_run(store: TraceStore, tmp_path: Path) -> None:
    over = {"reserved_usd": 0.01, "charged_usd": 0.03, "excess_usd": 0.02, "reserved_tokens": 76,
            "charged_tokens": 212, "excess_tokens": 136, "reason": "the provider ignored max_tokens"}
    t = T0 + 7
    store.append(RunStarted(run_id="ov", seq=0, ts=t, query="Verbose", pool="demo",
                            policy="single", budget={"usd": 0.02}))
    store.append(CallFinished(run_id="ov", seq=1, ts=t + 0.5, round=0, call_id="c0",
                              agent="assistant", model="small", model_id="test/small",
                              output="long…", input_tokens=12, output_tokens=200, cost_usd=0.03,
                              latency_s=0.3, overrun=over))
    store.append(RunFinished(run_id="ov", seq=2, ts=t + 0.8, answer="long…",
                             stop_reason="budget_overrun", status="budget", cost_usd=0.03,
                             input_tokens=12, output_tokens=200, calls=1, rounds=1, duration_s=0.8,
                             overruns=[{"call_id": "c0", "agent": "assistant", "model": "small",
                                        **over}]))
    out = tmp_path / "e.jsonl"
    export_runs(store, out, search="Verbose")
    [ex] = list(read_examples(out))
    assert ex.stop_reason == "budget_overrun" and ex.cost_usd == 0.03
    assert ex.calls[0].overrun == over
    assert ex.overruns == [{"call_id": "c0", "agent": "assistant", "model": "small", **over}]
    # Examples written before the fields existed still read.
    old = json.loads(out.read_text())
    for c in old["calls"]:
        c.pop("overrun")
    old.pop("overruns")
    out.write_text(json.dumps(old) + "\n")
    assert [e.overruns for e in read_examples(out)] == [[]]


def test_a_run_with_a_damaged_stored_event_is_skipped(tmp_path: Path) -> None:
    import sqlite3

    s = SQLiteTraceStore(tmp_path / "t.sqlite")
    add_run(s, "good", query="Fine", answer="yes", t=T0)
    add_run(s, "hurt", query="Hurt", answer="yes", t=T0 + 1)
    con = sqlite3.connect(tmp_path / "t.sqlite")
    con.execute("UPDATE events SET data = '{cut' WHERE run_id = 'hurt' AND seq = 1")
    con.commit()
    con.close()
    skipped: list[tuple[str, str]] = []
    assert export_runs(s, tmp_path / "e.jsonl",
                       on_skip=lambda rid, why: skipped.append((rid, why))) == 1
    assert skipped == [("hurt", ("ValueError: event 1 of run 'hurt' is not JSON (Expecting "
                                 "property name enclosed in double quotes: line 1 column 2 "
                                 "(char 1))"))]

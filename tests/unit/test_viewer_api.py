"""The trace viewer's JSON API, over a real SQLite store filled with real event objects and
served by the real HTTP server on a free port."""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
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
from orchestra.trace.store import MemoryTraceStore, SQLiteTraceStore, TraceStore
from orchestra.trace.viewer.server import ViewerLimits, ViewerServer, create_server

XSS = "<script>alert(1)</script><b>x</b>"
BUDGET = {"usd": 1.0, "tokens": 10_000, "calls": 10, "rounds": 4, "seconds": None}


# --------------------------------------------------------------------------- building runs
class RunBuilder:
    """Appends the events of one run to a store, as the runtime would."""

    def __init__(self, store: TraceStore, run_id: str, *, query: str, t0: float,
                 pool: str = "demo", policy: str = "ensemble", meta: dict[str, Any] | None = None):
        self.store, self.run_id, self.t = store, run_id, t0
        self.seq = 0
        self.cost = 0.0
        self.tin = self.tout = self.calls = self.rounds = 0
        self.t0 = t0
        self.emit(RunStarted(run_id=run_id, query=query, pool=pool, policy=policy, budget=BUDGET,
                             models=["small", "large"], agents=["assistant", "verifier"],
                             meta=meta or {}))

    def emit(self, ev: Any) -> None:
        # seq and ts are set here so that every run is a consistent, ordered stream.
        ev = dataclasses.replace(ev, seq=self.seq, ts=self.t)
        self.store.append(ev)
        self.seq += 1

    def left(self) -> dict[str, Any]:
        return {"usd": 1.0 - self.cost, "tokens": 10_000 - self.tin - self.tout,
                "calls": 10 - self.calls, "rounds": 4 - self.rounds, "seconds": None,
                "spent_usd": self.cost, "spent_tokens": self.tin + self.tout,
                "spent_calls": self.calls, "rounds_done": self.rounds}

    def round(self, calls: list[tuple[str, str, float, str, str | None]],
              answer: str | None = None) -> None:
        """One round: decision, parallel calls (agent, model, cost, output, error), refine."""
        r = self.rounds
        self.t += 0.01
        self.emit(PolicyDecided(
            run_id=self.run_id, round=r, action="route", reason=f"round {r} fan-out",
            scores={m: 0.5 + 0.1 * i for i, (_, m, *_rest) in enumerate(calls)},
            calls=[{"agent": a, "model": m} for a, m, *_ in calls],
            dropped=[{"agent": "assistant", "model": "huge", "limit": "usd"}],
            budget_left=self.left()))
        start = self.t
        for i, (a, m, *_rest) in enumerate(calls):
            self.t = start + 0.001 * i
            self.emit(CallStarted(
                run_id=self.run_id, round=r, call_id=f"{self.run_id}-r{r}-c{i}", agent=a, model=m,
                model_id=f"test/{m}", messages=[{"role": "system", "content": f"You are {a}."},
                                                {"role": "user", "content": "the question"}],
                max_tokens=64, reserved_usd=0.01))
        outs = []
        for i, (a, m, cost, out, err) in enumerate(calls):
            lat = 0.2 * (i + 1)
            self.t = start + lat
            tin, tout = 10 + i, 5 + i
            self.cost += cost
            self.tin += tin
            self.tout += tout
            self.calls += 1
            self.emit(CallFinished(
                run_id=self.run_id, round=r, call_id=f"{self.run_id}-r{r}-c{i}", agent=a, model=m,
                model_id=f"test/{m}", output=out, input_tokens=tin, output_tokens=tout,
                cost_usd=cost, latency_s=lat, error=err, budget_left=self.left()))
            outs.append({"agent": a, "model": m, "output": out})
        self.t += 0.01
        self.rounds += 1
        self.emit(Refined(run_id=self.run_id, round=r, refiner="vote", inputs=outs,
                          output=answer if answer is not None else outs[0]["output"],
                          votes={o["output"]: 1 for o in outs}, budget_left=self.left()))

    def finish(self, status: str = "ok", stop_reason: str = "answered",
               answer: str | None = None) -> None:
        self.t += 0.01
        self.emit(RunFinished(
            run_id=self.run_id, answer=answer, stop_reason=stop_reason, status=status,  # type: ignore[arg-type]
            cost_usd=self.cost, input_tokens=self.tin, output_tokens=self.tout, calls=self.calls,
            rounds=self.rounds, duration_s=self.t - self.t0))

    def fail(self, message: str) -> None:
        self.t += 0.01
        self.emit(ErrorEvent(run_id=self.run_id, where="run", error_type="BackendError",
                             message=message, fatal=True))


T0 = 1_750_000_000.0


def fill_small(store: TraceStore) -> None:
    """Six runs with known numbers (see the assertions)."""
    b = RunBuilder(store, "run-a", query="What is the capital of France?", t0=T0, policy="ensemble")
    b.round([("assistant", "small", 0.001, "Paris", None), ("assistant", "large", 0.004, "Paris.", None)])
    b.finish(answer="Paris")

    b = RunBuilder(store, "run-b", query="What is the capital of France?", t0=T0 + 10, policy="cheapest")
    b.round([("assistant", "small", 0.002, "Lyon", None)])
    b.finish(answer="Lyon")

    b = RunBuilder(store, "run-c", query="Prove Fermat's last theorem", t0=T0 + 20, policy="ensemble",
                   pool="math")
    b.round([("assistant", "large", 0.3, "It is long.", None), ("verifier", "small", 0.01, "UNSURE", None)])
    b.round([("assistant", "large", 0.5, "Still long.", None)])
    b.finish(status="budget", stop_reason="budget:usd", answer="Still long.")

    b = RunBuilder(store, "run-d", query="Crash please", t0=T0 + 30, policy="cascade")
    b.round([("assistant", "small", 0.0, "", "BackendError: rate limited (429)")])
    b.fail("all calls failed: rate limited")

    b = RunBuilder(store, "run-x", query="Echo an injection", t0=T0 + 40, policy="cheapest")
    b.round([("assistant", "small", 0.001, XSS, None)])
    b.finish(answer=XSS)

    b = RunBuilder(store, "run-live", query="Still thinking", t0=T0 + 50, policy="cheapest")
    b.round([("assistant", "small", 0.001, "partial", None)])  # no run_finished: running


def finish_live(store: SQLiteTraceStore) -> None:
    """End "run-live" (left running by :func:`fill_small`)."""
    store.append(RunFinished(run_id="run-live", seq=5, ts=T0 + 60, answer="partial",
                             stop_reason="answered", status="ok", cost_usd=0.001,
                             input_tokens=10, output_tokens=5, calls=1, rounds=1,
                             duration_s=10.0))


# --------------------------------------------------------------------------- fixtures
@pytest.fixture()
def store(tmp_path: Path) -> Iterator[SQLiteTraceStore]:
    s = SQLiteTraceStore(tmp_path / "traces.sqlite")
    fill_small(s)
    yield s
    s.close()


@pytest.fixture()
def server(store: SQLiteTraceStore) -> Iterator[ViewerServer]:
    srv = create_server(store.path, "127.0.0.1", 0, poll_s=0.05)
    srv.start()
    yield srv
    srv.stop()


def get(srv: ViewerServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(srv.url.rstrip("/") + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            ctype = r.headers.get("Content-Type", "")
            return r.status, (json.loads(body) if "json" in ctype else body.decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --------------------------------------------------------------------------- runs list
def test_list_newest_first_with_totals(server: ViewerServer) -> None:
    status, data = get(server, "/api/runs")
    assert status == 200
    assert data["total"] == 6
    assert [r["run_id"] for r in data["runs"]] == ["run-live", "run-x", "run-d", "run-c", "run-b", "run-a"]
    c = next(r for r in data["runs"] if r["run_id"] == "run-c")
    assert c["status"] == "budget" and c["stop_reason"] == "budget:usd"
    assert c["calls"] == 3 and c["rounds"] == 2
    assert c["cost_usd"] == pytest.approx(0.81)
    assert c["pool"] == "math" and c["policy"] == "ensemble"
    assert c["budget"] == BUDGET


def test_list_filter_search_sort_page(server: ViewerServer) -> None:
    _, ok = get(server, "/api/runs?status=ok")
    assert {r["run_id"] for r in ok["runs"]} == {"run-a", "run-b", "run-x"} and ok["total"] == 3
    _, err = get(server, "/api/runs?status=error")
    assert [r["run_id"] for r in err["runs"]] == ["run-d"]
    assert err["runs"][0]["stop_reason"].startswith("error: all calls failed")
    _, running = get(server, "/api/runs?status=running")
    assert [r["run_id"] for r in running["runs"]] == ["run-live"]
    _, pol = get(server, "/api/runs?policy=cheapest&status=ok")
    assert {r["run_id"] for r in pol["runs"]} == {"run-b", "run-x"}
    _, pool = get(server, "/api/runs?pool=math")
    assert [r["run_id"] for r in pool["runs"]] == ["run-c"]
    _, found = get(server, "/api/runs?search=" + urllib.parse.quote("capital of france"))
    assert {r["run_id"] for r in found["runs"]} == {"run-a", "run-b"}
    _, by_answer = get(server, "/api/runs?search=Lyon")
    assert [r["run_id"] for r in by_answer["runs"]] == ["run-b"]
    _, cheap_first = get(server, "/api/runs?sort=cost_usd&order=asc")
    costs = [r["cost_usd"] for r in cheap_first["runs"]]
    assert costs == sorted(costs)
    _, dear_first = get(server, "/api/runs?sort=cost_usd&order=desc&limit=2")
    assert [r["run_id"] for r in dear_first["runs"]] == ["run-c", "run-a"]
    assert dear_first["total"] == 6 and dear_first["limit"] == 2
    _, page2 = get(server, "/api/runs?sort=started_at&order=asc&limit=2&offset=2")
    assert [r["run_id"] for r in page2["runs"]] == ["run-c", "run-d"]
    _, facets = get(server, "/api/facets")
    assert facets == {"status": ["budget", "error", "ok", "running"],
                      "policy": ["cascade", "cheapest", "ensemble"], "pool": ["demo", "math"]}


@pytest.mark.parametrize("query, quoted", [
    ("limit=0", "0"), ("limit=abc", "'abc'"), ("offset=-1", "-1"), ("sort=answer", "'answer'"),
    ("order=sideways", "'sideways'"), ("status=finished", "'finished'"),
])
def test_bad_parameters_are_400_quoting_the_value(server: ViewerServer, query: str, quoted: str) -> None:
    status, data = get(server, "/api/runs?" + query)
    assert status == 400
    assert data["status"] == 400 and quoted in data["error"]


def test_paging_5000_runs(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "big.sqlite")
    for i in range(5000):
        rid = f"bulk-{i:05d}"
        store.append(RunStarted(run_id=rid, seq=0, ts=T0 + i, query=f"synthetic question {i}",
                                pool="bulk", policy=("cheapest", "ensemble")[i % 2], budget=BUDGET))
        store.append(CallFinished(run_id=rid, seq=1, ts=T0 + i + 0.5, round=0, call_id=f"{rid}-c",
                                  agent="assistant", model=("small", "large")[i % 2],
                                  model_id="test/x", output=f"answer {i}", input_tokens=10,
                                  output_tokens=5, cost_usd=0.001 * (i % 7), latency_s=0.5))
        store.append(RunFinished(run_id=rid, seq=2, ts=T0 + i + 1, answer=f"answer {i}",
                                 stop_reason="answered", status="ok", cost_usd=0.001 * (i % 7),
                                 input_tokens=10, output_tokens=5, calls=1, rounds=1,
                                 duration_s=1.0))
    srv = create_server(store.path, "127.0.0.1", 0)
    srv.start()
    try:
        _, first = get(srv, "/api/runs?limit=50")
        assert first["total"] == 5000
        assert [r["run_id"] for r in first["runs"]] == [f"bulk-{i:05d}" for i in range(4999, 4949, -1)]
        _, mid = get(srv, "/api/runs?limit=100&offset=2500&order=asc")
        assert [r["run_id"] for r in mid["runs"]] == [f"bulk-{i:05d}" for i in range(2500, 2600)]
        _, last = get(srv, "/api/runs?limit=50&offset=4990")
        assert [r["run_id"] for r in last["runs"]] == [f"bulk-{i:05d}" for i in range(9, -1, -1)]
        _, filtered = get(srv, "/api/runs?policy=ensemble&limit=10&offset=10")
        assert filtered["total"] == 2500
        assert [r["run_id"] for r in filtered["runs"]] == [f"bulk-{i:05d}" for i in range(4979, 4959, -2)]
        _, agg = get(srv, "/api/aggregates?policy=ensemble")
        assert agg["runs"] == 2500 and agg["calls"] == 2500
        assert [r["key"] for r in agg["by_model"]] == ["large"]
        expected = sum(0.001 * (i % 7) for i in range(1, 5000, 2))
        assert agg["cost_usd"] == pytest.approx(expected)
    finally:
        srv.stop()
        store.close()


# --------------------------------------------------------------------------- one run
def test_run_detail_has_summary_and_every_event(server: ViewerServer, store: SQLiteTraceStore) -> None:
    status, data = get(server, "/api/runs/run-c")
    assert status == 200
    assert data["run"]["run_id"] == "run-c" and data["run"]["answer"] == "Still long."
    assert data["events"] == store.events("run-c")
    kinds = [e["kind"] for e in data["events"]]
    assert kinds == ["run_started", "policy_decided", "call_started", "call_started",
                     "call_finished", "call_finished", "refined", "policy_decided",
                     "call_started", "call_finished", "refined", "run_finished"]
    assert [e["seq"] for e in data["events"]] == list(range(12))
    decision = data["events"][1]
    assert decision["scores"] == {"large": 0.5, "small": 0.6}
    assert decision["dropped"] == [{"agent": "assistant", "model": "huge", "limit": "usd"}]


def test_run_by_unique_prefix_and_unknown_is_404(server: ViewerServer) -> None:
    status, data = get(server, "/api/runs/ru")
    assert status == 404  # prefixes shorter than 4 characters are not looked up
    status, data = get(server, "/api/runs/run-liv")
    assert status == 200 and data["run"]["run_id"] == "run-live"
    status, data = get(server, "/api/runs/run-")
    assert status == 400 and "ambiguous" in data["error"]
    status, data = get(server, "/api/runs/nope-nope")
    assert status == 404 and data == {"error": "no run 'nope-nope'", "status": 404}
    for path in ("/api/runs/nope-nope/events", "/api/runs/nope-nope/stream", "/api/compare?a=run-a&b=nope-nope"):
        status, data = get(server, path)
        assert status == 404 and "nope-nope" in data["error"]
    status, data = get(server, "/api/nothing")
    assert status == 404 and data["status"] == 404


def test_events_after_seq(server: ViewerServer, store: SQLiteTraceStore) -> None:
    _, data = get(server, "/api/runs/run-live/events?after=2")
    assert data["status"] == "running"
    assert [e["seq"] for e in data["events"]] == [3, 4]
    assert [e["kind"] for e in data["events"]] == ["call_finished", "refined"]
    assert data["last_seq"] == 4
    _, none = get(server, "/api/runs/run-live/events?after=4")
    assert none["events"] == [] and none["last_seq"] == 4
    # The run grows: the next poll sees exactly the new events.
    finish_live(store)
    _, done = get(server, "/api/runs/run-live/events?after=4")
    assert [e["kind"] for e in done["events"]] == ["run_finished"]
    assert done["status"] == "ok" and done["last_seq"] == 5


def _read_sse(resp: http.client.HTTPResponse, until: str | None,
              timeout: float = 10) -> list[tuple[str, str, str]]:
    """Read server-sent events until one of kind ``until`` (None: until the server hangs up):
    (event, id, data) tuples."""
    out: list[tuple[str, str, str]] = []
    cur: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = resp.fp.readline().decode()
        if not line:
            if until is None:
                return out
            break
        line = line.rstrip("\n")
        if not line:
            if "event" in cur:
                out.append((cur["event"], cur.get("id", ""), cur.get("data", "")))
                if cur["event"] == until:
                    return out
            cur = {}
        elif not line.startswith(":") and ":" in line:
            k, v = line.split(":", 1)
            cur[k] = v.lstrip(" ")
    raise AssertionError(f"no {until!r} event; got {out}")


def test_stream_sends_new_events_then_end(server: ViewerServer, store: SQLiteTraceStore) -> None:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=10)
    conn.request("GET", "/api/runs/run-live/stream?after=3")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type", "").startswith("text/event-stream")
    first = _read_sse(resp, "trace")
    assert first == [("trace", "4", json.dumps(store.events("run-live", 3)[0], ensure_ascii=False))]

    def finish_later() -> None:
        time.sleep(0.3)
        finish_live(store)

    threading.Thread(target=finish_later).start()
    rest = _read_sse(resp, "end")
    assert [(e, i) for e, i, _ in rest] == [("trace", "5"), ("end", "")]
    assert json.loads(rest[0][2])["kind"] == "run_finished"
    assert json.loads(rest[1][2]) == {"status": "ok"}
    conn.close()


def test_stream_resumes_from_last_event_id(server: ViewerServer) -> None:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=10)
    conn.request("GET", "/api/runs/run-a/stream", headers={"Last-Event-ID": "5"})
    events = _read_sse(conn.getresponse(), "end")
    assert [(e, i) for e, i, _ in events] == [("trace", "6"), ("trace", "7"), ("end", "")]
    conn.close()


# --------------------------------------------------------------------------- aggregates
def test_aggregates_per_model_and_agent(server: ViewerServer, store: SQLiteTraceStore) -> None:
    _, agg = get(server, "/api/aggregates")
    # Every call_finished of every run, summed by hand from the events.
    expected: dict[str, dict[str, float]] = {}
    for r in store.list_runs(limit=100):
        for e in store.events(r["run_id"]):
            if e["kind"] == "call_finished":
                t = expected.setdefault(e["model"], {"calls": 0, "cost": 0.0, "errors": 0})
                t["calls"] += 1
                t["cost"] += e["cost_usd"]
                t["errors"] += e["error"] is not None
    got = {r["key"]: r for r in agg["by_model"]}
    assert set(got) == set(expected) == {"small", "large"}
    for k, t in expected.items():
        assert got[k]["calls"] == t["calls"] and got[k]["errors"] == t["errors"]
        assert got[k]["cost_usd"] == pytest.approx(t["cost"])
    assert [r["key"] for r in agg["by_model"]] == ["large", "small"]  # costliest first
    assert got["large"]["calls"] == 3 and got["large"]["cost_usd"] == pytest.approx(0.804)
    assert got["large"]["runs"] == 2
    agents = {r["key"]: r for r in agg["by_agent"]}
    assert agents["verifier"]["calls"] == 1 and agents["verifier"]["cost_usd"] == pytest.approx(0.01)
    assert agents["assistant"]["calls"] == 8
    assert agg["runs"] == 6 and agg["calls"] == 9
    assert agg["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in store.list_runs(limit=100)))

    _, cheap = get(server, "/api/aggregates?policy=cheapest")
    assert cheap["runs"] == 3
    assert [(r["key"], r["calls"]) for r in cheap["by_model"]] == [("small", 3)]
    assert cheap["cost_usd"] == pytest.approx(0.004)
    _, math_pool = get(server, "/api/aggregates?pool=math&status=budget")
    assert {r["key"]: r["calls"] for r in math_pool["by_agent"]} == {"assistant": 2, "verifier": 1}
    _, nothing = get(server, "/api/aggregates?search=no-such-run")
    assert nothing == {"runs": 0, "cost_usd": 0, "calls": 0, "filters": {"search": "no-such-run"},
                       "by_model": [], "by_agent": []}


@pytest.mark.parametrize("by", ["model", "agent"])
@pytest.mark.parametrize("filters", [{}, {"policy": "cheapest"}, {"status": "budget"},
                                     {"search": "France"}, {"pool": "nope"}])
def test_memory_store_aggregates_like_sqlite(store: SQLiteTraceStore, by: str,
                                             filters: dict[str, str]) -> None:
    # The default (Python) implementation in TraceStore and SQLite's SQL agree.
    mem = MemoryTraceStore()
    fill_small(mem)
    got, want = mem.aggregate_calls(by, **filters), store.aggregate_calls(by, **filters)  # type: ignore[arg-type]
    assert [r["key"] for r in got] == [r["key"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert g == {**w, "cost_usd": pytest.approx(w["cost_usd"]),
                     "latency_s": pytest.approx(w["latency_s"])}
    assert mem.run_facets() == store.run_facets()


def test_viewer_serves_a_memory_store() -> None:
    mem = MemoryTraceStore()
    fill_small(mem)
    srv = create_server(mem, "127.0.0.1", 0)
    srv.start()
    try:
        _, data = get(srv, "/api/runs?status=ok&sort=cost_usd&order=desc")
        assert [r["run_id"] for r in data["runs"]] == ["run-a", "run-b", "run-x"]
        _, health = get(srv, "/api/health")
        assert health == {"ok": True, "db": None, "runs": 6}
    finally:
        srv.stop()


def test_aggregate_by_must_be_model_or_agent(store: SQLiteTraceStore) -> None:
    with pytest.raises(UserError, match="'cost'"):
        store.aggregate_calls("cost")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- compare
def test_compare_two_runs(server: ViewerServer) -> None:
    status, d = get(server, "/api/compare?a=run-a&b=run-c")
    assert status == 200
    assert d["a"]["run"]["answer"] == "Paris" and d["b"]["run"]["answer"] == "Still long."
    assert d["a"]["run"]["cost_usd"] == pytest.approx(0.005)
    assert d["b"]["run"]["cost_usd"] == pytest.approx(0.81)
    assert [r["models"] for r in d["a"]["rounds"]] == [["small", "large"]]
    assert [r["models"] for r in d["b"]["rounds"]] == [["large", "small"], ["large"]]
    assert [r["agents"] for r in d["b"]["rounds"]] == [["assistant", "verifier"], ["assistant"]]
    assert [r["calls"] for r in d["b"]["rounds"]] == [2, 1]
    assert d["b"]["rounds"][1]["cost_usd"] == pytest.approx(0.5)
    assert d["b"]["rounds"][0]["action"] == "route"
    assert d["b"]["models"] == ["large", "small"]
    status, bad = get(server, "/api/compare?a=run-a")
    assert status == 400 and "b=None" in bad["error"]


# --------------------------------------------------------------------------- safety
def test_markup_in_outputs_comes_back_as_data(server: ViewerServer) -> None:
    req = urllib.request.Request(server.url + "api/runs/run-x")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        data = json.loads(r.read())
    finished = [e for e in data["events"] if e["kind"] == "call_finished"]
    assert finished[0]["output"] == XSS
    assert data["run"]["answer"] == XSS


def test_page_and_assets_are_local_with_a_strict_csp(server: ViewerServer) -> None:
    with urllib.request.urlopen(server.url, timeout=10) as r:
        html = r.read().decode()
        csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    assert '<script src="/static/app.js"' in html
    assert "http://" not in html and "https://" not in html  # no CDN
    for name in ("app.js", "app.css", "favicon.svg"):
        with urllib.request.urlopen(server.url + "static/" + name, timeout=10) as r:
            body = r.read().decode()
            assert r.status == 200 and body
            assert "https://" not in body  # nothing fetched from the network
    js = urllib.request.urlopen(server.url + "static/app.js", timeout=10).read().decode()
    assert "innerHTML" not in js.replace("never through innerHTML", "")
    for path in ("/static/..%2Fserver.py", "/static/.hidden", "/static/nope.js", "/admin"):
        status, _ = get(server, path)
        assert status == 404


def test_read_only_and_loopback_host_only(server: ViewerServer) -> None:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), port, timeout=10)
    conn.request("POST", "/api/runs", body=b"{}")
    resp = conn.getresponse()
    assert resp.status == 405 and "read-only" in json.loads(resp.read())["error"]
    conn.close()
    status, data = get(server, "/api/runs", headers={"Host": "attacker.example:8765"})
    assert status == 403 and "attacker.example" in data["error"]
    status, _ = get(server, "/api/runs", headers={"Host": f"localhost:{port}"})
    assert status == 200


def test_health(server: ViewerServer, store: SQLiteTraceStore) -> None:
    _, data = get(server, "/api/health")
    assert data == {"ok": True, "db": str(store.path), "runs": 6}


# --------------------------------------------------------------------------- bad stores
def test_corrupt_store_is_one_clear_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.sqlite"
    bad.write_bytes(b"this is not a database\x00" * 200)
    with pytest.raises(UserError) as e:
        create_server(bad, "127.0.0.1", 0)
    msg = str(e.value)
    assert "\n" not in msg and repr(str(bad)) in msg and "--db" in msg


def test_missing_store_is_one_clear_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(UserError) as e:
        create_server(missing, "127.0.0.1", 0)
    assert "\n" not in str(e.value) and repr(str(missing)) in str(e.value)
    assert not missing.exists()  # the viewer never creates a store


def test_cli_prints_one_line_for_a_corrupt_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestra.cli import main

    bad = tmp_path / "garbage.sqlite"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(SystemExit) as e:
        main(["viewer", "--db", str(bad), "--port", "0"])
    assert e.value.code == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines on a narrow console
    assert err.startswith("error: trace store") and "--db" in err
    assert str(bad) in "".join(err.split())
    assert "Traceback" not in err


def test_port_in_use_is_a_user_error(server: ViewerServer, store: SQLiteTraceStore) -> None:
    port = server.server_address[1]
    with pytest.raises(UserError, match=f"port {port}"):
        create_server(store.path, "127.0.0.1", port)


# --------------------------------------------------------------------------- beyond loopback
# Servers here may listen on 0.0.0.0, but the tests only ever connect to 127.0.0.1.
def ask(srv: ViewerServer, path: str, headers: dict[str, str] | None = None,
        ) -> tuple[int, http.client.HTTPMessage, Any]:
    """GET over 127.0.0.1 whatever the bind address: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        if "event-stream" in (r.getheader("Content-Type") or ""):
            return r.status, r.headers, None
        body = r.read()
        ctype = r.getheader("Content-Type") or ""
        return r.status, r.headers, json.loads(body) if "json" in ctype else body.decode()
    finally:
        conn.close()


@pytest.fixture()
def open_server(store: SQLiteTraceStore) -> Iterator[ViewerServer]:
    """A viewer on every interface (a generated token), read over loopback."""
    srv = create_server(store.path, "0.0.0.0", 0, poll_s=0.05, allow_hosts=["viewer.example"])
    srv.start()
    yield srv
    srv.stop()


def test_a_non_loopback_bind_needs_the_token(open_server: ViewerServer) -> None:
    srv = open_server
    token = srv.token
    assert srv.token_generated and token and len(token) >= 16
    assert srv.access_url == f"{srv.url}?token={token}"
    for headers in ({}, {"Authorization": "Bearer " + "x" * len(token)},
                    {"Authorization": f"Basic {token}"},
                    {"Cookie": f"orchestra_viewer_{srv.port}=wrong-{token}"},
                    {"Cookie": f"orchestra_viewer_1={token}"}):  # another viewer's cookie
        for path in ("/api/runs", "/", "/api/runs/run-live/stream", "/static/app.js"):
            status, h, body = ask(srv, path, headers)
            assert status == 401, (path, headers)
            assert h["WWW-Authenticate"].startswith("Bearer") and "token" in body["error"]
    # The token in the query is accepted on the page only, never on the API.
    status, _, _ = ask(srv, f"/api/runs?token={token}")
    assert status == 401

    status, _, data = ask(srv, "/api/runs", {"Authorization": f"Bearer {token}"})
    assert status == 200 and data["total"] == 6

    # The page opened with ?token= sets an HttpOnly, SameSite=Strict cookie; the page's own
    # requests and its event stream then carry it.
    status, h, html = ask(srv, f"/?token={token}")
    assert status == 200 and '<script src="/static/app.js"' in html
    cookie = h["Set-Cookie"]
    assert cookie.startswith(f"orchestra_viewer_{srv.port}={token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}
    for path in ("/api/runs", "/api/facets", "/static/app.js", "/api/runs/run-a/stream"):
        status, h, _ = ask(srv, path, jar)
        assert status == 200, path
        assert "Set-Cookie" not in h  # set once, by the page load


def test_a_given_token_is_used_and_checked(store: SQLiteTraceStore) -> None:
    token = "my-own-token-0123456789"
    srv = create_server(store.path, "127.0.0.1", 0, token=token)  # loopback, but asked for
    srv.start()
    try:
        assert not srv.token_generated and srv.token == token
        assert ask(srv, "/api/health")[0] == 401
        assert ask(srv, "/api/health", {"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        srv.stop()
    for bad in ("short", "has space in it 0123456789", "é" * 20):
        with pytest.raises(UserError, match="16 to 512") as e:
            create_server(store.path, "0.0.0.0", 0, token=bad)
        assert bad not in str(e.value)  # a secret is never echoed


def test_host_must_be_allowed_beyond_loopback(open_server: ViewerServer) -> None:
    import socket

    srv, port = open_server, open_server.port
    auth = {"Authorization": f"Bearer {srv.token}"}
    for host in (f"viewer.example:{port}", "viewer.example", f"{socket.gethostname()}:{port}",
                 f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert ask(srv, "/api/health", {**auth, "Host": host})[0] == 200, host
    for host in (f"attacker.example:{port}", f"viewer.example.evil:{port}",
                 f"localhost:{port + 1}", "viewer.example:80", "", "[::1", f"127.0.0.1:{port}x"):
        if not host:
            continue  # no Host at all: not a browser, so not a rebinding page
        status, _, data = ask(srv, "/api/health", {**auth, "Host": host})
        assert status == 403, host
        assert repr(host) in data["error"] and "--allow-host" in data["error"]
    # The Host check comes first: a rebinding page learns nothing about the token either.
    assert ask(srv, "/", {"Host": f"attacker.example:{port}"})[0] == 403


def test_loopback_host_names_must_give_the_port(server: ViewerServer) -> None:
    port = server.port
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"[::1]:{port}", f"localhost:{port}"):
        assert ask(server, "/api/health", {"Host": host})[0] == 200, host
    for host in (f"localhost:{port + 1}", f"127.0.0.1:{port}0", "localhost.evil.example"):
        assert ask(server, "/api/health", {"Host": host})[0] == 403, host


def test_bad_allow_host_is_a_user_error(store: SQLiteTraceStore) -> None:
    with pytest.raises(UserError, match="'http://x/'"):
        create_server(store.path, "127.0.0.1", 0, allow_hosts=["http://x/"])


def _threads_settle(at_most: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while threading.active_count() > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def test_connections_are_capped(store: SQLiteTraceStore) -> None:
    import socket

    cap = 8
    srv = create_server(store.path, "127.0.0.1", 0, limits=ViewerLimits(max_connections=cap))
    srv.start()
    base = threading.active_count()
    idle: list[socket.socket] = []
    try:
        for _ in range(cap + 20):
            idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
        time.sleep(0.5)
        # One thread per served connection, up to the cap; the rest got no thread.
        assert threading.active_count() <= base + cap
        t0 = time.monotonic()
        status, h, data = ask(srv, "/api/health")
        assert status == 503 and time.monotonic() - t0 < 2
        assert f"maximum of {cap} connections" in data["error"] and h["Retry-After"] == "1"
    finally:
        for s in idle:
            s.close()
    # The idle ones hang up: their slots free, and requests are served again.
    deadline = time.monotonic() + 5
    while ask(srv, "/api/health")[0] != 200:
        assert time.monotonic() < deadline, "slots never freed"
        time.sleep(0.05)
    srv.stop()
    assert _threads_settle(base) <= base


def test_idle_connections_are_closed(store: SQLiteTraceStore) -> None:
    import socket

    srv = create_server(store.path, "127.0.0.1", 0, limits=ViewerLimits(idle_timeout_s=0.4))
    srv.start()
    base = threading.active_count()
    try:
        silent = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        stalled = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        stalled.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        t0 = time.monotonic()
        assert silent.recv(1024) == b"" and stalled.recv(1024) == b""  # closed by the server
        assert time.monotonic() - t0 < 3
        silent.close()
        stalled.close()
        assert _threads_settle(base) <= base
    finally:
        srv.stop()


def _read_stream(conn: http.client.HTTPConnection, path: str, timeout: float = 10,
                 ) -> tuple[list[tuple[str, str, str]], float]:
    """Every server-sent event until the server closes the stream, and how long that took."""
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200
    t0 = time.monotonic()
    events = _read_sse(resp, None, timeout=timeout)
    return events, time.monotonic() - t0


def test_a_stream_ends_after_its_lifetime(store: SQLiteTraceStore) -> None:
    srv = create_server(store.path, "127.0.0.1", 0, poll_s=0.05,
                        limits=ViewerLimits(stream_max_s=0.5))
    srv.start()
    try:
        # run-live is still going (its writer, this process, is alive): no end, just a hang-up
        # the browser reconnects from (Last-Event-ID).
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        events, took = _read_stream(conn, "/api/runs/run-live/stream?after=3")
        conn.close()
        assert [(e, i) for e, i, _ in events] == [("trace", "4")]
        assert 0.4 < took < 3
    finally:
        srv.stop()


def test_a_stream_ends_when_its_client_goes(store: SQLiteTraceStore) -> None:
    srv = create_server(store.path, "127.0.0.1", 0, poll_s=0.05,
                        limits=ViewerLimits(heartbeat_s=600))
    srv.start()
    base = threading.active_count()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/api/runs/run-live/stream?after=3")
        resp = conn.getresponse()
        assert _read_sse(resp, "trace")[0][1] == "4"
        assert threading.active_count() == base + 1  # the stream's thread
        resp.close()
        conn.close()
        # Nothing is written to a quiet stream for 10 minutes, yet its thread ends now.
        assert _threads_settle(base, timeout=3) <= base
    finally:
        srv.stop()


# --------------------------------------------------------------------------- interrupted runs
#: Starts a run, sends a call, prints "ready" and waits to be killed.
KILLED_WRITER = Path(__file__).resolve().parent / "viewer_killed_writer.py"


def test_a_killed_run_is_interrupted_with_its_resume_command(
        server: ViewerServer, store: SQLiteTraceStore) -> None:
    import signal
    import subprocess
    import sys

    rid = "killed-run-0001"
    child = subprocess.Popen([sys.executable, str(KILLED_WRITER), str(store.path), rid,
                              "killed mid-call"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        writer = store.get_run(rid)["writer"]  # type: ignore[index]
        assert writer["pid"] == child.pid and writer["host"]
        _, alive = get(server, f"/api/runs/{rid}")
        assert alive["run"]["status"] == "running" and "resume" not in alive["run"]
        # A stream opened while the run goes on ends when its process is killed.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", f"/api/runs/{rid}/stream?after=0")
        resp = conn.getresponse()
        assert [i for _, i, _ in _read_sse(resp, "trace")] == ["1"]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        rest = _read_sse(resp, "end", timeout=5)
        conn.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert [(e, i) for e, i, _ in rest] == [("trace", "2"), ("end", "")]
    end = json.loads(rest[-1][2])
    assert end["status"] == "interrupted" and end["resume"] == f"orchestra resume {rid}"
    assert f"process {child.pid}" in end["stop_reason"] and "gone" in end["stop_reason"]

    assert store.get_run(rid)["status"] == "running"  # type: ignore[index]  # the store is untouched
    _, data = get(server, f"/api/runs/{rid}")
    assert data["run"]["status"] == "interrupted"
    assert data["run"]["resume"] == f"orchestra resume {rid}"
    assert data["run"]["stop_reason"] == end["stop_reason"]
    _, polled = get(server, f"/api/runs/{rid}/events?after=2")
    assert polled["status"] == "interrupted" and polled["resume"] == end["resume"]
    assert polled["events"] == []
    _, gone = get(server, "/api/runs?status=interrupted")
    assert [r["run_id"] for r in gone["runs"]] == [rid] and gone["total"] == 1
    _, running = get(server, "/api/runs?status=running")
    assert [r["run_id"] for r in running["runs"]] == ["run-live"]
    _, everything = get(server, "/api/runs")
    assert {r["run_id"]: r["status"] for r in everything["runs"]}[rid] == "interrupted"
    _, facets = get(server, "/api/facets")
    assert facets["status"] == ["budget", "error", "interrupted", "ok", "running"]
    _, agg = get(server, "/api/aggregates?status=interrupted")
    assert agg["runs"] == 1 and agg["calls"] == 0 and agg["filters"] == {"status": "interrupted"}
    _, agg = get(server, "/api/aggregates?status=running")
    assert agg["runs"] == 1 and agg["calls"] == 1


def _set_writer(store: SQLiteTraceStore, rid: str, writer: dict[str, Any] | None,
                ts: float) -> None:
    """Stand in for a run written elsewhere: its writer, and when its events happened."""
    import sqlite3

    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET writer = ? WHERE run_id = ?",
                   (json.dumps(writer) if writer else None, rid))
        db.execute("UPDATE events SET ts = ?, data = json_set(data, '$.ts', ?) WHERE run_id = ?",
                   (ts, ts, rid))


@pytest.mark.parametrize("writer, minutes_ago, shown", [
    (None, 5, "running"),  # a store from before writers were recorded: too soon to tell
    (None, 120, "interrupted"),
    ({"pid": 1, "host": "another-machine", "start": None, "pidns": None}, 5, "running"),
    ({"pid": 1, "host": "another-machine", "start": None, "pidns": None}, 120, "interrupted"),
    ("this process, restarted", 5, "interrupted"),  # pid reused by another process
    ("this process", 120, "running"),  # alive: however long it is quiet
])
def test_when_a_run_counts_as_interrupted(store: SQLiteTraceStore, writer: Any,
                                          minutes_ago: float, shown: str) -> None:
    from orchestra.trace._process import writer_identity
    from orchestra.trace.viewer.server import ViewerAPI

    if isinstance(writer, str):
        me = writer_identity()
        writer = {**me, "start": "another-boot/1"} if "restarted" in writer else me
    rid = "it's-a-run"  # the resume command quotes it for the shell
    b = RunBuilder(store, rid, query="quiet", t0=time.time())
    b.round([("assistant", "small", 0.001, "partial", None)])
    _set_writer(store, rid, writer, time.time() - 60 * minutes_ago)
    api = ViewerAPI(store, stale_after_s=3600)
    run = api.shown(store.get_run(rid))  # type: ignore[arg-type]
    assert run["status"] == shown
    if shown == "interrupted":
        assert run["resume"] == "orchestra resume 'it'\"'\"'s-a-run'"
        assert ("no event for 2.0 h" in run["stop_reason"]) == (minutes_ago == 120)


@pytest.mark.parametrize("how", ["option", "env"])
def test_cli_rejects_a_weak_token_in_one_line(store: SQLiteTraceStore, how: str,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from orchestra.cli import main

    args = ["viewer", "--db", str(store.path), "--host", "0.0.0.0", "--port", "0"]
    if how == "option":
        args += ["--token", "tooshort"]
    else:
        monkeypatch.setenv("ORCHESTRA_VIEWER_TOKEN", "tooshort")
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: the access token must be 16 to 512") and "tooshort" not in err

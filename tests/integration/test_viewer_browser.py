"""The trace viewer in a real headless Chromium, over runs made by the real runtime.

The runs are real :class:`orchestra.Orchestra` runs with :class:`orchestra.testing.FunctionBackend`
models, written to a real SQLite store; the viewer is the real HTTP server on a free port, read
by the system Chromium driven by Playwright (``pip install playwright``; never
``playwright install``: the system browser is used). Screenshots of every page go to
``tests/artifacts/viewer/``; the README's images (``docs/img/viewer-*.png``) are copied from
them when missing, or always with ``ORCHESTRA_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestra.errors import RoutingError
from orchestra.runtime import Orchestra
from orchestra.spec import Budget, Pool
from orchestra.testing import FunctionBackend, last_user_message, make_pool
from orchestra.trace.events import (
    CallFinished,
    CallStarted,
    PolicyDecided,
    Refined,
    RunFinished,
    RunStarted,
)
from orchestra.trace.store import SQLiteTraceStore
from orchestra.trace.viewer.server import ViewerServer, create_server

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "viewer"
DOCS_IMG = ROOT / "docs" / "img"
XSS = "<script>alert(1)</script><b>x</b>"
# Flags that keep Chromium from reaching for the network (it hangs on a closed one otherwise).
# Playwright's launch() always starts from a fresh temporary --user-data-dir.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--font-render-hinting=none",
]


def chromium_path() -> str:
    for candidate in (os.environ.get("ORCHESTRA_CHROMIUM"), "chromium", "chromium-browser",
                      "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    pytest.skip("no Chromium found: apt-get install chromium (or set ORCHESTRA_CHROMIUM)")
    raise AssertionError  # unreachable


def fmt_usd(x: float | None) -> str:
    """The page's fmtUSD, in Python."""
    if x is None:
        return "—"
    if x == 0:
        return "$0"
    a = abs(x)
    if a >= 1:
        return f"${x:,.2f}"
    decimals = 4 if a >= 0.01 else min(12, 2 - math.floor(math.log10(a)))
    t = f"{x:.{decimals}f}".rstrip("0")
    if len(t.split(".")[1] if "." in t else "") < 2:
        t = f"{x:.2f}"
    return "$" + t


# --------------------------------------------------------------------------- real runs
def demo_pool() -> Pool:
    return make_pool(((0.15, 0.6), (3.0, 15.0), (15.0, 75.0)), names=["mini", "sonnet", "opus"],
                     max_output_tokens=128)


LATENCY = {"mini": 0.08, "sonnet": 0.25, "opus": 0.45}
ANSWERS = {
    "What is the capital of France?": {"mini": "Paris", "sonnet": "The capital of France is Paris.",
                                       "opus": "Paris."},
    "What is 17 * 23?": {"mini": "391", "sonnet": "17 × 23 = 391", "opus": "391"},
    "Who wrote 'The Brothers Karamazov'?": {"mini": "Tolstoy", "sonnet": "Fyodor Dostoevsky",
                                            "opus": "Dostoevsky"},
}


def answer(req: Any) -> Any:
    text = last_user_message(req)
    if "Judge whether" in str(req.messages) or "SURE" in text:
        return "UNSURE" if req.model.name == "mini" and "Tolstoy" in text else "SURE"
    if "Echo" in text:
        return XSS
    for q, by_model in ANSWERS.items():
        if q in text:
            return by_model[req.model.name]
    if "timeout" in text and req.model.name == "sonnet":
        return TimeoutError("upstream timed out after 30 s (sonnet)")
    return "I am not sure."


class BrokenPolicy:
    """Routes to a model the pool does not have: the run fails with a RoutingError."""

    name = "broken"

    def decide(self, view: Any) -> Any:
        raise RoutingError("policy 'broken' chose model 'gpt-9', which is not in pool 'test'")


def make_runs(path: Path) -> dict[str, str]:
    """Real runs of every shape the viewer shows; returns {name: run id}."""
    pool = demo_pool()
    backend = FunctionBackend(answer, latency_s=lambda r: LATENCY[r.model.name])
    ids: dict[str, str] = {}

    def run(name: str, query: str, *, policy: Any, budget: Budget | None = None,
            gold: str | None = None, params: dict[str, Any] | None = None) -> None:
        o = Orchestra(pool, policy=policy, backend=backend, store=str(path), budget=budget,
                      policy_params=params)
        try:
            ids[name] = o.run(query, meta={"gold": gold} if gold else {}).trace_id
        except RoutingError:
            store = SQLiteTraceStore(path)
            ids[name] = store.list_runs(limit=1)[0]["run_id"]
            store.close()

    run("ensemble", "What is the capital of France?", policy="ensemble", gold="Paris")
    run("layers", "What is 17 * 23?", policy="ensemble", params={"layers": 2}, gold="391")
    run("cascade", "Who wrote 'The Brothers Karamazov'?", policy="cascade", gold="Dostoevsky")
    # Three layers under a 4-call limit: round 2 cannot send anything, so the run stops by budget.
    run("budget", "What is 17 * 23? Show your work.", policy="ensemble", params={"layers": 3},
        budget=Budget(usd=1.0, calls=4, rounds=4))
    run("timeout", "Summarise this report (timeout expected)", policy="ensemble")
    run("broken", "Route me somewhere impossible", policy=BrokenPolicy())
    run("xss", "Echo this markup back", policy="cheapest")
    run("single", "What is the capital of France?", policy="cheapest", gold="Paris")
    return ids


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("viewer") / "traces.sqlite"


@pytest.fixture(scope="module")
def runs(store_path: Path) -> dict[str, str]:
    return make_runs(store_path)


@pytest.fixture(scope="module")
def server(runs: dict[str, str], store_path: Path) -> Iterator[ViewerServer]:
    srv = create_server(store_path, "127.0.0.1", 0, poll_s=0.1)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def store(runs: dict[str, str], store_path: Path) -> Iterator[SQLiteTraceStore]:
    s = SQLiteTraceStore(store_path, readonly=True)
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1,
                              locale="en-US", timezone_id="UTC")
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.page_errors = errors  # type: ignore[attr-defined]
    yield pg
    ctx.close()
    assert errors == [], f"the page logged errors: {errors}"


def shot(page: Any, name: str, *, docs: bool = False, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # sticky header and sidebar at the top
    page.screenshot(path=str(path), full_page=full_page)
    doc = DOCS_IMG / f"viewer-{name}.png"
    # The README's copies are written once (or again with ORCHESTRA_UPDATE_SCREENSHOTS=1), so a
    # test run does not leave the working tree dirty.
    if docs and (not doc.exists() or os.environ.get("ORCHESTRA_UPDATE_SCREENSHOTS") == "1"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, doc)
    return path


def expect(locator: Any) -> Any:
    return sync_api.expect(locator)


# --------------------------------------------------------------------------- the list
def test_runs_list_sort_filter_search(page: Any, server: ViewerServer, store: SQLiteTraceStore,
                                      runs: dict[str, str]) -> None:
    page.goto(server.url)
    rows = page.locator("table.runs tbody tr")
    n = store.count_runs()
    expect(rows).to_have_count(n)
    # Newest first, as the store lists them; cost and status cells match the store.
    listed = store.list_runs(limit=100)
    assert [r.get_attribute("data-run-id") for r in rows.all()] == [r["run_id"] for r in listed]
    for r in listed:
        row = page.locator(f'tr[data-run-id="{r["run_id"]}"]')
        expect(row.locator("td.num").first).to_have_text(fmt_usd(r["cost_usd"]))
        expect(row.locator(".badge")).to_have_attribute("data-status", r["status"])
    budget_row = page.locator(f'tr[data-run-id="{runs["budget"]}"]')
    expect(budget_row.locator(".badge")).to_have_text("stopped by budget")
    expect(page.locator(f'tr[data-run-id="{runs["broken"]}"] .badge')).to_have_text("error")
    shot(page, "runs", docs=True)

    # Sort by cost, cheapest first.
    page.locator('th a[data-sort="cost_usd"]').click()  # first click: descending
    page.locator('th a[data-sort="cost_usd"]').click()  # second: ascending
    expect(page).to_have_url(re.compile(r"sort=cost_usd&order=asc"))
    expect(rows).to_have_count(n)
    costs = [float(c.get_attribute("data-cost-usd")) for c in page.locator("td[data-cost-usd]").all()]
    assert costs == sorted(costs)

    # Filter by status, then search by text.
    page.select_option('select[data-filter="status"]', "budget")
    stopped = [r["run_id"] for r in store.list_runs(status="budget", sort="cost_usd",
                                                     descending=False)]
    assert set(stopped) == {runs["budget"]}  # the cascade answers within its rounds
    expect(rows).to_have_count(len(stopped))
    assert [r.get_attribute("data-run-id") for r in rows.all()] == stopped
    page.select_option('select[data-filter="status"]', "")
    expect(rows).to_have_count(n)
    page.fill('input[data-filter="search"]', "capital of France")
    expect(rows).to_have_count(2)
    assert {r.get_attribute("data-run-id") for r in rows.all()} == {runs["ensemble"], runs["single"]}
    page.select_option('select[data-filter="policy"]', "cheapest")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run-id", runs["single"])
    expect(page.locator("#runs-count")).to_have_text("1 run match the filters")
    shot(page, "runs-filtered")


def test_list_pages_through_5000_runs(page: Any, tmp_path: Path) -> None:
    db = tmp_path / "bulk.sqlite"
    store = SQLiteTraceStore(db)
    t0 = 1_750_000_000.0
    for i in range(5000):
        rid = f"bulk-{i:05d}"
        store.append(RunStarted(run_id=rid, seq=0, ts=t0 + i, query=f"synthetic question number {i}",
                                pool="bulk", policy=("cheapest", "ensemble")[i % 2],
                                budget={"usd": 1.0}))
        store.append(CallFinished(run_id=rid, seq=1, ts=t0 + i + 0.5, round=0, call_id=f"{rid}-c",
                                  agent="assistant", model="mini", model_id="test/mini",
                                  output=f"answer {i}", input_tokens=10, output_tokens=5,
                                  cost_usd=0.0001 * (i % 9 + 1), latency_s=0.5))
        store.append(RunFinished(run_id=rid, seq=2, ts=t0 + i + 1, answer=f"answer {i}",
                                 stop_reason="answered", status="ok",
                                 cost_usd=0.0001 * (i % 9 + 1), input_tokens=10, output_tokens=5,
                                 calls=1, rounds=1, duration_s=1.0))
    srv = create_server(db, "127.0.0.1", 0)
    srv.start()
    try:
        page.goto(srv.url + "#/runs?page=3")
        rows = page.locator("table.runs tbody tr")
        expect(rows).to_have_count(50)
        expect(page.locator('[data-testid="range"]')).to_have_text("101–150 of 5,000")
        ids = [r.get_attribute("data-run-id") for r in rows.all()]
        assert ids == [f"bulk-{i:05d}" for i in range(4899, 4849, -1)]
        page.locator('a[data-testid="next"]').click()
        expect(page.locator('[data-testid="range"]')).to_have_text("151–200 of 5,000")
        expect(rows.first).to_have_attribute("data-run-id", "bulk-04849")
        page.locator('a[data-testid="last"]').click()
        expect(page.locator('[data-testid="range"]')).to_have_text("4,951–5,000 of 5,000")
        expect(rows.last).to_have_attribute("data-run-id", "bulk-00000")
        page.select_option('select[data-filter="policy"]', "ensemble")
        expect(page.locator('[data-testid="range"]')).to_have_text("1–50 of 2,500")
        expect(rows.first).to_have_attribute("data-run-id", "bulk-04999")
        shot(page, "runs-5000", full_page=False)
    finally:
        srv.stop()
        store.close()


# --------------------------------------------------------------------------- one run
def test_run_timeline_lanes_and_costs_match_the_store(page: Any, server: ViewerServer,
                                                      store: SQLiteTraceStore,
                                                      runs: dict[str, str]) -> None:
    rid = runs["layers"]
    events = store.events(rid)
    run = store.get_run(rid)
    assert run is not None
    page.goto(f"{server.url}#/run/{rid}")
    expect(page.locator(".run-view")).to_have_attribute("data-status", "ok")
    expect(page.locator(".run-query")).to_have_text("What is 17 * 23?")
    expect(page.locator('[data-testid="run-cost"] .stat-value')).to_have_text(fmt_usd(run["cost_usd"]))
    expect(page.locator('[data-testid="run-calls"] .stat-value')).to_have_text(str(run["calls"]))
    expect(page.locator('[data-testid="answer"]')).to_have_text(run["answer"])

    # One section per round that routed calls, plus the final "answer" decision.
    finished = [e for e in events if e["kind"] == "call_finished"]
    rounds = sorted({e["round"] for e in finished})
    assert rounds == [0, 1]
    for r in rounds:
        section = page.locator(f'section.round[data-round="{r}"]')
        decision = next(e for e in events if e["kind"] == "policy_decided" and e["round"] == r)
        expect(section.locator(".step-decision .reason")).to_have_text(decision["reason"])
        expect(section.locator(".step-decision .pill")).to_have_text("route")
        mine = [e for e in finished if e["round"] == r and e["role"] == "route"]
        lanes = section.locator(".lane[data-call-id]")
        expect(lanes).to_have_count(len(mine))  # the parallel calls, one lane each
        for e in mine:
            lane = section.locator(f'.lane[data-call-id="{e["call_id"]}"]')
            expect(lane.locator(".lane-cost")).to_have_text(fmt_usd(e["cost_usd"]))
            card = section.locator(f'.call[data-call-id="{e["call_id"]}"]')
            expect(card).to_have_attribute("data-model", e["model"])
            expect(card.locator('[data-testid="call-cost"]')).to_have_text("cost " + fmt_usd(e["cost_usd"]))
            expect(card.locator('[data-testid="output"]')).to_have_text(e["output"])
            assert float(card.get_attribute("data-cost-usd")) == pytest.approx(e["cost_usd"])
        # Latency bars are relative to the round's start: the slowest model's bar is the widest.
        widths = {e["model"]: section.locator(f'.lane[data-call-id="{e["call_id"]}"] .lane-bar').bounding_box()["width"]
                  for e in mine}
        assert widths["opus"] > widths["sonnet"] > widths["mini"]
        refined = next(e for e in events if e["kind"] == "refined" and e["round"] == r)
        expect(section.locator('[data-testid="refined-output"]')).to_have_text(refined["output"])
        expect(section.locator(".step-budget .meter").first).to_be_visible()
    # The prompt of a call opens on demand and shows the messages.
    first_call = page.locator('section.round[data-round="1"] .call').first
    first_call.locator("summary", has_text="Prompt").click()
    expect(first_call.locator(".message.role-user pre")).to_contain_text("Here are responses from other assistants")
    # Budget meters: what is left of the USD limit after the last step.
    last_left = [e["budget_left"] for e in events if e.get("budget_left")][-1]
    expect(page.locator('.side [data-testid="budget"] .meter[data-key="usd"]')).to_have_attribute(
        "data-left", re.compile(r"^0\.99"))
    assert float(page.locator('.side .meter[data-key="usd"]').get_attribute("data-left")) == pytest.approx(last_left["usd"])
    shot(page, "run", docs=True)


def test_errors_are_highlighted_with_their_cause(page: Any, server: ViewerServer,
                                                 runs: dict[str, str], store: SQLiteTraceStore) -> None:
    page.goto(f"{server.url}#/run/{runs['timeout']}")
    failed = page.locator(".call.has-error")
    expect(failed).to_have_count(1)
    expect(failed).to_have_attribute("data-model", "sonnet")
    expect(failed.locator(".error-box")).to_contain_text("upstream timed out after 30 s (sonnet)")
    expect(page.locator(".lane-bar.error")).to_have_count(1)
    shot(page, "run-call-error")

    page.goto(f"{server.url}#/run/{runs['broken']}")
    expect(page.locator(".run-view")).to_have_attribute("data-status", "error")
    err = page.locator('[data-testid="error"]')
    expect(err).to_contain_text("RoutingError")
    expect(err).to_contain_text("policy 'broken' chose model 'gpt-9'")
    expect(page.locator(".stop-reason")).to_contain_text("error: policy 'broken'")
    shot(page, "run-error")

    page.goto(f"{server.url}#/run/{runs['budget']}")
    expect(page.locator(".run-view")).to_have_attribute("data-status", "budget")
    expect(page.locator(".stop-reason")).to_contain_text("budget:")
    dropped = page.locator(".chip.dropped")
    run_events = store.events(runs["budget"])
    n_dropped = sum(len(e.get("dropped") or []) for e in run_events if e["kind"] == "policy_decided")
    assert n_dropped >= 1
    expect(dropped).to_have_count(n_dropped)
    shot(page, "run-budget")


def test_unknown_run_shows_a_message(page: Any, server: ViewerServer) -> None:
    page.goto(f"{server.url}#/run/does-not-exist")
    expect(page.locator(".error-box")).to_have_text('No run "does-not-exist" in this store.')
    page.page_errors.clear()  # the 404 itself is logged by the browser; that is expected


# --------------------------------------------------------------------------- live
def test_live_run_appears_and_grows(page: Any, server: ViewerServer, store_path: Path) -> None:
    gates = {m: threading.Event() for m in LATENCY}

    async def gated(req: Any) -> str:
        while not gates[req.model.name].is_set():
            await asyncio.sleep(0.02)
        return ANSWERS["What is the capital of France?"][req.model.name]

    o = Orchestra(demo_pool(), policy="ensemble", backend=FunctionBackend(gated),
                  store=str(store_path))
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.setdefault("result", o.run(
        "What is the capital of France? (live)", run_id="live-run-0001")))
    page.goto(server.url)
    worker.start()
    try:
        # The running run appears in the list on its own (the list refreshes itself).
        live_row = page.locator('tr[data-run-id="live-run-0001"]')
        expect(live_row).to_have_attribute("data-status", "running", timeout=15_000)
        page.goto(f"{server.url}#/run/live-run-0001")
        expect(page.locator('[data-testid="live"]')).to_be_visible()
        lanes = page.locator(".lane[data-call-id]")
        expect(lanes).to_have_count(3)
        expect(page.locator(".lane-bar.running")).to_have_count(3)
        expect(page.locator(".call .badge.status-ok")).to_have_count(0)

        gates["mini"].set()  # one call returns: its card turns done, with its output
        done = page.locator(".call", has=page.locator(".badge.status-ok"))
        expect(done).to_have_count(1)
        expect(done.first).to_have_attribute("data-model", "mini")
        expect(done.first.locator('[data-testid="output"]')).to_have_text("Paris")
        expect(page.locator(".lane-bar.running")).to_have_count(2)
        shot(page, "live", docs=True)

        gates["sonnet"].set()
        expect(done).to_have_count(2)
        gates["opus"].set()
        expect(page.locator(".run-view")).to_have_attribute("data-status", "ok")
        expect(page.locator('[data-testid="live"]')).to_have_count(0)
    finally:
        for g in gates.values():
            g.set()
        worker.join(timeout=30)
    result = box["result"]
    expect(page.locator('[data-testid="answer"]')).to_have_text(result.answer)
    expect(page.locator('[data-testid="run-cost"] .stat-value')).to_have_text(fmt_usd(result.cost_usd))
    expect(page.locator(".call")).to_have_count(result.calls)


def test_live_updates_fall_back_to_polling(page: Any, server: ViewerServer, store_path: Path) -> None:
    """Without EventSource the page polls /events; events appended by hand show up."""
    rid = "poll-run-0001"
    writer = SQLiteTraceStore(store_path)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.add_init_script("delete window.EventSource; window.EventSource = undefined;")
    t = time.time()
    budget = {"usd": 0.01, "tokens": None, "calls": 4, "rounds": 2, "seconds": None}

    def left(spent: float, calls: int) -> dict[str, Any]:
        return {"usd": 0.01 - spent, "tokens": None, "calls": 4 - calls, "rounds": 2,
                "seconds": None, "spent_usd": spent, "spent_tokens": 0, "spent_calls": calls,
                "rounds_done": 0}

    seq = iter(range(100))
    try:
        writer.append(RunStarted(run_id=rid, seq=next(seq), ts=t, query="Polled live run",
                                 pool="test", policy="ensemble", budget=budget))
        writer.append(PolicyDecided(run_id=rid, seq=next(seq), ts=t + 0.01, round=0,
                                    action="route", reason="two in parallel",
                                    scores={"mini": 0.9, "sonnet": 0.6},
                                    calls=[{"agent": "assistant", "model": "mini"},
                                           {"agent": "assistant", "model": "sonnet"}],
                                    budget_left=left(0.0, 0)))
        page.goto(f"{server.url}#/run/{rid}")
        expect(page.locator('[data-testid="live"]')).to_be_visible()
        expect(page.locator(".step-decision .reason")).to_have_text("two in parallel")
        for i, m in enumerate(("mini", "sonnet")):
            writer.append(CallStarted(run_id=rid, seq=next(seq), ts=t + 0.02, round=0,
                                      call_id=f"p{i}", agent="assistant", model=m,
                                      model_id=f"test/{m}",
                                      messages=[{"role": "user", "content": "Polled live run"}],
                                      max_tokens=32, reserved_usd=0.001))
        expect(page.locator(".lane[data-call-id]")).to_have_count(2)
        expect(page.locator(".lane-bar.running")).to_have_count(2)
        writer.append(CallFinished(run_id=rid, seq=next(seq), ts=t + 0.3, round=0, call_id="p0",
                                   agent="assistant", model="mini", model_id="test/mini",
                                   output="polled answer", input_tokens=4, output_tokens=2,
                                   cost_usd=0.0004, latency_s=0.28, budget_left=left(0.0004, 1)))
        expect(page.locator('.call[data-call-id="p0"] [data-testid="output"]')).to_have_text("polled answer")
        expect(page.locator('[data-testid="run-cost"] .stat-value')).to_have_text(fmt_usd(0.0004))
        writer.append(CallFinished(run_id=rid, seq=next(seq), ts=t + 0.5, round=0, call_id="p1",
                                   agent="assistant", model="sonnet", model_id="test/sonnet",
                                   output="", input_tokens=4, output_tokens=0, cost_usd=0.0,
                                   latency_s=0.48, error="BackendError: 503 from provider",
                                   budget_left=left(0.0004, 2)))
        writer.append(Refined(run_id=rid, seq=next(seq), ts=t + 0.51, round=0, refiner="vote",
                              inputs=[{"agent": "assistant", "model": "mini",
                                       "output": "polled answer"}],
                              output="polled answer", votes={"polled answer": 1}))
        writer.append(RunFinished(run_id=rid, seq=next(seq), ts=t + 0.6, answer="polled answer",
                                  stop_reason="answered", status="ok", cost_usd=0.0004,
                                  input_tokens=8, output_tokens=2, calls=2, rounds=1,
                                  duration_s=0.6))
        expect(page.locator(".run-view")).to_have_attribute("data-status", "ok")
        expect(page.locator(".call.has-error .error-box")).to_contain_text("503 from provider")
        expect(page.locator('[data-testid="answer"]')).to_have_text("polled answer")
    finally:
        writer.close()
    assert any("/events?after=" in u for u in requests)
    assert not any("/stream" in u for u in requests)


# --------------------------------------------------------------------------- compare
def test_compare_two_runs(page: Any, server: ViewerServer, store: SQLiteTraceStore,
                          runs: dict[str, str]) -> None:
    a, b = runs["ensemble"], runs["cascade"]
    page.goto(server.url)
    page.locator(f'tr[data-run-id="{a}"] input[type="checkbox"]').check()
    page.locator(f'tr[data-run-id="{b}"] input[type="checkbox"]').check()
    page.locator('[data-testid="compare-selected"]').click()
    expect(page).to_have_url(re.compile(rf"#/compare/{a}/{b}$"))
    for side, rid in (("a", a), ("b", b)):
        run = store.get_run(rid)
        assert run is not None
        col = page.locator(f'.cmp-side[data-side="{side}"]')
        expect(col).to_have_attribute("data-run-id", rid)
        expect(col.locator('[data-testid="cmp-answer"]')).to_have_text(run["answer"])
        expect(page.locator(f'td[data-metric="cost_usd"][data-side="{side}"]')).to_have_text(fmt_usd(run["cost_usd"]))
        expect(page.locator(f'td[data-metric="calls"][data-side="{side}"]')).to_have_text(str(run["calls"]))
    # Per-round models: the ensemble called three models at once; the cascade one per round.
    row0 = page.locator('[data-testid="cmp-rounds"] tr[data-round="0"]')
    expect(row0.locator("td").nth(0).locator(".chip")).to_have_count(3)
    # One row per round that has a decision or a call (the final answer decision included).
    cascade_rounds = sorted({e["round"] for e in store.events(b)
                             if e["kind"] in ("call_finished", "policy_decided")})
    expect(page.locator('[data-testid="cmp-rounds"] tbody tr')).to_have_count(
        max(len(cascade_rounds), 1) if cascade_rounds else 1)
    expect(page.locator('[data-testid="cmp-rounds"] tr[data-round="1"] td').nth(1)).to_contain_text("verifier · mini")
    shot(page, "compare", docs=True)


# --------------------------------------------------------------------------- aggregates
def test_aggregates_charts(page: Any, server: ViewerServer, store: SQLiteTraceStore) -> None:
    page.goto(f"{server.url}#/aggregates")
    expected = {r["key"]: r for r in store.aggregate_calls("model")}
    bars = page.locator('svg[data-testid="chart-cost-model"] g.bar')
    expect(bars).to_have_count(len(expected))
    for g in bars.all():
        key = g.get_attribute("data-key")
        assert float(g.get_attribute("data-value")) == pytest.approx(expected[key]["cost_usd"])
    calls = page.locator('svg[data-testid="chart-calls-model"] g.bar')
    got_calls = {g.get_attribute("data-key"): int(g.get_attribute("data-value")) for g in calls.all()}
    assert got_calls == {k: v["calls"] for k, v in expected.items()}
    agents = {r["key"]: r["calls"] for r in store.aggregate_calls("agent")}
    agent_bars = page.locator('svg[data-testid="chart-calls-agent"] g.bar')
    expect(agent_bars).to_have_count(len(agents))
    expect(page.locator('[data-testid="agg-calls"] .stat-value')).to_have_text(str(sum(agents.values())))
    shot(page, "aggregates", docs=True)

    # The same filters as the list narrow the selection.
    page.select_option('select[data-filter="policy"]', "cheapest")
    cheap = {r["key"]: r for r in store.aggregate_calls("model", policy="cheapest")}
    expect(page.locator('svg[data-testid="chart-cost-model"] g.bar')).to_have_count(len(cheap))
    expect(page.locator('[data-testid="agg-runs"] .stat-value')).to_have_text(
        str(store.count_runs(policy="cheapest")))


# --------------------------------------------------------------------------- safety
def test_markup_in_outputs_stays_inert_text(page: Any, server: ViewerServer,
                                            runs: dict[str, str]) -> None:
    dialogs: list[str] = []
    def on_dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", on_dialog)
    page.goto(f"{server.url}#/run/{runs['xss']}")
    output = page.locator('.call [data-testid="output"]')
    expect(output).to_have_text(XSS)  # the literal text, visible
    expect(output).to_be_visible()
    expect(page.locator('[data-testid="answer"]')).to_have_text(XSS)
    page.goto(server.url)  # the list shows the answer too
    expect(page.locator(f'tr[data-run-id="{runs["xss"]}"] td.col-answer')).to_have_text(XSS)
    page.goto(f"{server.url}#/run/{runs['xss']}")
    expect(output).to_have_text(XSS)
    time.sleep(0.3)
    assert dialogs == []
    assert page.evaluate("document.querySelectorAll('b').length") == 0
    assert page.evaluate("[...document.scripts].map(s => s.src)") == [server.url + "static/app.js"]
    shot(page, "xss")


# --------------------------------------------------------------------------- beyond loopback
#: Starts a run, sends a call, prints "ready" and waits to be killed.
KILLED_WRITER = ROOT / "tests" / "unit" / "viewer_killed_writer.py"


def test_a_killed_run_shows_its_resume_command(page: Any, server: ViewerServer,
                                               store_path: Path) -> None:
    import signal
    import subprocess
    import sys

    rid = "killed-run-0001"
    child = subprocess.Popen([sys.executable, str(KILLED_WRITER), str(store_path), rid,
                              "Killed while <b>thinking</b>"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        page.goto(f"{server.url}#/run/{rid}")
        expect(page.locator('[data-testid="live"]')).to_be_visible()
        expect(page.locator(".lane-bar.running")).to_have_count(1)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # The open page learns it from its event stream's end.
    view = page.locator(".run-view")
    expect(view).to_have_attribute("data-status", "interrupted")
    expect(page.locator(".run-head .badge")).to_have_text("interrupted")
    expect(page.locator('[data-testid="resume-command"]')).to_have_text(f"orchestra resume {rid}")
    expect(page.locator(".stop-reason")).to_contain_text(f"process {child.pid}")
    expect(page.locator('[data-testid="live"]')).to_have_count(0)
    expect(page.locator(".lane-bar.running")).to_have_count(0)
    expect(page.locator(".lane-time")).to_have_text("no reply")
    expect(page.locator(".run-query")).to_have_text("Killed while <b>thinking</b>")
    shot(page, "interrupted")
    # A fresh load, and the list, say the same.
    page.reload()
    expect(page.locator('[data-testid="resume-command"]')).to_have_text(f"orchestra resume {rid}")
    page.goto(f"{server.url}#/runs?status=interrupted")
    expect(page.locator("tr[data-run-id]")).to_have_count(1)
    expect(page.locator(f'tr[data-run-id="{rid}"]')).to_have_attribute("data-status", "interrupted")


def test_the_page_and_its_stream_work_with_the_access_token(
        browser: Any, runs: dict[str, str], store_path: Path) -> None:
    """On 0.0.0.0 (read over 127.0.0.1): the printed address logs the browser in once."""
    srv = create_server(store_path, "0.0.0.0", 0, poll_s=0.1)
    srv.start()
    writer = SQLiteTraceStore(store_path)
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        pg = ctx.new_page()
        pg.set_default_timeout(15_000)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        requests: list[str] = []
        pg.on("request", lambda r: requests.append(r.url))
        denied = pg.goto(srv.url)
        assert denied is not None and denied.status == 401  # no token, no traces
        pg.goto(srv.access_url)
        expect(pg.locator("tr[data-run-id]").first).to_be_visible()
        assert "token" not in pg.url  # out of the address bar and history
        cookies = ctx.cookies()
        assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
            (srv.cookie_name, True, "Strict")]

        rid, t = "token-live-0001", time.time()
        writer.append(RunStarted(run_id=rid, seq=0, ts=t, query="Streamed behind a token",
                                 pool="test", policy="cheapest", budget={"usd": 1.0}))
        pg.goto(f"{srv.url}#/run/{rid}")
        expect(pg.locator('[data-testid="live"]')).to_be_visible()
        writer.append(RunFinished(run_id=rid, seq=1, ts=t + 0.5, answer="done",
                                  stop_reason="answered", status="ok", cost_usd=0.0,
                                  input_tokens=0, output_tokens=0, calls=0, rounds=0,
                                  duration_s=0.5))
        expect(pg.locator(".run-view")).to_have_attribute("data-status", "ok")
        assert any(f"/api/runs/{rid}/stream" in u for u in requests)
        assert not any("/events?after=" in u for u in requests)  # the stream, not polling
        assert errors == []
    finally:
        ctx.close()
        writer.close()
        srv.stop()

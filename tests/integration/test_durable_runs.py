"""Durable runs in one process: the journal, the stored terms, the lock per run id, the seconds
used, concurrent threads on one checkpoint folder, and runs checkpointed by earlier versions."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestra import Budget, Orchestra, UserError
from orchestra.backends.base import Completion, CompletionRequest
from orchestra.durable import RunBusyError, finished_mark, run_key
from orchestra.spec import Pool
from orchestra.testing import FunctionBackend, make_pool
from orchestra.trace.events import Event
from orchestra.trace.store import SQLiteTraceStore


class ProcessKilled(Exception):
    """Stands in for SIGKILL: nothing in the runtime catches it, nothing after it runs."""


def answer(req: CompletionRequest) -> str:
    return f"answer from {req.model.name}"


def slow_b(req: CompletionRequest) -> float:
    """Model b answers later than a: a kill at a's call_finished finds b still in flight."""
    return 0.3 if req.model.name == "b" else 0.0


def two_models() -> Pool:
    return make_pool(prices=[(1.0, 2.0), (1.0, 2.0)], names=["a", "b"])


def kill_at(n: int) -> Callable[[Event], None]:
    """A listener that "kills the process" right after the n-th call_finished is stored: the
    event is in the trace, the call's result is not in any checkpoint yet."""
    seen = []

    def listener(ev: Event) -> None:
        if ev.kind == "call_finished":
            seen.append(ev)
            if len(seen) == n:
                raise ProcessKilled(f"killed after {ev.call_id}")

    return listener


def finished_ids(store: SQLiteTraceStore, run_id: str) -> list[str]:
    return [e["call_id"] for e in store.events(run_id) if e["kind"] == "call_finished"]


def test_a_call_whose_call_finished_was_stored_is_never_sent_again(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "t.sqlite")
    first = FunctionBackend(answer, latency_s=slow_b)
    o = Orchestra(two_models(), policy="ensemble", policy_params={"k": 2, "layers": 2},
                  backend=first, store=store, durable=tmp_path / "ckpt")
    with pytest.raises(ProcessKilled):
        o.run("q", run_id="r1", on_event=kill_at(1))
    assert len(first.calls) == 2  # both round-0 calls were sent; a finished, then the kill
    assert len(finished_ids(store, "r1")) == 1

    again = FunctionBackend(answer)
    r = Orchestra(two_models(), backend=again, store=store, durable=tmp_path / "ckpt").resume("r1")
    assert r.stop_reason == "answered" and r.rounds == 2 and r.calls == 4
    # Round 0: only the call that had not finished is sent again; then round 1's two calls.
    assert len(again.calls) == 3
    ids = finished_ids(store, "r1")
    assert len(ids) == len(set(ids)) == 4  # one call_finished per call, none twice
    assert store.get_run("r1")["cost_usd"] == pytest.approx(r.cost_usd)  # type: ignore[index]


def test_resume_runs_on_the_stored_pool_policy_params_and_budget(tmp_path: Path) -> None:
    """Started on a pool built in Python, with parameters and a calls limit; resumed by an
    Orchestra built on another pool with the default budget and policy: the run's terms win."""
    store = SQLiteTraceStore(tmp_path / "t.sqlite")
    budget = Budget(usd=0.01, calls=5, seconds=600)
    o = Orchestra(two_models(), policy="ensemble", policy_params={"k": 2, "layers": 3},
                  budget=budget, backend=FunctionBackend(answer, latency_s=slow_b), store=store,
                  durable=tmp_path / "ckpt")
    with pytest.raises(ProcessKilled):
        o.run("q", run_id="r2", on_event=kill_at(2))

    other = make_pool(names=["m0"], prices=[(0.1, 0.2)])  # another pool, default budget $1
    healthy = FunctionBackend(answer)
    r = Orchestra(other, backend=healthy, store=store, durable=tmp_path / "ckpt").resume("r2")
    started = [e for e in store.events("r2") if e["kind"] == "run_started"]
    assert started[1]["resumed"] and started[1]["pool"] == "test"
    assert started[1]["policy"] == started[0]["policy"]  # ensemble with layers=3, k=2
    assert started[1]["budget"] == budget.model_dump()
    assert {c.model for c in healthy.calls} == {"a", "b"}
    # layers=3 wants 6 calls; the calls limit of 5 stops it (unlimited calls would send 6).
    assert r.calls == 5 and r.rounds == 3
    dropped = [d for e in store.events("r2") if e["kind"] == "policy_decided"
               for d in e.get("dropped") or []]
    assert [d["limit"] for d in dropped] == ["calls"]


def test_explicit_budget_overrides_on_resume_and_a_different_policy_is_refused(
        tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "t.sqlite")
    o = Orchestra(two_models(), policy="ensemble", policy_params={"k": 2, "layers": 3},
                  budget=Budget(usd=0.01, calls=2),
                  backend=FunctionBackend(answer, latency_s=slow_b), store=store,
                  durable=tmp_path / "ckpt")
    with pytest.raises(ProcessKilled):
        o.run("q", run_id="r3", on_event=kill_at(2))
    resumer = Orchestra(two_models(), policy="cheapest", backend=FunctionBackend(answer),
                        store=store, durable=tmp_path / "ckpt")
    with pytest.raises(UserError, match=r"keeps its policy.*drop the policy option"):
        resumer.resume("r3")
    r = Orchestra(two_models(), backend=FunctionBackend(answer), store=store,
                  durable=tmp_path / "ckpt").resume("r3", budget={"calls": 6})
    assert r.calls == 6 and r.rounds == 3 and r.stop_reason == "answered"
    started = [e for e in store.events("r3") if e["kind"] == "run_started"]
    assert started[-1]["budget"] == {**Budget(usd=0.01, calls=6).model_dump()}


def test_the_seconds_limit_counts_the_time_used_before_the_interruption(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "t.sqlite")
    slow = FunctionBackend(answer, latency_s=0.4)
    o = Orchestra(two_models(), policy="ensemble", policy_params={"k": 2, "layers": 2},
                  budget=Budget(usd=1.0, seconds=30), backend=slow, store=store,
                  durable=tmp_path / "ckpt")
    with pytest.raises(ProcessKilled):
        o.run("q", run_id="r4", on_event=kill_at(2))
    Orchestra(two_models(), backend=FunctionBackend(answer), store=store,
              durable=tmp_path / "ckpt").resume("r4")
    decided = [e for e in store.events("r4") if e["kind"] == "policy_decided"]
    resumed_left = decided[-1]["budget_left"]["seconds"]
    assert resumed_left <= 30 - 0.4  # the 0.4 s the first attempt spent are not given back


def test_one_process_at_a_time_may_resume_a_run(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "t.sqlite")
    o = Orchestra(two_models(), policy="ensemble", backend=FunctionBackend(answer, latency_s=slow_b),
                  store=store, durable=tmp_path / "ckpt")
    with pytest.raises(ProcessKilled):
        o.run("q", run_id="r5", on_event=kill_at(1))

    gate = threading.Event()
    sent = threading.Event()

    async def blocked(req: CompletionRequest) -> str:
        sent.set()
        await asyncio.get_running_loop().run_in_executor(None, gate.wait)
        return answer(req)

    first = FunctionBackend(blocked)
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.setdefault("r", Orchestra(
        two_models(), backend=first, store=store, durable=tmp_path / "ckpt").resume("r5")))
    t.start()
    assert sent.wait(30)
    second = FunctionBackend(answer)
    with pytest.raises(RunBusyError, match=rf"run 'r5' is in use by process {os.getpid()} .*resume"):
        Orchestra(two_models(), backend=second, store=store, durable=tmp_path / "ckpt").resume("r5")
    gate.set()
    t.join(30)
    assert box["r"].stop_reason == "answered" and not second.calls and len(first.calls) == 1
    events = store.events("r5")
    assert [e["seq"] for e in events] == list(range(len(events)))  # one trace, not interleaved


def test_a_run_id_cannot_be_started_twice(tmp_path: Path) -> None:
    o = Orchestra(two_models(), backend=FunctionBackend(answer), store=False,
                  durable=tmp_path / "ckpt")
    o.run("q", run_id="same")
    # A finished run keeps no checkpoint, only the mark in its lock file.
    assert not list((tmp_path / "ckpt").glob("*.sqlite*"))
    assert finished_mark(tmp_path / "ckpt" / "same.lock") is not None
    with pytest.raises(UserError, match="was used before"):
        o.run("q", run_id="same")
    with pytest.raises(UserError, match="already finished"):
        o.resume("same")
    weird = "Run/With Spaces?"
    assert "/" not in run_key(weird) and run_key("abc-1") == "abc-1"
    assert o.run("q", run_id=weird).trace_id == weird


def test_threads_running_and_resuming_at_once_on_one_folder_lose_nothing(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "t.sqlite")
    ckpt = tmp_path / "ckpt"
    n = 8
    for i in range(n):  # n interrupted runs to resume
        with pytest.raises(ProcessKilled):
            Orchestra(two_models(), policy="ensemble", policy_params={"k": 2, "layers": 2},
                      backend=FunctionBackend(answer, latency_s=slow_b), store=store,
                      durable=ckpt).run("q", run_id=f"old-{i}", on_event=kill_at(1))
    results: dict[str, Any] = {}
    backend = FunctionBackend(answer, latency_s=0.01)

    def work(i: int) -> None:
        o = Orchestra(two_models(), policy="ensemble", policy_params={"k": 2, "layers": 2},
                      backend=backend, store=store, durable=ckpt)
        try:
            results[f"old-{i}"] = o.resume(f"old-{i}")
            results[f"new-{i}"] = o.run("q", run_id=f"new-{i}")
        except BaseException as e:  # noqa: BLE001 - reported below
            results[f"error-{i}"] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not [k for k in results if k.startswith("error")], results
    assert len(results) == 2 * n
    for rid, r in results.items():
        assert r.stop_reason == "answered" and r.calls == 4, rid
        assert store.get_run(rid)["status"] == "ok"  # type: ignore[index]
        assert len(finished_ids(store, rid)) == 4
    # n resumes sent 3 calls each (one of round 0 had finished), n new runs 4 each.
    assert len(backend.calls) == n * 3 + n * 4


def test_a_run_checkpointed_in_the_single_shared_file_of_earlier_versions_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from orchestra._graph import build_graph

    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path))
    store = SQLiteTraceStore(tmp_path / "t.sqlite")
    o = Orchestra(two_models(), policy="ensemble", policy_params={"k": 2, "layers": 2},
                  backend=FunctionBackend(answer), store=store)

    async def old_style_run() -> None:  # what durable=True did before: one shared file
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "checkpoints.sqlite")) as s:
            from orchestra.durable import RunTerms

            terms = RunTerms(pool=o.pool, policy=o.policy, budget=o.budget, max_think_steps=8)
            init = {"run_id": "legacy", "query": "q", "history": [], "meta": {}, "notes": [],
                    "steps": [], "calls": [], "rounds": [], "plan": [], "think_steps": 0,
                    "final": None}
            await o._invoke(build_graph(s), "legacy", init, kill_at(3), terms,  # type: ignore[arg-type]
                            None)

    with pytest.raises(ProcessKilled):
        asyncio.run(old_style_run())
    healthy = FunctionBackend(answer)
    r = Orchestra(two_models(), policy="ensemble", policy_params={"k": 2, "layers": 2},
                  backend=healthy, store=store, durable=True).resume("legacy")
    assert r.stop_reason == "answered" and r.calls == 4 and len(healthy.calls) <= 2
    # Migrated to its own file, which the finished run then leaves behind as a mark only.
    assert finished_mark(tmp_path / "checkpoints" / "legacy.lock") is not None
    assert not (tmp_path / "checkpoints" / "legacy.sqlite").exists()


def test_a_cancelled_run_is_stored_as_interrupted_and_resumes(tmp_path: Path) -> None:
    from orchestra.trace.liveness import as_shown

    store = SQLiteTraceStore(tmp_path / "t.sqlite")
    o = Orchestra(two_models(), policy="ensemble", policy_params={"k": 2, "layers": 2},
                  backend=FunctionBackend(answer, latency_s=slow_b), store=store,
                  durable=tmp_path / "ckpt")

    async def cancel_after_first_call() -> None:
        box: dict[str, asyncio.Task[Any]] = {}

        def listener(ev: Event) -> None:
            if ev.kind == "call_finished":
                box["task"].cancel()  # what Ctrl-C does to asyncio.run's main task

        box["task"] = asyncio.ensure_future(o.arun("q", run_id="c1", on_event=listener))
        await box["task"]

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancel_after_first_call())
    row = store.get_run("c1")
    assert row is not None and row["status"] == "interrupted"
    assert "resume with: orchestra resume c1" in row["stop_reason"]
    assert as_shown(store, row)["resume"] == "orchestra resume c1"
    assert (tmp_path / "ckpt" / "c1.sqlite").is_file()  # kept: the run can go on
    healthy = FunctionBackend(answer)
    r = Orchestra(two_models(), backend=healthy, store=store,
                  durable=tmp_path / "ckpt").resume("c1")
    assert r.stop_reason == "answered" and r.calls == 4 and len(healthy.calls) == 3
    assert store.get_run("c1")["status"] == "ok"  # type: ignore[index]


def test_an_overrun_before_the_kill_still_stops_the_resumed_run(tmp_path: Path) -> None:
    """The overrun is in the journal only (killed right after it): resume must not spend."""
    store = SQLiteTraceStore(tmp_path / "t.sqlite")

    def overbilling(req: CompletionRequest) -> Completion | str:
        if req.model.name == "a":  # ignores max_tokens: billed 50x what was reserved
            return Completion(text="a says", input_tokens=5, output_tokens=req.max_tokens * 50,
                              finish_reason="length")
        return answer(req)

    with pytest.raises(ProcessKilled):
        Orchestra(two_models(), policy="ensemble", policy_params={"k": 2, "layers": 2},
                  backend=FunctionBackend(overbilling, latency_s=slow_b), store=store,
                  durable=tmp_path / "ckpt").run("q", run_id="o1", on_event=kill_at(1))
    [a_done] = [e for e in store.events("o1") if e["kind"] == "call_finished"]
    assert a_done["model"] == "a" and a_done["overrun"]["excess_usd"] > 0
    healthy = FunctionBackend(answer)
    r = Orchestra(two_models(), backend=healthy, store=store,
                  durable=tmp_path / "ckpt").resume("o1")
    assert r.stop_reason == "budget_overrun" and healthy.calls == []
    assert [o["call_id"] for o in r.overruns] == [a_done["call_id"]]


class Killed(BaseException):
    """A kill in the middle of a policy's decision (BaseException: no handler sees it)."""


class AsksThenRoutes:
    """Asks model a itself (ctx.complete), then routes to b."""

    name = "asks-then-routes"

    def start(self, ctx: Any) -> Any:
        return _Asking(ctx)


class _Asking:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    async def adecide(self, view: Any) -> Any:
        from orchestra import Answer, Call, Route

        if view.rounds:
            return Answer()
        asked = await self.ctx.complete("which model?", model="a")
        return Route([Call(model="b")], scores={"asked": asked.output})


def test_a_policy_call_paid_before_a_kill_is_not_sent_again(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "t.sqlite")

    def kill_after_the_policy_call(ev: Event) -> None:
        if ev.kind == "call_finished" and ev.role == "policy":
            raise Killed("killed in the middle of the decision")

    first = FunctionBackend(answer)
    o = Orchestra(two_models(), policy=AsksThenRoutes(), backend=first, store=store,
                  durable=tmp_path / "ckpt")
    with pytest.raises(Killed):
        o.run("q", run_id="p1", on_event=kill_after_the_policy_call)
    assert [c.model for c in first.calls] == ["a"]

    again = FunctionBackend(answer)
    r = Orchestra(two_models(), policy=AsksThenRoutes(), backend=again, store=store,
                  durable=tmp_path / "ckpt").resume("p1")
    # The decision ran again, found its paid call in the journal, and only b was sent.
    assert [c.model for c in again.calls] == ["b"]
    assert r.answer == "answer from b" and r.calls == 2
    route = next(s for s in r.steps if s["action"] == "route")
    assert route["scores"] == {"asked": "answer from a"}
    assert finished_ids(store, "p1").count("policy-0-0") == 1
    assert store.get_run("p1")["cost_usd"] == pytest.approx(r.cost_usd)  # type: ignore[index]

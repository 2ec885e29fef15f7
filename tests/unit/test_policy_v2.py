"""Policy interface v2: per-run deciders, async-only policies, the policy's own calls, feedback,
per-decision merge and system prompts, answer provenance and invalid actions."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from orchestra import (
    Answer,
    Budget,
    Call,
    Feedback,
    Orchestra,
    PolicyContext,
    Route,
    RoutingError,
    RunView,
    UserError,
)
from orchestra.backends.base import CompletionRequest
from orchestra.testing import FunctionBackend, ScriptedBackend, last_user_message, make_pool
from orchestra.trace.store import MemoryTraceStore


def orch(pool: Any, backend: Any, policy: Any, **kw: Any) -> Orchestra:
    kw.setdefault("store", MemoryTraceStore())
    return Orchestra(pool, backend=backend, policy=policy, **kw)


class AsyncOnly:
    name = "async-only"

    async def adecide(self, view: RunView) -> Any:
        await asyncio.sleep(0)
        return Route([Call(model="m1")]) if not view.rounds else Answer()


def test_an_async_only_policy_is_accepted_and_awaited() -> None:
    be = FunctionBackend(lambda r: "ok")
    r = orch(make_pool(), be, AsyncOnly()).run("q")
    assert r.answer == "ok" and [c.model for c in be.calls] == ["m1"]


def test_an_object_that_cannot_decide_is_refused_by_name() -> None:
    class Nothing:
        name = "nothing"

    with pytest.raises(UserError, match="decide\\(view\\), async adecide\\(view\\) or start"):
        orch(make_pool(), FunctionBackend(lambda r: "x"), Nothing())


class Counting:
    """Per-run state: each run's decider counts its own decisions; start sees the run."""

    name = "counting"

    def __init__(self) -> None:
        self.started: list[str] = []
        self.lock = threading.Lock()

    def start(self, ctx: PolicyContext) -> Any:
        with self.lock:
            self.started.append(ctx.run_id)
        return _Counter(ctx)


class _Counter:
    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx
        self.n = 0

    async def adecide(self, view: RunView) -> Any:
        assert view.run_id == self.ctx.run_id
        self.n += 1
        await asyncio.sleep(0.01)  # interleave with the other runs
        if self.n <= 2:
            return Route([Call(model="m0")], scores={"n": self.n})
        return Answer(scores={"n": self.n})


def test_each_run_gets_its_own_decider_under_concurrency() -> None:
    policy = Counting()
    o = orch(make_pool(budget=Budget(usd=1.0, rounds=8)), FunctionBackend(lambda r: "a"), policy)

    async def many() -> list[Any]:
        return await asyncio.gather(*(o.arun(f"q{i}") for i in range(6)))

    results = asyncio.run(many())
    assert sorted(policy.started) == sorted(r.trace_id for r in results)
    for r in results:  # no run saw another's counter: 2 routes, then the answer, in each
        assert [s["scores"]["n"] for s in r.steps if s["action"] in ("route", "answer")] == [1, 2, 3]


class SeesItsPast:
    name = "sees-past"

    def __init__(self) -> None:
        self.views: list[RunView] = []

    def decide(self, view: RunView) -> Any:
        self.views.append(view)
        if not view.rounds:
            return Route([Call(model="m0", role="solver")], reason="first", scores={"p": 0.3})
        return Answer(reason="done")


def test_the_view_carries_decisions_and_call_ids() -> None:
    p = SeesItsPast()
    r = orch(make_pool(), FunctionBackend(lambda r: "x"), p).run("q")
    last = p.views[-1]
    assert [d.action for d in last.decisions] == ["route"]
    assert last.decisions[0].scores == {"p": 0.3} and last.decisions[0].reason == "first"
    call = last.rounds[0].calls[0]
    assert call.role == "solver" and call.round == 0
    assert last.decisions[0].calls == (call.call_id,)
    assert r.answer_from == call.call_id
    assert (r.answer_call() or {}).get("model") == "m0"


class AsksFirst:
    """Makes its own call (ctx.complete) to pick a model, then routes to it."""

    name = "asks-first"

    def start(self, ctx: PolicyContext) -> Any:
        return _Asker(ctx)


class _Asker:
    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx

    async def adecide(self, view: RunView) -> Any:
        if view.rounds:
            return Answer()
        pick = await self.ctx.complete("Which model? Say m0 or m2.", model="m1",
                                       system="You pick models.", max_tokens=4)
        if pick.error:
            return Answer(text=f"could not ask: {pick.error}")
        return Route([Call(model=pick.output.strip())], scores={"asked": pick.call_id})


def test_a_policy_call_is_reserved_charged_traced_and_seen() -> None:
    seen: list[CompletionRequest] = []

    def reply(req: CompletionRequest) -> str:
        seen.append(req)
        return "m2" if req.model.name == "m1" else "the answer"

    pool = make_pool()
    store = MemoryTraceStore()
    r = orch(pool, FunctionBackend(reply), AsksFirst(), store=store).run("q")
    assert r.answer == "the answer" and r.calls == 2
    assert seen[0].messages[0] == {"role": "system", "content": "You pick models."}
    assert seen[0].max_tokens == 4
    policy_step = next(s for s in r.steps if s["action"] == "policy_call")
    pc = policy_step["calls"][0]
    assert pc["model"] == "m1" and pc["role"] == "policy" and pc["call_id"] == "policy-0-0"
    assert r.cost_usd == pytest.approx(sum(c["cost_usd"] for s in r.steps for c in s["calls"]))
    events = store.events(r.trace_id)
    started = [e for e in events if e["kind"] == "call_started" and e["role"] == "policy"]
    assert len(started) == 1 and started[0]["reserved_usd"] > 0
    route = next(s for s in r.steps if s["action"] == "route")
    assert route["scores"] == {"asked": "policy-0-0"} and route["calls"][0]["model"] == "m2"


def test_a_policy_call_the_budget_cannot_hold_is_not_sent() -> None:
    be = FunctionBackend(lambda r: "m0")
    r = orch(make_pool(), be, AsksFirst(), budget=Budget(usd=1e-9)).run("q")
    assert be.calls == []
    assert r.answer is not None and r.answer.startswith("could not ask: not sent: budget:")
    assert r.cost_usd == 0 and r.answer_from == "policy"


class Learner:
    name = "learner"

    def __init__(self) -> None:
        self.seen: list[Feedback] = []

    def decide(self, view: RunView) -> Any:
        return Route([Call(model="m0")], scores={"arm": "m0"}) if not view.rounds else Answer()

    def observe(self, feedback: Feedback) -> None:
        self.seen.append(feedback)


def test_feedback_reaches_observe_and_the_trace() -> None:
    store = MemoryTraceStore()
    p = Learner()
    o = orch(make_pool(), FunctionBackend(lambda r: "Paris"), p, store=store)
    r = o.run("capital?", meta={"task": "geo"})
    fb = o.feedback(r.trace_id, score=1.0, reward=0.9, meta={"by": "test"})
    assert p.seen == [fb]
    assert fb.query == "capital?" and fb.answer == "Paris" and fb.score == 1.0
    assert fb.answer_from == r.answer_from and fb.meta == {"task": "geo", "by": "test"}
    assert [d.scores for d in fb.decisions if d.action == "route"] == [{"arm": "m0"}]
    assert fb.cost_usd == pytest.approx(r.cost_usd)
    ev = store.events(r.trace_id)[-1]
    assert ev["kind"] == "feedback" and ev["score"] == 1.0 and ev["observed"] is True

    # Another Orchestra (another process) finds the run in the store.
    p2 = Learner()
    o2 = orch(make_pool(), FunctionBackend(lambda r: "x"), p2, store=store)
    fb2 = o2.feedback(r.trace_id, score=0.0)
    assert fb2.answer == "Paris" and fb2.answer_from == r.answer_from
    assert [c.model for c in fb2.calls] == ["m0"]
    assert [d.scores for d in fb2.decisions if d.action == "route"] == [{"arm": "m0"}]


@pytest.mark.parametrize(("kw", "match"), [
    ({}, "a score"), ({"score": 1.5}, "in \\[0, 1\\]"), ({"score": True}, "in \\[0, 1\\]"),
    ({"reward": float("nan")}, "finite"),
])
def test_bad_feedback_is_refused(kw: dict[str, Any], match: str) -> None:
    o = orch(make_pool(), FunctionBackend(lambda r: "x"), Learner())
    r = o.run("q")
    with pytest.raises(UserError, match=match):
        o.feedback(r.trace_id, **kw)


def test_feedback_on_an_unknown_run_names_it() -> None:
    o = orch(make_pool(), FunctionBackend(lambda r: "x"), Learner())
    with pytest.raises(UserError, match="unknown run 'nope'"):
        o.feedback("nope", score=1.0)


class Merger:
    name = "merger"

    def __init__(self, merge: str | None, k: int = 3, system: str | None = None) -> None:
        self.merge, self.k, self.system = merge, k, system

    def decide(self, view: RunView) -> Any:
        if view.rounds:
            return Answer()
        return Route([Call(model=f"m{i}", system=self.system, role=f"expert-{i}")
                      for i in range(self.k)], merge=self.merge)


def test_merge_is_chosen_per_decision() -> None:
    pool = make_pool(refiner="llm")  # the pool says llm; this decision says vote
    be = ScriptedBackend({"m0": "B", "m1": "B", "m2": "A"})
    r = orch(pool, be, Merger("vote")).run("A or B?")
    assert len(be.calls) == 3  # no refiner call
    refined = next(e for e in r.events if e.kind == "refined")
    assert refined.refiner == "vote" and r.answer == "B"
    assert (r.answer_call() or {}).get("model") in ("m0", "m1")
    route = next(s for s in r.steps if s["action"] == "route")
    assert route["merge"] == "vote"


def test_llm_merge_in_a_vote_pool_credits_the_refiner_call() -> None:
    def reply(req: CompletionRequest) -> str:
        if "Candidate answers" in last_user_message(req):
            return "merged\nConflicts: none"
        return req.model.name

    r = orch(make_pool(refiner="vote"), FunctionBackend(reply), Merger("llm")).run("q")
    assert r.answer == "merged" and r.answer_from == "refine-0"


def test_system_prompt_and_role_label_reach_the_call_and_the_trace() -> None:
    be = FunctionBackend(lambda r: "x")
    r = orch(make_pool(), be, Merger("last", k=1, system="You are the critic.")).run("q")
    assert be.calls[0].messages[0] == {"role": "system", "content": "You are the critic."}
    assert r.steps[0]["calls"][0]["role"] == "expert-0"
    started = next(e for e in r.events if e.kind == "call_started")
    assert started.role == "expert-0"


class Says:
    name = "says"

    def __init__(self, *actions: Any) -> None:
        self.actions = list(actions)

    def decide(self, view: RunView) -> Any:
        a = self.actions.pop(0)
        return a(view) if callable(a) else a


def test_answer_provenance_for_text_and_from_call() -> None:
    be = ScriptedBackend({"m0": "zero", "m1": "one"})
    r = orch(make_pool(refiner="vote"), be, Says(
        Route([Call(model="m0"), Call(model="m1")]),
        lambda v: Answer(text="zero"))).run("q")
    zero = next(c for s in r.steps for c in s["calls"] if c["model"] == "m0")
    assert r.answer == "zero" and r.answer_from == zero["call_id"]

    r = orch(make_pool(refiner="vote"), be, Says(
        Route([Call(model="m0"), Call(model="m1")]),
        lambda v: Answer(from_call=next(c.call_id for c in v.rounds[0].calls
                                        if c.model == "m1")))).run("q")
    assert r.answer == "one" and (r.answer_call() or {}).get("model") == "m1"

    r = orch(make_pool(), be, Says(Answer(text="my own words"))).run("q")
    assert r.answer_from == "policy" and r.answer_call() is None


@pytest.mark.parametrize(("action", "why"), [
    (Route([Call(model="nope")]), "unknown model 'nope'"),
    (Route([]), "Route with no calls"),
    ("route please", "expected Think, Route or Answer"),
    (Route([Call(model="m0")], merge="mean"), "unknown refiner"),
    (Route([Call(model="m0", role="refine")]), "runtime's own"),
    (Answer(from_call="c-404"), "names no call"),
])
def test_an_invalid_action_is_recorded_and_falls_back(action: Any, why: str) -> None:
    be = FunctionBackend(lambda r: "fallback answer")
    r = orch(make_pool(), be, Says(action, Answer())).run("q")
    invalid = r.steps[0]
    assert invalid["action"] == "invalid" and why in invalid["reason"]
    assert r.answer == "fallback answer" and len(be.calls) == 1  # the pool's default call
    assert r.steps[1]["action"] == "route" and "fallback" in r.steps[1]["reason"]
    ev = next(e for e in r.events if e.kind == "policy_decided")
    assert ev.action == "invalid"


def test_an_invalid_action_after_an_answer_finishes_with_it() -> None:
    be = FunctionBackend(lambda r: "first")
    r = orch(make_pool(), be, Says(Route([Call(model="m0")]), Route([Call(model="zz")]))).run("q")
    assert r.answer == "first" and r.stop_reason == "invalid_action"
    assert [s["action"] for s in r.steps] == ["route", "invalid"]


def test_on_invalid_raise_records_then_raises() -> None:
    store = MemoryTraceStore()
    o = orch(make_pool(), FunctionBackend(lambda r: "x"), Says(Route([Call(model="zz")])),
             store=store, on_invalid="raise")
    with pytest.raises(RoutingError, match="unknown model 'zz'"):
        o.run("q")
    kinds = [(e["kind"], e.get("action")) for e in store.events(store.list_runs()[0]["run_id"])]
    assert ("policy_decided", "invalid") in kinds and kinds[-1][0] == "error"


def test_on_invalid_must_be_known() -> None:
    with pytest.raises(UserError, match="on_invalid must be"):
        orch(make_pool(), FunctionBackend(lambda r: "x"), Learner(), on_invalid="ignore")

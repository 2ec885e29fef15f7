"""The graph runtime with the public test doubles: routing, fan-out, refiners, budgets, traces."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestra import Answer, Budget, Call, Orchestra, Route, RoutingError, Think, UserError
from orchestra.backends.base import Completion, CompletionRequest
from orchestra.errors import BackendError
from orchestra.spec import AgentSpec, ModelSpec, Pool, RefinerSpec, ToolSpec
from orchestra.testing import FunctionBackend, ScriptedBackend, last_user_message, make_pool
from orchestra.trace.store import MemoryTraceStore


def orch(pool: Pool, backend: Any, **kw: Any) -> Orchestra:
    kw.setdefault("store", MemoryTraceStore())
    return Orchestra(pool, backend=backend, **kw)


def test_single_policy_answers_and_prices_the_call() -> None:
    pool = make_pool()
    be = FunctionBackend(lambda r: "Paris")
    r = orch(pool, be, policy="single:m1").run("What is the capital of France?")
    assert r.answer == "Paris" and r.stop_reason == "answered"
    assert [c.model for c in be.calls] == ["m1"]
    call = r.steps[0]["calls"][0]
    m1 = pool.model("m1")
    assert call["cost_usd"] == pytest.approx(m1.cost(call["input_tokens"], call["output_tokens"]))
    assert r.cost_usd == pytest.approx(call["cost_usd"])


def test_cheapest_and_strongest_pick_by_price_and_prior() -> None:
    pool = make_pool(qualities=[0.2, 0.9, 0.5])
    be = FunctionBackend(lambda r: "x")
    orch(pool, be, policy="cheapest").run("q")
    orch(pool, be, policy="strongest").run("q")
    assert [c.model for c in be.calls] == ["m0", "m1"]


def test_fan_out_runs_calls_concurrently() -> None:
    in_flight = 0
    peak = 0

    async def slow(req: CompletionRequest) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return req.model.name

    pool = make_pool(prices=[(0.1, 0.1)] * 5, names=["a", "b", "c", "d", "e"])
    r = orch(pool, FunctionBackend(slow), policy="ensemble", policy_params={"k": 5}).run("q")
    assert r.calls == 5
    assert peak == 5  # all five were in flight at once: Send fan-out, not a loop


def test_vote_refiner_takes_the_majority() -> None:
    pool = make_pool(prices=[(0.1, 0.1)] * 3, names=["a", "b", "c"], refiner="vote")
    be = ScriptedBackend({"a": "The answer is (B).", "b": "B", "c": "A"})
    r = orch(pool, be, policy="ensemble", policy_params={"k": 3}).run("Pick A or B")
    assert r.answer in ("The answer is (B).", "B")
    refined = next(e for e in r.events if e.kind == "refined")
    assert refined.votes == {"B": 2, "A": 1}


def test_llm_refiner_merges_and_reports_conflicts() -> None:
    pool = make_pool(prices=[(0.1, 0.1)] * 2, names=["a", "b"], refiner="llm")

    def reply(req: CompletionRequest) -> str:
        if "Candidate answers" in last_user_message(req):
            return "Paris is the capital.\nConflicts: candidate 2 said Lyon."
        return "Paris" if req.model.name == "a" else "Lyon"

    r = orch(pool, FunctionBackend(reply), policy="ensemble", policy_params={"k": 2}).run("capital?")
    assert r.answer == "Paris is the capital."
    refined = next(e for e in r.events if e.kind == "refined")
    assert refined.conflicts == "candidate 2 said Lyon."
    assert refined.refiner.startswith("llm:refiner@")
    assert r.calls == 3  # two proposers and the refiner, all charged
    assert any(s["action"] == "refine" for s in r.steps)


def test_cascade_escalates_when_the_verifier_is_unsure() -> None:
    pool = make_pool()

    def reply(req: CompletionRequest) -> str:
        if "SURE or UNSURE" in last_user_message(req):
            return "SURE" if "forty-two" in last_user_message(req) else "UNSURE"
        return {"m0": "no idea", "m1": "forty-two", "m2": "42"}[req.model.name]

    be = FunctionBackend(reply)
    r = orch(pool, be, policy="cascade").run("What is six times seven?")
    assert r.answer == "forty-two"
    answered = [c.model for c in be.calls if "SURE" not in str(c.messages[-1]["content"])]
    assert answered == ["m0", "m1"]  # escalated once, never reached the priciest model


def test_ensemble_layers_feed_previous_answers_back() -> None:
    pool = make_pool(prices=[(0.1, 0.1)] * 2, names=["a", "b"])
    be = FunctionBackend(lambda r: f"ans-{r.model.name}")
    r = orch(pool, be, policy="ensemble", policy_params={"k": 2, "layers": 2}).run("q")
    assert r.rounds == 2 and r.calls == 4
    second = [c for c in be.calls][2:]
    assert all("ans-a" in c.messages[-1]["content"] and "ans-b" in c.messages[-1]["content"]
               for c in second)


class ThinkThenRoute:
    name = "think-then-route"

    def decide(self, view: Any) -> Any:
        if view.think_steps == 0:
            return Think("the user wants a city name", reason="plan")
        if not view.rounds:
            return Route([Call(model="m0")], reason="go", scores={"m0": 1.0})
        return Answer(text=view.best_answer.upper(), reason="done")


def test_think_notes_reach_the_prompt_and_answer_text_is_used() -> None:
    pool = make_pool()
    be = FunctionBackend(lambda r: "paris")
    r = orch(pool, be, policy=ThinkThenRoute()).run("capital of France?")
    assert r.answer == "PARIS"
    assert "the user wants a city name" in be.calls[0].messages[-1]["content"]
    kinds = [(e.kind, getattr(e, "action", None)) for e in r.events]
    assert kinds[0] == ("run_started", None)
    assert ("policy_decided", "think") in kinds and kinds[-1] == ("run_finished", None)
    decided = next(e for e in r.events if e.kind == "policy_decided" and e.action == "route")
    assert decided.scores == {"m0": 1.0}


def test_think_limit_stops_a_policy_that_never_acts() -> None:
    class Dreamer:
        name = "dreamer"

        def decide(self, view: Any) -> Any:
            return Think("hmm")

    r = orch(make_pool(), FunctionBackend(lambda r: "x"), policy=Dreamer(), max_think_steps=3).run("q")
    assert r.stop_reason == "think_limit" and r.calls == 0


def test_a_call_that_does_not_fit_is_never_sent() -> None:
    pool = make_pool(prices=[(1000.0, 1000.0)])
    be = FunctionBackend(lambda r: "x")
    r = orch(pool, be, policy="cheapest", budget=Budget(usd=1e-6)).run("q")
    assert be.calls == []
    assert r.stop_reason == "budget:usd" and r.cost_usd == 0
    decided = next(e for e in r.events if e.kind == "policy_decided")
    assert decided.dropped and decided.dropped[0]["limit"] == "usd"


def test_parallel_calls_reserve_together_and_the_excess_is_dropped() -> None:
    # Each call's worst case is ~ (prompt + 64 out) tokens at $1/token-million... make only 2 fit.
    pool = make_pool(prices=[(10_000.0, 10_000.0)] * 4, names=["a", "b", "c", "d"],
                     max_output_tokens=20)
    be = FunctionBackend(lambda r: "ok")
    probe = orch(pool, FunctionBackend(lambda r: "ok"), policy="single:a").run("q")
    worst_one = next(e for e in probe.events if e.kind == "call_started").reserved_usd
    budget = Budget(usd=worst_one * 2.5, rounds=1)
    r = orch(pool, be, policy="ensemble", policy_params={"k": 4}, budget=budget).run("q")
    assert len(be.calls) == 2
    decided = next(e for e in r.events if e.kind == "policy_decided")
    assert len(decided.calls) == 2 and len(decided.dropped) == 2
    assert r.cost_usd <= budget.usd


def test_max_tokens_shrinks_to_what_the_budget_allows() -> None:
    pool = make_pool(prices=[(0.0, 1_000_000.0)], max_output_tokens=64)
    be = FunctionBackend(lambda r: "word " * 100)
    # $1 per output token, $0 input: 20 tokens fit.
    r = orch(pool, be, policy="cheapest", budget=Budget(usd=20.0)).run("q")
    assert be.calls[0].max_tokens == 20
    assert r.cost_usd <= 20.0 and r.output_tokens == 20


def test_rounds_limit_finishes_with_the_best_answer() -> None:
    pool = make_pool(prices=[(0.1, 0.1)] * 2, names=["a", "b"])
    be = FunctionBackend(lambda r: "draft")
    r = orch(pool, be, policy="ensemble", policy_params={"k": 2, "layers": 5},
             budget=Budget(rounds=2)).run("q")
    assert r.rounds == 2 and r.stop_reason == "budget:rounds" and r.answer == "draft"


def test_calls_limit_counts_every_call() -> None:
    pool = make_pool(prices=[(0.1, 0.1)] * 3, names=["a", "b", "c"])
    be = FunctionBackend(lambda r: "x")
    r = orch(pool, be, policy="ensemble", policy_params={"k": 3, "layers": 3},
             budget=Budget(calls=4)).run("q")
    assert len(be.calls) == 4 == r.calls
    assert r.stop_reason == "budget:calls"


def test_backend_failure_is_recorded_and_the_run_goes_on() -> None:
    pool = make_pool(prices=[(0.1, 0.1)] * 2, names=["a", "b"])

    def reply(req: CompletionRequest) -> Any:
        if req.model.name == "a":
            return BackendError("a (test/a) failed: RateLimitError: slow down", model="test/a")
        return "fine"

    r = orch(pool, FunctionBackend(reply), policy="ensemble", policy_params={"k": 2}).run("q")
    assert r.answer == "fine"
    failed = [e for e in r.events if e.kind == "call_finished" and e.error]
    assert len(failed) == 1 and "RateLimitError" in failed[0].error and failed[0].cost_usd == 0


def test_timed_out_call_keeps_its_reservation_as_spent() -> None:
    pool = make_pool()
    err = BackendError("m0 timed out", model="test/m0", transient=True, billed_unknown=True)
    r = orch(pool, FunctionBackend(lambda r: err), policy="cheapest").run("q")
    started = next(e for e in r.events if e.kind == "call_started")
    assert r.cost_usd == pytest.approx(started.reserved_usd) and r.cost_usd > 0


def test_policy_routing_to_a_forbidden_model_is_invalid() -> None:
    m = [ModelSpec(name=n, id=f"test/{n}", input_price=1, output_price=1) for n in ("a", "b")]
    pool = Pool(models=tuple(m), agents=(AgentSpec(name="x", models=("a",)),),
                refiner=RefinerSpec(kind="vote"))

    class Bad:
        name = "bad"

        def decide(self, view: Any) -> Any:
            return Route([Call(agent="x", model="b")])

    store = MemoryTraceStore()
    with pytest.raises(RoutingError, match="may not use"):
        orch(pool, FunctionBackend(lambda r: "x"), policy=Bad(), store=store,
             on_invalid="raise").run("q")
    run = store.list_runs()[0]
    assert run["status"] == "error"
    assert store.events(run["run_id"])[-1]["kind"] == "error"
    # By default the invalid action is recorded and the run falls back to the default call.
    r = orch(pool, FunctionBackend(lambda r: "x"), policy=Bad()).run("q")
    assert r.steps[0]["action"] == "invalid" and "may not use" in r.steps[0]["reason"]
    assert r.answer == "x" and r.stop_reason == "invalid_action"


def test_unknown_policy_lists_known_ones() -> None:
    with pytest.raises(UserError) as e:
        orch(make_pool(), FunctionBackend(lambda r: "x"), policy="bogus")
    assert "cheapest" in str(e.value) and "cascade" in str(e.value)


def test_recipe_naming_an_unregistered_policy_is_a_user_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A recipe whose 'policy' is not registered (here: its own name) must not loop.
    (tmp_path / "selfref.yaml").write_text("policy: selfref\nparams: {}\n")
    with pytest.raises(UserError, match="'policy: selfref' is not a registered policy"):
        orch(make_pool(), FunctionBackend(lambda r: "x"), policy=str(tmp_path / "selfref.yaml"))


def test_empty_query_is_a_user_error() -> None:
    with pytest.raises(UserError, match="non-empty query"):
        orch(make_pool(), FunctionBackend(lambda r: "x")).run("   ")


def test_tools_are_called_and_their_result_goes_back_to_the_model() -> None:
    seen: list[str] = []

    def add(a: int, b: int) -> int:
        seen.append(f"{a}+{b}")
        return a + b

    tool = ToolSpec(name="add", description="add two ints",
                    parameters={"type": "object", "properties": {"a": {"type": "integer"},
                                                                 "b": {"type": "integer"}}},
                    function=add)
    m = ModelSpec(name="m", id="test/m", input_price=1, output_price=1, max_output_tokens=32)
    pool = Pool(models=(m,), agents=(AgentSpec(name="calc", tools=(tool,)),),
                refiner=RefinerSpec(kind="vote"))

    def reply(req: CompletionRequest) -> Any:
        if req.messages[-1]["role"] == "tool":
            return f"The sum is {req.messages[-1]['content']}"
        assert req.tools and req.tools[0]["function"]["name"] == "add"
        return Completion(text="", input_tokens=5, output_tokens=3,
                          tool_calls=[{"id": "t1", "name": "add", "arguments": {"a": 2, "b": 3}}])

    be = FunctionBackend(reply)
    r = orch(pool, be, policy="cheapest").run("2+3?")
    assert r.answer == "The sum is 5" and seen == ["2+3"]
    assert len(be.calls) == 2
    finished = next(e for e in r.events if e.kind == "call_finished")
    assert finished.tool_calls[0]["result"] == "5"


async def test_astream_yields_live_events_in_order() -> None:
    pool = make_pool()
    o = orch(pool, FunctionBackend(lambda r: "x", latency_s=0.01), policy="cascade")
    kinds = [ev.kind async for ev in o.astream("q")]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.index("call_started") < kinds.index("call_finished") < kinds.index("refined")
    seqs = list(range(len(kinds)))
    o2 = [ev.seq async for ev in o.astream("q")]
    assert o2 == list(range(len(o2))) and len(seqs) > 5


async def test_arun_inside_a_running_loop_and_run_from_sync() -> None:
    o = orch(make_pool(), FunctionBackend(lambda r: "x"))
    r1 = await o.arun("q")
    r2 = o.run("q")  # called while this test's loop is running: uses a helper thread
    assert r1.answer == r2.answer == "x"


def test_chat_session_sends_history() -> None:
    be = FunctionBackend(lambda r: f"turn {len([m for m in r.messages if m['role'] == 'user'])}")
    s = orch(make_pool(), be, policy="cheapest").chat()
    s.send("hello")
    r = s.send("again")
    contents = [m["content"] for m in be.calls[-1].messages]
    assert "hello" in contents and r.answer is not None
    assert len(s.history) == 4 and s.spent_usd == pytest.approx(sum(x.cost_usd for x in s.results))


def test_run_result_json_shape() -> None:
    r = orch(make_pool(), FunctionBackend(lambda r: "x")).run("q")
    d = r.to_dict()
    assert set(d) >= {"answer", "cost_usd", "tokens", "calls", "rounds", "trace_id", "stop_reason",
                      "steps"}
    assert set(d["tokens"]) == {"input", "output"}
    call = d["steps"][0]["calls"][0]
    assert set(call) >= {"agent", "model", "cost_usd", "latency_s", "input_tokens", "output_tokens"}


def test_store_summary_matches_the_result() -> None:
    store = MemoryTraceStore()
    r = orch(make_pool(), FunctionBackend(lambda r: "x"), policy="ensemble", store=store).run("q")
    row = store.get_run(r.trace_id)
    assert row is not None
    assert row["status"] == "ok" and row["calls"] == r.calls
    assert row["cost_usd"] == pytest.approx(r.cost_usd) and row["answer"] == r.answer


@pytest.mark.parametrize("reply, sure", [
    ("SURE", True), ("Yes, that's right.", True), ("sure.", True), ("The answer is correct", True),
    ("UNSURE", False), ("Not sure", False), ("No, it is Lyon.", False), ("Pressure", False),
    ("Measure twice", False), ("incorrect", False), ("", False), ("SURERA", False),
])
def test_verdict_parsing_uses_whole_words(reply: str, sure: bool) -> None:
    from orchestra.policies.baselines import parse_verdict

    assert parse_verdict(reply) is sure


def test_cascade_does_not_verify_the_last_model() -> None:
    pool = make_pool(prices=[(0.1, 0.1), (1.0, 1.0)], names=["cheap", "strong"])

    def reply(req: CompletionRequest) -> str:
        return "UNSURE" if "SURE or UNSURE" in last_user_message(req) else f"from {req.model.name}"

    r = orch(pool, FunctionBackend(reply), policy="cascade", budget=Budget(rounds=3)).run("q")
    assert r.answer == "from strong" and r.stop_reason == "answered" and r.rounds == 3


def test_tool_follow_ups_count_as_calls_and_requests_are_not_mutated() -> None:
    def echo(x: str) -> str:
        return x

    tool = ToolSpec(name="echo", parameters={"type": "object", "properties": {"x": {"type": "string"}}},
                    function=echo)
    m = ModelSpec(name="m", id="test/m", input_price=1, output_price=1, max_output_tokens=32)
    pool = Pool(models=(m,), agents=(AgentSpec(name="a", tools=(tool,)),),
                refiner=RefinerSpec(kind="vote"))
    sizes: list[int] = []

    def reply(req: CompletionRequest) -> Any:
        sizes.append(len(req.messages))
        if req.messages[-1]["role"] == "tool":
            return "done"
        return Completion(text="", input_tokens=2, output_tokens=2,
                          tool_calls=[{"id": "1", "name": "echo", "arguments": {"x": "hi"}}])

    be = FunctionBackend(reply)
    store = MemoryTraceStore()
    r = orch(pool, be, policy="cheapest", store=store).run("q")
    assert [len(c.messages) for c in be.calls] == sizes == [2, 4]  # recorded as sent
    assert r.calls == 2 and store.get_run(r.trace_id)["calls"] == 2  # type: ignore[index]

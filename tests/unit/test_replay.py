"""Replay of recorded outcomes: the litellm ``replay`` provider and the fast ReplayBackend."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from orchestra.backends.replay import (
    NO_RESPONSE_MARKER,
    ReplayBackend,
    ReplayLookupError,
    pool_from_outcomes,
    register_replay_table,
    replay_call,
    replay_table,
    unregister_replay_table,
)
from orchestra.errors import BackendError, UserError
from orchestra.outcomes import ModelInfo, OutcomeTable, QueryRow
from orchestra.runtime import Orchestra
from orchestra.spec import Budget, Pool

# Three models, three queries. Costs and tokens are recorded; responses end in whitespace so
# that stripping is exercised.
MODELS = {"cheap": (1.0, 1.0), "mid": (2.0, 4.0), "strong": (10.0, 30.0)}
ANSWERS = {
    "q1": {"cheap": "A\n", "mid": "A", "strong": "A"},
    "q2": {"cheap": "B", "mid": "C\n", "strong": "C"},
    "q3": {"cheap": "D", "mid": "D", "strong": "B"},
}
GOLD = {"q1": "A", "q2": "C", "q3": "B"}
OUT_TOKENS = {"cheap": 3, "mid": 5, "strong": 40}


def _cost(model: str, n_in: int, n_out: int) -> float:
    pin, pout = MODELS[model]
    return (n_in * pin + n_out * pout) / 1e6


def make_table() -> OutcomeTable:
    rows = []
    queries = []
    for i, (qid, answers) in enumerate(ANSWERS.items()):
        text = f"Question {i + 1}?\nA) a\nB) b\nC) c\nD) d\nAnswer:"
        queries.append(QueryRow(query_id=qid, query=text, task="mc", gold=GOLD[qid],
                                choices=["a", "b", "c", "d"], split="test"))
        for m, resp in answers.items():
            n_in = 100 + 10 * i
            rows.append({
                "query_id": qid, "query": text, "task": "mc", "model": m,
                "score": float(resp.strip() == GOLD[qid]),
                "cost_usd": _cost(m, n_in, OUT_TOKENS[m]),
                "input_tokens": n_in, "output_tokens": OUT_TOKENS[m], "response": resp,
            })
    info = {m: ModelInfo(name=m, input_price=p[0], output_price=p[1], description=f"{m} model")
            for m, p in MODELS.items()}
    return OutcomeTable(rows, queries=queries, models_info=info, meta={"source": "unit"})


@pytest.fixture()
def table() -> OutcomeTable:
    return make_table()


@pytest.fixture()
def pool(table: OutcomeTable) -> Pool:
    return pool_from_outcomes(table, table_name="unit")


def _q(table: OutcomeTable, qid: str) -> str:
    return table.query_row(qid).query


def test_pool_from_outcomes(pool: Pool, table: OutcomeTable) -> None:
    assert [m.name for m in pool.models] == ["cheap", "mid", "strong"]
    strong = pool.model("strong")
    assert strong.id == "replay/unit/strong"
    assert (strong.input_price, strong.output_price) == (10.0, 30.0)
    assert strong.description == "strong model"
    assert strong.max_output_tokens == 40  # the largest recorded answer is never cut
    assert pool.refiner.kind == "vote"
    assert replay_table("unit") is table
    assert pool.agents[0].system_prompt == ""


def test_pool_options(table: OutcomeTable, tmp_path: Path) -> None:
    f = tmp_path / "models.json"
    f.write_text(json.dumps({"mid": {"input_price": 0.5, "output_price": 0.7,
                                     "feature": "a mid-size model"}}))
    p = pool_from_outcomes(table, models_file=f, models=["mid", "cheap"], table_name="unit",
                           quality={"mid": 0.9})
    assert [m.name for m in p.models] == ["mid", "cheap"]
    assert (p.model("mid").input_price, p.model("mid").description) == (0.5, "a mid-size model")
    assert p.model("mid").quality == 0.9 and p.model("cheap").quality is None
    # Priors from another table: its mean scores.
    p2 = pool_from_outcomes(table, quality=table, table_name="unit")
    assert p2.model("strong").quality == pytest.approx(1.0)
    assert p2.model("cheap").quality == pytest.approx(1 / 3)
    with pytest.raises(UserError, match="LLM refiner"):
        pool_from_outcomes(table, refiner="llm")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="unknown model"):
        pool_from_outcomes(table, models=["nope"])


def test_table_names_never_collide(table: OutcomeTable) -> None:
    other = make_table()
    a = pool_from_outcomes(table)
    b = pool_from_outcomes(other)
    c = pool_from_outcomes(table)
    ta, tb, tc = (p.models[0].id.split("/")[1] for p in (a, b, c))
    assert ta != tb and ta == tc
    assert replay_table(ta) is table and replay_table(tb) is other


@pytest.mark.parametrize("backend", ["fast", "litellm"])
def test_replays_recorded_response_tokens_and_cost(pool: Pool, table: OutcomeTable,
                                                   backend: str) -> None:
    be = ReplayBackend() if backend == "fast" else None
    orch = Orchestra(pool, policy="single:mid", backend=be, store=False)
    res = orch.run(_q(table, "q2"), meta={"query_id": "q2"})
    rec = table.lookup("q2", "mid")
    assert res.answer == "C"  # recorded "C\n", stripped
    assert res.cost_usd == rec.cost_usd  # exact, not tokens × price
    assert (res.input_tokens, res.output_tokens) == (rec.input_tokens, rec.output_tokens)
    assert res.calls == 1 and res.overruns == []
    # Without meta, the exact query text finds the query.
    res2 = orch.run(_q(table, "q3"))
    assert res2.answer == "D" and res2.cost_usd == table.lookup("q3", "mid").cost_usd


def test_ledger_reserves_exact_cost(pool: Pool, table: OutcomeTable) -> None:
    be = ReplayBackend()
    msgs = [{"role": "user", "content": _q(table, "q1")}]
    m = pool.model("strong")
    assert be.cost_bound(m, msgs, 40, {"query_id": "q1"}) == table.lookup("q1", "strong").cost_usd
    assert be.prompt_tokens_bound(m, msgs) == 100
    # A prompt that is not a query: a bound at least the model's largest recorded prompt.
    assert be.prompt_tokens_bound(m, [{"role": "user", "content": "hi"}]) >= 120


@pytest.mark.parametrize("backend", ["fast", "litellm"])
def test_unknown_query_or_model_is_an_error(pool: Pool, table: OutcomeTable,
                                            backend: str) -> None:
    be = ReplayBackend() if backend == "fast" else None
    orch = Orchestra(pool, policy="single:cheap", backend=be, store=False)
    res = orch.run("a question nobody recorded")
    assert res.answer is None
    err = res.steps[0]["calls"][0]["error"]
    assert "unknown query 'a question nobody recorded'" in err and res.cost_usd == 0
    res = orch.run("anything", meta={"query_id": "q9"})
    assert "unknown query 'q9'" in res.steps[0]["calls"][0]["error"]
    with pytest.raises(ReplayLookupError, match="unknown model 'nope'"):
        replay_call("replay/unit/nope", [], {"query_id": "q1"})
    with pytest.raises(ReplayLookupError, match="no table registered|cannot tell the table"):
        replay_call("replay/elsewhere/x", [], {"query_id": "q1"})


def test_fast_backend_wraps_errors(pool: Pool) -> None:
    from orchestra.backends.base import CompletionRequest

    req = CompletionRequest(model=pool.model("cheap"), messages=[{"role": "user", "content": "?"}],
                            max_tokens=10, meta={"query_id": "missing"})
    with pytest.raises(BackendError, match="unknown query 'missing'"):
        asyncio.run(ReplayBackend().complete(req))


def test_unrecorded_pair_and_default_table() -> None:
    rows = [
        {"query_id": "x", "query": "X?", "task": "t", "model": "a", "score": 1.0, "cost_usd": 0.1},
        {"query_id": "y", "query": "Y?", "task": "t", "model": "b", "score": 0.0, "cost_usd": 0.2,
         "response": "no"},
    ]
    t = OutcomeTable(rows)
    register_replay_table("dflt", t, default=True)
    try:
        # replay/<model> reads the default table; a pair without a recording is refused.
        out = replay_call("replay/b", [], {"query_id": "y"})
        assert (out.text, out.cost_usd, out.tokens_estimated) == ("no", 0.2, True)
        with pytest.raises(ReplayLookupError, match="no outcome recorded for model 'a' on query 'y'"):
            replay_call("replay/a", [], {"query_id": "y"})
        # No response recorded: a marker, never an invented answer.
        assert replay_call("replay/a", [], {"query_id": "x"}).text.startswith(NO_RESPONSE_MARKER)
    finally:
        unregister_replay_table("dflt")


def _signature(res):  # what must match between the two paths
    calls = [(e.round, e.model, e.output, e.input_tokens, e.output_tokens, e.cost_usd, e.error)
             for e in res.events if e.kind == "call_finished"]
    return (res.answer, res.stop_reason, res.cost_usd, res.input_tokens, res.output_tokens,
            res.calls, res.rounds, sorted(calls, key=repr))


@pytest.mark.parametrize("policy,params", [
    ("cheapest", None), ("strongest", None), ("single:mid", None),
    ("ensemble", {"k": 3}), ("ensemble", {"k": 2, "select": "cheapest", "layers": 2}),
])
def test_litellm_path_equals_fast_path(pool: Pool, table: OutcomeTable, policy: str,
                                       params: dict | None) -> None:
    fast = Orchestra(pool, policy=policy, policy_params=params, backend=ReplayBackend(),
                     store=False)
    slow = Orchestra(pool, policy=policy, policy_params=params, store=False)

    async def both() -> list[tuple]:
        out = []
        for qid in ANSWERS:
            a = await fast.arun(_q(table, qid), meta={"query_id": qid})
            b = await slow.arun(_q(table, qid), meta={"query_id": qid})
            out.append((_signature(a), _signature(b)))
        return out

    for a, b in asyncio.run(both()):
        assert a == b


@pytest.mark.parametrize("backend", ["fast", "litellm"])
def test_budgets_hold_over_replay(pool: Pool, table: OutcomeTable, backend: str) -> None:
    be = ReplayBackend() if backend == "fast" else None
    q = _q(table, "q3")
    cost = {m: table.lookup("q3", m).cost_usd for m in MODELS}
    # The strong model's recorded call does not fit: it is never sent.
    orch = Orchestra(pool, policy="single:strong", backend=be, store=False,
                     budget=Budget(usd=cost["strong"] * 0.99))
    res = orch.run(q, meta={"query_id": "q3"})
    assert res.calls == 0 and res.cost_usd == 0 and res.stop_reason == "budget:usd"
    # Exactly enough for cheap + mid: the ensemble's strong call is dropped, the others run.
    limit = cost["cheap"] + cost["mid"]
    orch = Orchestra(pool, policy="ensemble", policy_params={"k": 3}, backend=be, store=False,
                     budget=Budget(usd=limit))
    res = orch.run(q, meta={"query_id": "q3"})
    assert res.cost_usd == pytest.approx(limit) and res.cost_usd <= limit + 1e-12
    assert sorted(c["model"] for c in res.steps[0]["calls"]) == ["cheap", "mid"]
    dropped = next(e for e in res.events if e.kind == "policy_decided").dropped
    assert [(d["model"], d["limit"]) for d in dropped] == [("strong", "usd")]
    assert res.overruns == []
    # A call budget: two layers of two calls under calls=3 → the fourth call never runs.
    orch = Orchestra(pool, policy="ensemble", policy_params={"k": 2, "layers": 2}, backend=be,
                     store=False, budget=Budget(calls=3))
    res = orch.run(q, meta={"query_id": "q3"})
    assert res.calls == 3 and res.overruns == []


def test_recording_is_never_shortened(pool: Pool, table: OutcomeTable) -> None:
    # 120 prompt + 20 output tokens allowed: the strong model's 40-token answer cannot be
    # replayed shorter, so the call fails unbilled.
    orch = Orchestra(pool, policy="single:strong", backend=ReplayBackend(), store=False,
                     budget=Budget(tokens=140))
    res = orch.run(_q(table, "q3"), meta={"query_id": "q3"})
    assert res.answer is None and res.cost_usd == 0
    assert "cannot be shortened" in res.steps[0]["calls"][0]["error"]


@pytest.mark.parametrize("backend", ["fast", "litellm"])
def test_multi_round_ensemble_with_trace_events(pool: Pool, table: OutcomeTable,
                                                backend: str) -> None:
    be = ReplayBackend() if backend == "fast" else None
    orch = Orchestra(pool, policy="ensemble", policy_params={"k": 3, "layers": 2}, backend=be,
                     store=False)
    res = orch.run(_q(table, "q2"), meta={"query_id": "q2"})
    kinds = [e.kind for e in res.events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("call_started") == kinds.count("call_finished") == 6
    assert kinds.count("refined") == 2 and kinds.count("policy_decided") == 3
    assert res.rounds == 2 and res.calls == 6
    # Each layer replays the recorded answers and is charged again.
    one_layer = sum(table.lookup("q2", m).cost_usd for m in MODELS)
    assert res.cost_usd == pytest.approx(2 * one_layer)
    refined = [e for e in res.events if e.kind == "refined"]
    assert refined[0].votes == {"C": 2, "B": 1} and refined[0].refiner == "vote"
    assert res.answer == "C"
    # The second layer's prompt holds the first layer's answers; the replay still answers the
    # query's recording (found by meta query_id).
    second = [e for e in res.events if e.kind == "call_started" and e.round == 1]
    assert all("responses from other assistants" in e.messages[-1]["content"] for e in second)

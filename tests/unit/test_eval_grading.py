"""Grading a run's final answer from recorded outcomes, on typed trace events.

Three models on two queries, with scores chosen so that each rule gives a different number:

    query  kind             gold  a (score)   b (score)   c (score)
    mc     multiple choice  B     "B" (1.0)   "C" (0.0)   "B" (1.0)
    open   free text        —     "x" (0.2)   "y" (0.9)   "x" (0.6)
"""

from __future__ import annotations

from typing import Any

import pytest

from orchestra.errors import UserError
from orchestra.eval.grading import EvalQuery, Grader, grade_run
from orchestra.outcomes import ModelInfo, OutcomeTable, QueryRow
from orchestra.trace.events import CallFinished, Event, Refined, RunFinished

RESP = {"mc": {"a": "B", "b": "C", "c": "B"}, "open": {"a": "x", "b": "y", "c": "x"}}
SCORE = {"mc": {"a": 1.0, "b": 0.0, "c": 1.0}, "open": {"a": 0.2, "b": 0.9, "c": 0.6}}


def make_table(*, responses: bool = True) -> OutcomeTable:
    queries = [
        QueryRow(query_id="mc", query="pick one\nA) u\nB) v\nC) w\nAnswer:", task="t", gold="b ",
                 choices=["u", "v", "w"]),
        QueryRow(query_id="open", query="say something", task="t"),
    ]
    rows = [{"query_id": q.query_id, "query": q.query, "task": "t", "model": m,
             "score": SCORE[q.query_id][m], "cost_usd": 1.0, "input_tokens": 5,
             "output_tokens": 1, "response": RESP[q.query_id][m] if responses else None}
            for q in queries for m in ("a", "b", "c")]
    info = {m: ModelInfo(name=m, input_price=1.0, output_price=1.0) for m in ("a", "b", "c")}
    return OutcomeTable(rows, queries=queries, models_info=info)


def refined(output: str, *models: str, rnd: int = 0, qid: str = "open") -> Refined:
    inputs = [{"agent": "assistant", "model": m, "output": RESP[qid][m]} for m in models]
    return Refined(run_id="r", round=rnd, refiner="vote", inputs=inputs, output=output)


def finished_call(model: str, output: str, error: str | None = None) -> CallFinished:
    return CallFinished(run_id="r", round=0, call_id=f"c-{model}", agent="assistant", model=model,
                        model_id=f"replay/t/{model}", output=output, input_tokens=5,
                        output_tokens=1, cost_usd=1.0, latency_s=0.0, error=error)


@pytest.fixture()
def grader() -> Grader:
    return Grader(make_table())


def query(g: Grader, qid: str) -> EvalQuery:
    return next(q for q in g.queries if q.query_id == qid)


def test_queries_carry_the_gold_letter_only_on_multiple_choice(grader: Grader) -> None:
    assert [(q.qi, q.query_id, q.task, q.gold) for q in grader.queries] == [
        (0, "mc", "t", "B"), (1, "open", "t", None)]


def test_no_answer_scores_zero(grader: Grader) -> None:
    assert grader.grade(query(grader, "open"), None, [refined("x", "a")]) == (0.0, False)
    assert grader.grade(query(grader, "open"), "", []) == (0.0, False)


def test_one_answer_gets_the_recorded_score_of_its_model(grader: Grader) -> None:
    q = query(grader, "open")
    assert grader.grade(q, "y", [refined("y", "b")]) == (0.9, False)
    # The last round whose output is the answer counts: here c's, not a's.
    events: list[Event] = [refined("x", "a", rnd=0), refined("x", "c", rnd=1)]
    assert grader.grade(q, "x", events) == (0.6, False)


def test_a_vote_is_graded_by_letter_on_multiple_choice_else_by_the_winners(
        grader: Grader) -> None:
    mc, open_q = query(grader, "mc"), query(grader, "open")
    assert grader.grade(mc, "B", [refined("B", "a", "b", qid="mc")]) == (1.0, True)
    assert grader.grade(mc, "C", [refined("C", "b", "a", qid="mc")]) == (0.0, True)
    # Two models said the winning "x": the mean of their scores, (0.2 + 0.6) / 2.
    score, aggregated = grader.grade(open_q, "x", [refined("x", "a", "b", "c")])
    assert aggregated and score == pytest.approx(0.4)


def test_an_answer_no_round_produced(grader: Grader) -> None:
    # Multiple choice: the letter in the policy's own text against the gold letter.
    mc = query(grader, "mc")
    assert grader.grade(mc, "I would say (B)", [refined("C", "b", qid="mc")]) == (1.0, False)
    assert grader.grade(mc, "surely C", []) == (0.0, False)
    # Free text: the calls that returned that very text; failed calls and other kinds of events
    # with the same text do not count.
    open_q = query(grader, "open")
    events: list[Event] = [
        finished_call("b", "y"), finished_call("c", "y", error="timeout"),
        RunFinished(run_id="r", answer="y", stop_reason="answered", status="ok", cost_usd=1.0,
                    input_tokens=5, output_tokens=1, calls=1, rounds=1, duration_s=0.0),
    ]
    assert grader.grade(open_q, "y", events) == (0.9, False)
    with pytest.raises(UserError, match="neither a round's output nor a graded letter"):
        grader.grade(open_q, "something else", events)


def test_the_call_the_run_names_is_credited(grader: Grader) -> None:
    q = query(grader, "open")
    # a and c both said "x"; string matching would credit the later round (c, 0.6): the run
    # says the answer came from a's call, so a's recorded score (0.2) counts.
    events: list[Event] = [finished_call("a", "x"), refined("x", "a", rnd=0),
                           refined("x", "c", rnd=1)]
    assert grader.grade(q, "x", events, answer_from="c-a") == (0.2, False)
    assert grader.grade(q, "x", events) == (0.6, False)
    # A named call whose output is not the answer, a failed one or an unknown id: the rules
    # without provenance apply.
    assert grader.grade(q, "x", [finished_call("b", "y"), refined("x", "c")],
                        answer_from="c-b") == (0.6, False)
    assert grader.grade(q, "x", [finished_call("a", "x", error="boom"), refined("x", "c")],
                        answer_from="c-a") == (0.6, False)
    assert grader.grade(q, "x", [refined("x", "c")], answer_from="nope") == (0.6, False)
    # A call a vote over several outputs chose is graded by the vote's rule.
    voted: list[Event] = [finished_call("a", "x"), refined("x", "a", "b", "c")]
    assert grader.grade(q, "x", voted, answer_from="c-a") == (pytest.approx(0.4), True)


def test_a_vote_over_recordings_without_text_cannot_be_graded() -> None:
    g = Grader(make_table(responses=False))
    with pytest.raises(UserError, match=r"recorded without a response \(\['a', 'b'\]\)"):
        g.grade(query(g, "open"), "x", [refined("x", "a", "b")])
    # One answer needs no response text: its recorded score.
    assert g.grade(query(g, "open"), "x", [refined("x", "c")]) == (0.6, False)


def test_grade_run_on_a_real_run() -> None:
    from orchestra.backends.replay import ReplayBackend, pool_from_outcomes
    from orchestra.policies.resolve import resolve_policy
    from orchestra.runtime import Orchestra

    table = make_table()
    pool = pool_from_outcomes(table)
    orch = Orchestra(pool, policy="single:b", backend=ReplayBackend(), store=False)
    meta: dict[str, Any] = {"query_id": "open", "task": "t"}
    res = orch.run("say something", meta=meta)
    assert res.answer == "y" and (res.answer_call() or {}).get("model") == "b"
    assert grade_run(table, "open", res) == 0.9
    ens = Orchestra(pool, policy=resolve_policy("ensemble", pool, {"k": 3}),
                    backend=ReplayBackend(), store=False)
    res = ens.run(table.query_rows[0].query, meta={"query_id": "mc", "task": "t"})
    # The vote of B, C, B is B: the gold letter.
    assert res.answer == "B" and grade_run(table, "mc", res) == 1.0

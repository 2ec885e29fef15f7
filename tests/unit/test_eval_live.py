"""Live evaluation (orchestra.eval.live): policies run on a pool against gold answers, with the
references recorded first, a hard total budget, and a journal that makes it resumable.

The models are in-process test backends (:class:`orchestra.testing.FunctionBackend`) whose
token counts match their usage, so costs are exact and every call is counted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.backends.base import CompletionRequest
from orchestra.errors import UserError
from orchestra.eval.harness import aevaluate
from orchestra.eval.live import aevaluate_live
from orchestra.outcomes.loaders import load_outcomes
from orchestra.record.recorder import arecord, record
from orchestra.record.sets import LabelledItem, items_from_table, looks_like_outcomes
from orchestra.spec import Budget, Pool
from orchestra.testing import FunctionBackend, last_user_message, make_pool

ITEMS = [
    LabelledItem(id="q1", question="What is the capital of France ?", gold=("Paris",),
                 task="geo"),
    LabelledItem(id="q2", question="How many legs has a spider ?", gold=("8",), task="math",
                 grader="number"),
    LabelledItem(id="q3", question="Who wrote the play Hamlet ?",
                 gold=("Shakespeare", "William Shakespeare"), task="geo"),
    LabelledItem(id="q4", question="What is 6 times 7 ?", gold=("42",), task="math",
                 grader="number"),
]
# m0 (cheap) knows geography only; m1 (pricey) knows arithmetic only.
ANSWERS = {
    "m0": {"q1": "Paris", "q2": "maybe 6", "q3": "William Shakespeare", "q4": "I cannot count"},
    "m1": {"q1": "Lyon", "q2": "A spider has 8 legs", "q3": "Marlowe", "q4": "6*7 = 42"},
}


def _pool() -> Pool:
    return make_pool([(1.0, 2.0), (10.0, 30.0)], names=["m0", "m1"], max_output_tokens=16)


def _answer(req: CompletionRequest) -> str:
    q = last_user_message(req)
    qid = next(it.id for it in ITEMS if it.prompt in q)
    return ANSWERS[req.model.name][qid]


def _items_file(tmp_path: Path) -> Path:
    import json

    p = tmp_path / "qs.jsonl"
    # A number as the gold answer: graded by number (the others by exact match).
    p.write_text("".join(json.dumps({
        "id": it.id, "question": it.question, "task": it.task,
        "answer": int(it.gold[0]) if it.grader == "number" else list(it.gold)}) + "\n"
        for it in ITEMS), encoding="utf-8")
    return p


def _points(report: object) -> dict[str, list[tuple[float, float]]]:
    return {r.spec: [(round(p.mean_score, 9), round(p.total_cost, 12)) for p in r.points]
            for r in report.policies}  # type: ignore[attr-defined]


async def test_live_grades_against_gold_and_agrees_with_replaying_its_recording(
        tmp_path: Path) -> None:
    backend = FunctionBackend(_answer)
    policies = ["cheapest", "strongest", "single:m1"]
    report = await aevaluate_live(_pool(), [_items_file(tmp_path)], policies,
                                  work=tmp_path / "w", backend=backend)
    assert not report.failed
    scores = {r.spec: r.points[0].mean_score for r in report.policies}
    # Graded against the gold answers: m0 gets the two geography questions, m1 the two sums.
    assert scores == {"cheapest": 0.5, "strongest": 0.5, "single:m1": 0.5}
    assert report.singles["m0"].quality == 0.5 and report.singles["m1"].quality == 0.5
    live = report.settings["live"]
    assert live["references_recorded_now"] == 8 and live["runs_made"] == 12
    assert live["spent_usd"] == pytest.approx(live["references_usd"] + live["runs_usd"])
    assert "live pool" in report.settings["runtime"]
    # The references are an ordinary outcome table: replaying it gives the same points.
    table = load_outcomes(tmp_path / "w" / "singles.jsonl")
    replayed = await aevaluate(table, policies, apgr=False)
    assert _points(replayed) == _points(report)


async def test_a_vote_is_graded_on_the_voted_text(tmp_path: Path) -> None:
    report = await aevaluate_live(_pool(), [_items_file(tmp_path)], ["ensemble,k=2"],
                                  work=tmp_path / "w", backend=FunctionBackend(_answer))
    (res,) = report.policies
    assert res.error is None and res.points[0].aggregated == 4
    assert 0.0 <= res.points[0].mean_score <= 1.0
    assert res.points[0].calls_per_query >= 2


async def test_resume_reuses_every_recorded_answer_and_run(tmp_path: Path) -> None:
    data = [_items_file(tmp_path)]
    first = await aevaluate_live(_pool(), data, ["cheapest", "single:m1"], work=tmp_path / "w",
                                 backend=FunctionBackend(_answer))
    with pytest.raises(UserError, match="--resume"):
        await aevaluate_live(_pool(), data, ["cheapest"], work=tmp_path / "w",
                             backend=FunctionBackend(_answer))
    again = FunctionBackend(_answer)
    second = await aevaluate_live(_pool(), data, ["cheapest", "single:m1"],
                                  work=tmp_path / "w", backend=again, resume=True)
    assert again.calls == []  # nothing paid twice
    assert second.settings["live"]["runs_reused"] == 8
    assert _points(second) == _points(first)


async def test_the_total_budget_holds_and_a_resume_with_more_finishes(tmp_path: Path) -> None:
    data = [_items_file(tmp_path)]
    pool = _pool()
    with pytest.raises(UserError, match="--budget-usd"):
        await aevaluate_live(pool, data, ["cheapest"], work=tmp_path / "x", total_usd=1.0)
    # Each run reserves its limit (above a call's worst case); the total leaves room for the
    # references and exactly two runs of `strongest` (m1): the third reservation does not fit.
    per_run = 0.002
    refs = await aevaluate_live(pool, data, [], work=tmp_path / "probe",
                                backend=FunctionBackend(_answer))
    ref_cost = refs.settings["live"]["references_usd"]
    probe = load_outcomes(tmp_path / "probe" / "singles.jsonl")
    c = probe.cost_matrix()[:, probe.models.index("m1")]
    total = ref_cost + c[0] + c[1] + per_run * 0.999
    b1 = FunctionBackend(_answer)
    report = await aevaluate_live(pool, data, ["strongest"], work=tmp_path / "w",
                                  backend=b1, total_usd=total, budget=Budget(usd=per_run),
                                  concurrency=1)
    (res,) = report.policies
    assert res.error is not None and "--total-usd" in res.error and "--resume" in res.error
    live = report.settings["live"]
    assert live["spent_usd"] <= total
    assert live["runs_made"] == 2  # the third run's reservation did not fit
    b2 = FunctionBackend(_answer)
    done = await aevaluate_live(pool, data, ["strongest"], work=tmp_path / "w", backend=b2,
                                total_usd=ref_cost + 10 * per_run, budget=Budget(usd=per_run),
                                concurrency=1, resume=True)
    assert done.policies[0].error is None
    assert len(b2.calls) == 2  # only the two runs not made before
    assert done.settings["live"]["runs_reused"] == 2


def test_a_recorded_table_gives_back_its_questions_and_gold_answers(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    record(_pool(), ITEMS, out, backend=FunctionBackend(_answer))
    assert looks_like_outcomes(out) and not looks_like_outcomes(_items_file(tmp_path))
    items = {it.id: it for it in items_from_table(load_outcomes(out))}
    assert items["q3"].gold == ("Shakespeare", "William Shakespeare")
    assert items["q2"].grader == "number" and items["q1"].grader == "em"
    assert items["q4"].prompt == ITEMS[3].prompt


async def test_live_on_a_recorded_test_table_runs_its_questions(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    await arecord(_pool(), ITEMS, out, backend=FunctionBackend(_answer))
    report = await aevaluate_live(_pool(), [out], ["cheapest"], work=tmp_path / "w",
                                  backend=FunctionBackend(_answer), limit=2, seed=1)
    assert report.data["n_queries"] == 2
    assert report.policies[0].error is None

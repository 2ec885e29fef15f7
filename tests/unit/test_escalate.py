"""The answer-aware cascade (``escalate``) on a synthetic multiple-choice table.

Two cheap models A and B are right 65% of the time, wrong independently (a random wrong
letter); the expensive C is right 97% of the time. So when A and B agree they are almost
surely right, and when they disagree one of them is wrong: the learned policy should answer
on agreement and escalate to C on disagreement, at a moderate λ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestra import Orchestra, UserError
from orchestra.budget import BudgetLeft
from orchestra.outcomes import OutcomeTable
from orchestra.policies.base import Answer, CallView, RoundView, Route, RunView
from orchestra.policies.escalate.artifact import load_escalator, save_escalator
from orchestra.policies.escalate.cascade import Escalator, simulate
from orchestra.policies.escalate.features import (
    agreement,
    answer_info,
    query_info,
    scorer_features,
)
from orchestra.policies.resolve import policy_names, resolve_policy
from orchestra.testing import FunctionBackend, make_pool
from orchestra.training.escalate_fit import prepare_escalate_data, train_escalate

LETTERS = "ABCD"
COST = {"A": 0.001, "B": 0.0012, "C": 0.02}
ACC = {"A": 0.65, "B": 0.65, "C": 0.97}


def mc_query(i: int) -> str:
    return (f"Question {i}: which option is right?\nA) red {i}\nB) green\nC) blue\nD) black\n"
            "Answer:")


def synthetic(n: int = 240, seed: int = 0, responses: bool = True) -> OutcomeTable:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        gold = LETTERS[int(rng.integers(4))]
        for m in ("A", "B", "C"):
            right = bool(rng.random() < ACC[m])
            letter = gold if right else rng.choice([x for x in LETTERS if x != gold])
            row = {"query_id": f"q{i}", "query": mc_query(i), "task": "mc", "model": m,
                   "score": float(right), "cost_usd": COST[m] * float(rng.uniform(0.9, 1.1))}
            if responses:
                row["response"] = f"{letter}\n" if m == "A" else str(letter)
            rows.append(row)
    return OutcomeTable(rows)


@pytest.fixture(scope="module")
def esc() -> Escalator:
    data = prepare_escalate_data(synthetic(), source="synthetic")
    return train_escalate(data, params={"hidden": 0, "lookahead": True}, folds=2, pairs=3, triples=1, seed=0,
                          lambdas=(0.0, 0.1, 0.3, 1.0, 3.0, 10.0))


def left(usd: float | None = None, rounds: int | None = None) -> BudgetLeft:
    return BudgetLeft(usd=usd, tokens=None, calls=None, rounds=rounds, seconds=None,
                      spent_usd=0.0, spent_tokens=0, spent_calls=0, rounds_done=0)


def run_view(query: str, answers: list[tuple[str, str]], usd: float | None = None,
             rounds: int | None = None) -> RunView:
    pool = make_pool(((1.0, 1.0), (1.2, 1.2), (20.0, 20.0)), names=["A", "B", "C"])
    rv = tuple(RoundView(index=i, answer=text, refiner="vote", calls=(
        CallView(agent="assistant", model=m, prompt=query, output=text, cost_usd=COST[m],
                 input_tokens=10, output_tokens=1, latency_s=0.0, call_id=f"c{i}", round=i),))
        for i, (m, text) in enumerate(answers))
    return RunView(query=query, history=(), rounds=rv, notes=(), budget_left=left(usd, rounds),
                   pool=pool, round=len(rv), meta={"task": "mc"})


def policy(esc: Escalator, lam: float, **params: Any) -> Any:
    pool = make_pool(((1.0, 1.0), (1.2, 1.2), (20.0, 20.0)), names=["A", "B", "C"])
    return resolve_policy("escalate", pool, {"lam": lam, **params, "escalator": esc})


# ------------------------------------------------------------------------------ features
def test_answer_features_read_choice_letters_and_agreement() -> None:
    q = query_info(mc_query(1), "mc", ["mc"])
    assert q.choices == ("red 1", "green", "blue", "black") and q.task == 0
    a, b = answer_info("B\n", q), answer_info("The answer is (B)", q)
    c, none = answer_info("green", q), answer_info("I am not sure", q)
    assert a.key == b.key == c.key == "choice:B" and a.bare and not b.bare
    assert none.key is None and not none.parsed
    assert agreement(a, b) == 1.0 and agreement(a, answer_info("C", q)) == 0.0
    assert agreement(a, none) == 0.0
    # Free text: word overlap.
    t = query_info("Write a function adding two numbers.", None, ["mc"])
    assert t.task == -1 and t.choices is None
    x = answer_info("def add(a, b): return a + b", t)
    y = answer_info("def add(x, y): return x + y", t)
    assert 0.0 < agreement(x, y) < 1.0


def test_scorer_features_see_only_the_answers_of_the_state() -> None:
    q = query_info(mc_query(1), "mc", ["mc"])
    infos = [answer_info(s, q) for s in ("B", "B", "C")]
    from orchestra.policies.escalate.features import agreement_matrix, answer_array

    agree, feats = agreement_matrix(infos), answer_array(infos)
    prior = np.array([0.6, 0.6, 0.9])
    masks = np.array([[True, True, False], [True, False, True], [True, False, False]])
    x, idx = scorer_features(q, prior, feats, agree, masks, 1)
    assert idx.tolist() == [[0, 0], [0, 1], [1, 0], [1, 2], [2, 0]]
    alone = x[4]
    # The lone answer's agreement block is all zeros; the others see their partner.
    x2, _ = scorer_features(q, prior, feats, np.ones((3, 3)), masks[2:], 1)
    assert np.array_equal(x2[0], alone)
    assert not np.array_equal(x[0], x[2])  # agrees with B vs disagrees with C


# ------------------------------------------------------------------------------ scorer
def test_scorer_trusts_agreement_and_is_calibrated(esc: Escalator) -> None:
    test = prepare_escalate_data(synthetic(300, seed=7))
    a, b = esc.models.index("A"), esc.models.index("B")
    mask = np.zeros(3, dtype=bool)
    mask[[a, b]] = True
    p_agree: list[float] = []
    p_dis: list[float] = []
    y_agree: list[float] = []
    y_dis: list[float] = []
    for qi, qa in enumerate(test.queries):
        p, _ = esc.state_scores(qa, mask[None, :])
        same = qa.agree[a, b] == 1.0
        (p_agree if same else p_dis).append(p[0, a])
        (y_agree if same else y_dis).append(test.scores[qi, a])
    assert np.mean(p_agree) > np.mean(p_dis) + 0.3
    # Calibrated: mean predicted P(correct) within 0.1 of the observed rate in each group.
    assert abs(np.mean(p_agree) - np.mean(y_agree)) < 0.1
    assert abs(np.mean(p_dis) - np.mean(y_dis)) < 0.1


# ------------------------------------------------------------------------------ decisions
def test_decision_answers_on_agreement_and_escalates_on_disagreement(esc: Escalator) -> None:
    pol = policy(esc, 0.3)
    q = mc_query(5)
    first = pol.decide(run_view(q, []))
    assert isinstance(first, Route) and first.calls[0].model in ("A", "B")
    cheap = first.calls[0].model
    other = "B" if cheap == "A" else "A"
    second = pol.decide(run_view(q, [(cheap, "B")]))
    assert isinstance(second, Route) and second.calls[0].model == other
    agree = pol.decide(run_view(q, [(cheap, "B"), (other, "B")]))
    assert isinstance(agree, Answer) and agree.from_call in ("c0", "c1") and agree.text == "B"
    assert agree.scores["p_best"] > 0.8 and agree.scores["lam"] == 0.3
    disagree = pol.decide(run_view(q, [(cheap, "B"), (other, "C")]))
    assert isinstance(disagree, Route) and disagree.calls[0].model == "C"
    gain = disagree.scores["candidates"]["C"]["gain"]
    assert gain > 0.3 * COST["C"] / esc.cost_scale
    final = pol.decide(run_view(q, [(cheap, "B"), (other, "C"), ("C", "C")]))
    assert isinstance(final, Answer) and final.text == "C" and final.from_call in ("c1", "c2")


def test_lambda_trades_quality_for_cost(esc: Escalator) -> None:
    test = prepare_escalate_data(synthetic(200, seed=3))
    res = simulate(esc, test.queries, test.scores, test.costs, [0.0, 0.3, 100.0])
    costs = [r["total_cost"] for r in res]
    assert costs[0] >= costs[1] >= costs[2]
    assert res[2]["calls_per_query"] == 1.0  # λ huge: one cheap call
    c = np.nan_to_num(test.scores)[:, esc.models.index("C")].mean()
    assert res[1]["mean_score"] > 0.9 * c and costs[1] < 0.8 * np.nansum(test.costs[:, 2])


def test_budget_is_respected(esc: Escalator) -> None:
    pol = policy(esc, 0.0)
    q = mc_query(9)
    # Disagreement, but C's cautious cost does not fit the USD left: answer instead.
    high_c = esc.costs(esc.query(q, "mc"))[1][esc.models.index("C")]
    d = pol.decide(run_view(q, [("A", "B"), ("B", "C")], usd=high_c * 0.5))
    assert isinstance(d, Answer)
    assert d.scores["why"] == "no candidate fits the budget left"
    # With one round left a call could not be answered from: answer now.
    d = pol.decide(run_view(q, [("A", "B")], rounds=1))
    assert isinstance(d, Answer) and d.from_call == "c0"
    # max_calls caps the calls.
    d = policy(esc, 0.0, max_calls=1).decide(run_view(q, [("A", "B")]))
    assert isinstance(d, Answer)


def test_runs_through_the_runtime(esc: Escalator) -> None:
    answers = {"A": "B", "B": "C", "C": "C"}  # A and B disagree: C settles it
    be = FunctionBackend(lambda req: answers[req.model.name])
    pool = make_pool(((1.0, 1.0), (1.2, 1.2), (20.0, 20.0)), names=["A", "B", "C"])
    pol = resolve_policy("escalate", pool, {"lam": 0.3, "escalator": esc})
    res = Orchestra(pool, policy=pol, backend=be, store=False).run(
        mc_query(3), meta={"task": "mc"})
    models = [c["model"] for s in res.steps for c in s["calls"]]
    assert models[-1] == "C" and len(models) == 3 and res.answer == "C"


# ------------------------------------------------------------------------------ artifact
def test_save_load_round_trip(esc: Escalator, tmp_path: Path) -> None:
    path = save_escalator(esc, tmp_path / "synthetic-escalate")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["kind"] == "escalate" and cfg["models"] == ["A", "B", "C"]
    loaded = load_escalator(path)
    test = prepare_escalate_data(synthetic(60, seed=5))
    a = simulate(esc, test.queries, test.scores, test.costs, [0.3])[0]
    b = simulate(loaded, test.queries, test.scores, test.costs, [0.3])[0]
    assert np.array_equal(a["picked"], b["picked"]) and a["total_cost"] == b["total_cost"]
    pol: Any = resolve_policy("escalate", make_pool(names=["A", "B", "C"]), {"path": str(path)})
    assert pol.default_lambdas() == cfg["lambdas"] and pol.lam == cfg["default_lam"]


# ------------------------------------------------------------------------------ bad input
def test_bad_input_errors(esc: Escalator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                          ) -> None:
    assert "escalate" in policy_names()
    with pytest.raises(UserError, match="lam must be >= 0"):
        policy(esc, -1.0)
    with pytest.raises(UserError, match="max_calls must be an integer >= 1"):
        policy(esc, 0.1, max_calls=0)
    with pytest.raises(UserError, match="knows none of the models"):
        resolve_policy("escalate", make_pool(names=["x", "y", "z"]), {"escalator": esc})
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    with pytest.raises(UserError, match="orchestra train escalate"):
        resolve_policy("escalate", make_pool(names=["A", "B", "C"]),
                       {"path": "nowhere-escalate"})
    with pytest.raises(UserError, match="needs recorded responses"):
        prepare_escalate_data(synthetic(20, responses=False), source="scores-only")
    data = prepare_escalate_data(synthetic(20))
    with pytest.raises(UserError, match="folds"):
        train_escalate(data, folds=1)
    with pytest.raises(UserError, match="unknown escalate hyperparameter"):
        train_escalate(data, params={"depth": 3}, folds=2)

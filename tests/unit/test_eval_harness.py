"""The evaluation harness on a small table whose results are known by hand.

Three models (recorded cost per query: cheap 1, mid 2, strong 10 USD) on four multiple-choice
queries:

    query  gold  cheap  mid  strong     scores (cheap, mid, strong)
    q1     A     A      A    A          1 1 1
    q2     C     B      C    C          0 1 1
    q3     B     D      D    B          0 0 1
    q4     D     A      B    C          0 0 0

Single models: cheap (4, 0.25), mid (8, 0.5), strong (40, 0.75); max cost 40.
Oracle: q1 cheap, q2 mid, q3 strong, q4 cheap (all 0; cheapest) → (14, 0.75).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from orchestra.errors import UserError
from orchestra.eval.data import load_eval_data
from orchestra.eval.harness import evaluate
from orchestra.eval.specs import DEFAULT_LAMBDAS, PolicySpec, parse_lambdas
from orchestra.outcomes import ModelInfo, OutcomeTable, QueryRow
from orchestra.policies.base import Answer, Call, Route, RunView
from orchestra.policies.registry import register_policy
from orchestra.spec import Pool

COST = {"cheap": 1.0, "mid": 2.0, "strong": 10.0}
GOLD = {"q1": "A", "q2": "C", "q3": "B", "q4": "D"}
ANS = {
    "q1": {"cheap": "A", "mid": "A", "strong": "A"},
    "q2": {"cheap": "B", "mid": "C", "strong": "C"},
    "q3": {"cheap": "D", "mid": "D", "strong": "B"},
    "q4": {"cheap": "A", "mid": "B", "strong": "C"},
}


def make_table(*, responses: bool = True, estimated: bool = False) -> OutcomeTable:
    rows, queries = [], []
    for qid, answers in ANS.items():
        text = f"{qid}: pick one\nA) w\nB) x\nC) y\nD) z\nAnswer:"
        queries.append(QueryRow(query_id=qid, query=text, task="mc" if qid != "q4" else "mc2",
                                gold=GOLD[qid], choices=["w", "x", "y", "z"], split="test"))
        for m, a in answers.items():
            rows.append({"query_id": qid, "query": text, "task": "mc" if qid != "q4" else "mc2",
                         "model": m, "score": float(a == GOLD[qid]), "cost_usd": COST[m],
                         "input_tokens": 50, "output_tokens": 1,
                         "response": a if responses else None, "cost_estimated": estimated})
    info = {m: ModelInfo(name=m, input_price=c, output_price=c) for m, c in COST.items()}
    meta = {"source": "synthetic"}
    if estimated:
        meta["cost_note"] = "estimated from made-up token counts"
    return OutcomeTable(rows, queries=queries, models_info=info, meta=meta)


class LamPolicy:
    """argmax (quality prior − λ·cost) over fixed per-model numbers; sweeps λ."""

    QUALITY: ClassVar[dict[str, float]] = {"cheap": 0.25, "mid": 0.5, "strong": 0.75}

    def __init__(self, pool: Pool, lam: float = 0.0) -> None:
        self.lam = float(lam)
        self.models = [m.name for m in pool.models]
        self.name = f"lam-test(lam={self.lam:g})"

    def default_lambdas(self) -> list[float]:
        return [0.0, 0.05, 1.0]

    def decide(self, view: RunView) -> Any:
        if view.rounds:
            return Answer()
        best = max(self.models, key=lambda m: self.QUALITY[m] - self.lam * COST[m])
        return Route([Call(model=best)])


class PickPolicy:
    """Routes each query to a fixed model (by meta query_id); ``strong`` only on q3."""

    name = "pick-test"
    CHOICE: ClassVar[dict[str, str]] = {"q1": "cheap", "q2": "mid", "q3": "strong", "q4": "cheap"}

    def __init__(self, pool: Pool) -> None:
        self.names = {m.name for m in pool.models}

    def decide(self, view: RunView) -> Any:
        if view.rounds:
            return Answer()
        m = self.CHOICE[view.meta["query_id"]]
        return Route([Call(model=m if m in self.names else "cheap")])


class LearnsPolicy:
    """Routes to cheap until told a score, then to the model whose last score was best."""

    name = "learns-test"
    SEEN: ClassVar[list[tuple[str, float | None]]] = []

    def __init__(self, pool: Pool) -> None:
        self.best: dict[str, float] = {}

    def decide(self, view: RunView) -> Any:
        if view.rounds:
            return Answer()
        return Route([Call(model="cheap")], scores={"arm": "cheap"})

    def observe(self, feedback: Any) -> None:
        LearnsPolicy.SEEN.append((feedback.meta["query_id"], feedback.score))


register_policy("lam-test", LamPolicy, doc="test: argmax quality − λ·cost")
register_policy("learns-test", LearnsPolicy, doc="test: online, observes feedback")
register_policy("pick-test", PickPolicy, doc="test: per-query fixed choice")


@pytest.fixture()
def table() -> OutcomeTable:
    return make_table()


def test_policy_spec_and_lambdas() -> None:
    s = PolicySpec.parse("ensemble,k=3,select=cheapest")
    assert (s.name, dict(s.params)) == ("ensemble", {"k": 3, "select": "cheapest"})
    assert PolicySpec.parse("single:meta/llama-2").name == "single:meta/llama-2"
    with pytest.raises(UserError, match="key=value"):
        PolicySpec.parse("ensemble,k")
    assert parse_lambdas("auto") == "auto"
    assert parse_lambdas("0, 0.5,2") == [0.0, 0.5, 2.0]
    with pytest.raises(UserError, match="λ >= 0"):
        parse_lambdas("-1")


def test_references_by_hand(table: OutcomeTable) -> None:
    r = evaluate(table, [], apgr=False)
    ref = r.references
    assert (ref["oracle"].cost, ref["oracle"].quality) == (14.0, 0.75)
    assert (ref["best_single"].label, ref["best_single"].cost) == ("best single: strong", 40.0)
    assert (ref["cheapest_single"].label, ref["cheapest_single"].quality) == (
        "cheapest single: cheap", 0.25)
    assert ref["random"].quality == pytest.approx(0.5)
    assert ref["random"].cost == pytest.approx(52 / 3)
    assert (r.max_cost, r.max_cost_model) == (40.0, "strong")
    # AIQ of one point (c, q): q · (1 − c / max_cost).
    assert r.singles["cheap"].aiq == pytest.approx(0.25 * 0.9)
    assert r.singles["mid"].aiq == pytest.approx(0.5 * 0.8)
    assert r.singles["strong"].aiq == 0.0
    assert ref["oracle"].aiq == pytest.approx(0.75 * (1 - 14 / 40))
    # Hull (0.1, .25) → (0.2, .5) → (1, .75): 0.1·0.375 + 0.8·0.625.
    assert r.single_hull_aiq == pytest.approx(0.5375)
    assert r.single_hull == [(4.0, 0.25), (8.0, 0.5), (40.0, 0.75)]


def test_baselines_and_ensembles_graded_by_hand(table: OutcomeTable) -> None:
    r = evaluate(table, ["cheapest", "strongest", "ensemble,k=3", "ensemble,k=2,select=cheapest"],
                 apgr=False)
    by = {p.spec: p for p in r.policies}
    cheapest = by["cheapest"].points[0]
    assert (cheapest.total_cost, cheapest.mean_score, cheapest.calls_per_query) == (4.0, 0.25, 1.0)
    assert cheapest.delta_vs_hull == pytest.approx(0.0)  # it is a hull vertex
    assert by["cheapest"].aiq == pytest.approx(0.225)
    assert by["cheapest"].cost_to_match is None  # never reaches strong's 0.75
    strongest = by["strongest"].points[0]
    assert (strongest.total_cost, strongest.mean_score) == (40.0, 0.75)
    assert by["strongest"].cost_to_match == pytest.approx(1.0)
    # Vote of all three: q1 A ✓, q2 C ✓, q3 D ✗, q4 three-way tie → the strongest model's
    # output first (strength order, no priors) = C ✗ → 0.5, at 13 USD a query.
    e3 = by["ensemble,k=3"].points[0]
    assert (e3.total_cost, e3.mean_score, e3.calls_per_query, e3.aggregated) == (52.0, 0.5, 3.0, 4)
    assert e3.delta_vs_hull == pytest.approx(0.5 - 0.75)  # right of the hull: flat at 0.75
    # cheap + mid: q1 A ✓, q2 B/C tie → cheap's B (first) ✗, q3 D ✗, q4 A ✗ → 0.25 at 12.
    e2 = by["ensemble,k=2,select=cheapest"].points[0]
    assert (e2.total_cost, e2.mean_score) == (12.0, 0.25)
    assert e2.hull_quality == pytest.approx(0.5 + 4 / 32 * 0.25)
    assert e2.per_task == {"mc": {"n": 3, "mean_score": pytest.approx(1 / 3), "cost": 9.0},
                           "mc2": {"n": 1, "mean_score": 0.0, "cost": 3.0}}
    # Routing shares: every query called both models of the pair, the cheapest only one.
    assert set(e2.model_calls.values()) == {4} and len(e2.model_calls) == 2
    assert sum(e2.model_calls.values()) == e2.calls_per_query * e2.n
    assert cheapest.model_calls == {"cheap": 4} and cheapest.model_share("cheap") == 1.0
    assert cheapest.model_share("strong") == 0.0


def test_a_policy_with_observe_learns_from_each_graded_answer(table: OutcomeTable) -> None:
    LearnsPolicy.SEEN.clear()
    r = evaluate(table, ["learns-test", "cheapest"], apgr=False)
    by = {p.spec: p for p in r.policies}
    point = by["learns-test"].points[0]
    assert point.online and not by["cheapest"].points[0].online
    # Every query's graded score went back as feedback: cheap is right on q1 only.
    assert sorted(LearnsPolicy.SEEN) == [("q1", 1.0), ("q2", 0.0), ("q3", 0.0), ("q4", 0.0)]
    assert point.mean_score == pytest.approx(0.25)


def test_lambda_sweep_curve_and_aiq(table: OutcomeTable) -> None:
    r = evaluate(table, ["lam-test"], apgr=False)
    res = r.policies[0]
    assert res.swept and [p.lam for p in res.points] == [0.0, 0.05, 1.0]
    assert [(p.total_cost, p.mean_score) for p in res.points] == [
        (40.0, 0.75), (8.0, 0.5), (4.0, 0.25)]
    assert res.aiq == pytest.approx(0.5375)  # the single-model hull itself
    # An explicit list; a fixed lam= means no sweep.
    r = evaluate(table, ["lam-test", "lam-test,lam=1"], lambdas=[0.05], apgr=False)
    assert [p.lam for p in r.policies[0].points] == [0.05]
    assert not r.policies[1].swept and r.policies[1].points[0].total_cost == 4.0
    assert len(DEFAULT_LAMBDAS) > 5


def test_apgr_and_cost_to_match(table: OutcomeTable) -> None:
    # pick-test: q3 → strong, the rest cheap/mid. On the full pool (14 USD, 0.75) = oracle.
    # On the (cheap, strong) pair: strong share 0.25, score 0.5 → PGR 0.5; anchored curve
    # (0,0)-(0.25,0.5)-(1,1): APGR = 0.25·0.25 + 0.75·0.75 = 0.625.
    r = evaluate(table, ["pick-test", "cheapest", "strongest"])
    by = {p.spec: p for p in r.policies}
    pick = by["pick-test"]
    assert (pick.points[0].total_cost, pick.points[0].mean_score) == (14.0, 0.75)
    assert pick.cost_to_match == pytest.approx(14 / 40)
    assert pick.apgr_points[0].strong_share == 0.25
    assert pick.apgr == pytest.approx(0.625)
    assert r.pair["strong"] == "strong" and r.pair["weak"] == "cheap"
    assert by["cheapest"].apgr_points[0].strong_share == 0.0
    assert by["strongest"].apgr_points[0].strong_share == 1.0
    # Either model alone: the anchored two-segment curve gives 0.5.
    assert by["cheapest"].apgr == pytest.approx(0.5) and by["strongest"].apgr == pytest.approx(0.5)
    r = evaluate(table, ["pick-test"], strong="mid", weak="cheap")
    assert r.pair["strong"] == "mid"
    with pytest.raises(UserError, match="unknown strong model"):
        evaluate(table, ["cheapest"], strong="nope")


def test_errors_are_reported_per_policy(table: OutcomeTable) -> None:
    r = evaluate(table, ["no-such-policy", "cheapest"], apgr=False)
    assert "unknown policy 'no-such-policy'" in (r.policies[0].error or "")
    assert r.policies[1].error is None
    # A vote over recordings without response text cannot be graded.
    bare = make_table(responses=False)
    r = evaluate(bare, ["ensemble,k=2", "cheapest"], apgr=False)
    assert "cannot be graded" in (r.policies[0].error or "")
    assert r.policies[1].points[0].mean_score == 0.25  # single calls still graded by score


def test_json_shape_and_plot(table: OutcomeTable, tmp_path: Path) -> None:
    from orchestra.eval.plots import plot_report

    r = evaluate(make_table(estimated=True), ["lam-test", "cheapest"], apgr=False)
    d = json.loads(json.dumps(r.to_dict()))  # JSON-serialisable
    assert d["version"] == 1 and d["data"]["estimated_cost"] is True
    assert d["data"]["cost_note"] == "estimated from made-up token counts"
    assert d["normalisation"]["max_cost"] == 40.0
    assert set(d["references"]) == {"oracle", "best_single", "cheapest_single", "random"}
    assert set(d["single_models"]) == {"cheap", "mid", "strong"}
    lam = d["policies"][0]
    assert lam["curve"] == [{"lam": 0.0, "total_cost": 40.0, "mean_score": 0.75},
                            {"lam": 0.05, "total_cost": 8.0, "mean_score": 0.5},
                            {"lam": 1.0, "total_cost": 4.0, "mean_score": 0.25}]
    # Anyone can recompute AIQ from the curve and the normalisation.
    from orchestra.eval.metrics import aiq

    pts = [(c["total_cost"], c["mean_score"]) for c in lam["curve"]]
    assert aiq(pts, d["normalisation"]["max_cost"]) == pytest.approx(lam["aiq"])
    for key in ("calls_per_query", "rounds_per_query", "cost_per_query", "queries_per_s"):
        assert key in lam["points"][0]
    out = plot_report(d, tmp_path / "plot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    plot_report(r, tmp_path / "again.png")


def test_load_eval_data_filters(table: OutcomeTable, tmp_path: Path) -> None:
    path = table.write(tmp_path / "t.jsonl")
    d = load_eval_data(path, tasks=["mc"], priors="none")
    assert d.table.n_queries == 3 and d.priors is None
    d = load_eval_data(path, limit=2, seed=1, priors=str(path))
    assert d.table.n_queries == 2 and d.priors == {"cheap": 0.25, "mid": 0.5, "strong": 0.75}
    with pytest.raises(UserError, match="unknown task"):
        load_eval_data(path, tasks=["nope"])


def test_load_eval_data_from_a_table(table: OutcomeTable) -> None:
    d = load_eval_data(table, split="test", limit=10)  # a limit above the size keeps every query
    assert (d.name, d.split, d.table.n_queries, d.priors, d.priors_source) == (
        "<table>", "test", 4, None, None)
    # The same seed picks the same subset, in table order.
    a, b = (load_eval_data(table, limit=3, seed=5).table.queries for _ in range(2))
    assert a == b and len(a) == 3 and a == [q for q in table.queries if q in a]
    with pytest.raises(UserError, match=r"expected --limit >= 1 \(got 0\)"):
        load_eval_data(table, limit=0)
    with pytest.raises(UserError, match=r"unknown split\(s\) \['train'\]"):
        load_eval_data(table, split="train")


def test_cli_eval(table: OutcomeTable, tmp_path: Path) -> None:
    from orchestra.cli import app

    path = table.write(tmp_path / "t.jsonl")
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    res = CliRunner().invoke(app, [
        "eval", "--data", str(path), "--policy", "cheapest", "--policy", "ensemble,k=3",
        "--policy", "lam-test", "--lambdas", "0,1", "--json", str(out_json),
        "--plot", str(out_png), "--quiet", "--priors", "none"])
    assert res.exit_code == 0, res.output
    assert "oracle" in res.output and "ensemble,k=3" in res.output and "AIQ" in res.output
    d = json.loads(out_json.read_text())
    assert [p["spec"] for p in d["policies"]] == ["cheapest", "ensemble,k=3", "lam-test"]
    assert [c["lam"] for c in d["policies"][2]["curve"]] == [0.0, 1.0]
    assert d["policies"][0]["apgr"] == pytest.approx(0.5)
    assert out_png.stat().st_size > 10_000
    assert not math.isnan(d["references"]["oracle"]["aiq"])

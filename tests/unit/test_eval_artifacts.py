"""``orchestra eval`` and trained artifacts: found by the data they were trained on (or refused
with the fix), named in the report; a failed policy fails the command; the λ-swept oracle; λ
points scored from shared runs give the numbers of a full pass per λ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from orchestra.embed import HashingEmbedder
from orchestra.eval.data import load_eval_data
from orchestra.eval.harness import evaluate
from orchestra.eval.metrics import aiq, oracle, oracle_curve, single_model_points
from orchestra.eval.report import EvalReport, PointResult
from orchestra.outcomes import OutcomeTable, QueryRow
from orchestra.policies.base import Answer, Call, Route, RunView
from orchestra.policies.learned.locations import artifacts_home
from orchestra.policies.learned.provenance import (
    data_identity,
    find_artifact,
    read_trained_on,
    write_trained_on,
)
from orchestra.policies.registry import register_policy
from orchestra.spec import Pool
from orchestra.training.router_data import prepare_data
from orchestra.training.router_fit import train_router

X_WORDS = ["add", "sum", "multiply", "divide", "subtract", "integer", "equation", "fraction"]
Y_WORDS = ["poem", "sonnet", "haiku", "verse", "rhyme", "stanza", "ballad", "ode"]
COST = {"A": 0.001, "B": 0.0012, "C": 0.02}
FAST: dict[str, dict[str, Any]] = {
    "knn": {"k": 20, "weighting": "distance", "task_weight": 0.0, "prior": 0.0},
    "mf": {"dim": 8, "weight_decay": 1e-4, "lr": 3e-2, "ensemble": 1, "max_epochs": 20,
           "patience": 8},
}


def synthetic(n: int, seed: int, *, models: tuple[str, ...] = ("A", "B", "C"),
              split: str | None = None, prefix: str = "q",
              test_from: int | None = None) -> OutcomeTable:
    """Topic X is solved by A (cheap), Y by B (cheap), both by C (pricey); queries from
    ``test_from`` on are the test split, those before the train split."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    queries = []
    for i in range(n):
        topic = "X" if i % 2 == 0 else "Y"
        words = X_WORDS if topic == "X" else Y_WORDS
        q = f"please {' '.join(rng.choice(words, size=4, replace=False))} {int(rng.integers(10**6))}"
        qid = f"{prefix}{i}"
        sp = split if test_from is None else ("test" if i >= test_from else "train")
        queries.append(QueryRow(query_id=qid, query=q, task=topic, split=sp))
        right = {"A": topic == "X", "B": topic == "Y", "C": True, "D": True}
        for m in models:
            p = (1.0 if m in ("C", "D") else 0.75) if right[m] else 0.05
            ok = float(rng.random() < p)
            rows.append({"query_id": qid, "query": q, "task": topic, "model": m,
                         "score": ok, "response": "42" if ok else f"{m} is unsure",
                         "cost_usd": COST.get(m, 0.01) * float(rng.uniform(0.9, 1.1))})
    return OutcomeTable(rows, queries=queries)


def train_to(table: OutcomeTable, source: str, kind: str, name: str) -> Path:
    """Train a small router on ``table`` and save it as ``<artifacts home>/<name>`` with its
    training record, as ``orchestra train`` does."""
    data = prepare_data(table, HashingEmbedder(), source=source)
    router = train_router(kind, data, params=FAST[kind], folds=2, seed=0)  # type: ignore[arg-type]
    path = router.save(artifacts_home() / name)
    write_trained_on(path, kind, table, source)
    return path


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data home (artifacts searched there) and the cache beside it."""
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCHESTRA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture()
def files(home: Path) -> tuple[Path, Path]:
    """my_train.jsonl and my_test.jsonl: the same three models and tasks, other queries."""
    train = synthetic(80, 0).write(home / "my_train.jsonl")
    test = synthetic(30, 1, prefix="t").write(home / "my_test.jsonl")
    return Path(train), Path(test)


def eval_cli(*args: str) -> Any:
    from orchestra.cli import app

    return CliRunner().invoke(app, ["eval", *args, "--quiet", "--priors", "none"])


# ------------------------------------------------------------------ artifacts found by data
def test_eval_without_path_uses_the_artifact_trained_on_these_models_and_names_it(
        files: tuple[Path, Path], home: Path) -> None:
    train, test = files
    art = train_to(OutcomeTable.read(train), str(train), "knn", "my_train-knn")
    # Another kind's artifact and one trained on other models are not taken.
    train_to(synthetic(40, 2, models=("A", "B", "D")), "other.jsonl", "knn", "other-knn")
    train_to(OutcomeTable.read(train), str(train), "mf", "my_train-mf")
    out = home / "r.json"
    res = eval_cli("--data", str(test), "--policy", "knn", "--lambdas", "0,1,100", "--json",
                   str(out))
    assert res.exit_code == 0, res.output
    pol = json.loads(out.read_text())["policies"][0]
    assert pol["error"] is None and pol["aiq"] > 0
    a = pol["artifact"]
    assert a["path"] == str(art) and a["kind"] == "knn"
    assert a["found_by"] == "same models and tasks"
    assert a["trained_on"]["data"] == str(train)
    assert a["trained_on"]["models"] == ["A", "B", "C"] and a["trained_on"]["n_queries"] == 80
    assert len(a["trained_on"]["fingerprint"]) == 16 and a["overlap"] == 0
    assert a["untrained_models"] == []
    assert "query_hashes" not in a["trained_on"]
    flat = " ".join(res.output.split())
    assert "knn: artifact" in flat and "trained on" in flat and "my_train" in flat


def test_eval_refuses_when_no_artifact_fits_and_names_the_fix(
        files: tuple[Path, Path], home: Path) -> None:
    _, test = files
    out = home / "r.json"
    res = eval_cli("--data", str(test), "--policy", "knn", "--policy", "cheapest", "--json",
                   str(out))
    assert res.exit_code == 1
    flat = " ".join(res.output.split())
    assert "1 of 2 policies failed" in flat and "no trained knn router fits" in flat
    assert "path=" in flat and "orchestra train knn --data" in flat
    d = json.loads(out.read_text())  # the report of the policy that worked is written
    assert d["policies"][1]["spec"] == "cheapest" and d["policies"][1]["aiq"] is not None
    # An artifact trained on other models is named with what differs, not used.
    train_to(synthetic(40, 2, models=("A", "B", "D")), "other.jsonl", "knn", "other-knn")
    r = evaluate(load_eval_data(test, priors="none"), ["knn"], apgr=False)
    err = r.policies[0].error or ""
    assert "other-knn" in err and "evaluated models it was not trained on: ['C']" in err
    assert "trained models the evaluated table lacks: ['D']" in err


def test_a_path_to_an_artifact_of_other_models_is_refused_with_the_names(
        files: tuple[Path, Path], home: Path) -> None:
    _, test = files
    other = train_to(synthetic(40, 2, models=("A", "B", "D")), "other.jsonl", "knn", "o-knn")
    r = evaluate(load_eval_data(test, priors="none"), [f"knn,path={other}"], apgr=False)
    err = r.policies[0].error or ""
    assert "models differ" in err and "['C']" in err and "['D']" in err
    assert r.policies[0].points == []
    # Trained on fewer models (a leave-one-out study): allowed with path=, the gap named.
    fewer = train_to(synthetic(40, 2, models=("A", "C")), "fewer.jsonl", "knn", "f-knn")
    r = evaluate(load_eval_data(test, priors="none"), [f"knn,path={fewer}"], apgr=False)
    assert r.policies[0].error is None and r.policies[0].artifact is not None
    assert r.policies[0].artifact["untrained_models"] == ["B"]
    assert "B" not in r.policies[0].points[0].model_calls
    with pytest.raises(Exception, match=r"no trained knn router fits"):  # never found unasked
        find_artifact("knn", None, data_identity(OutcomeTable.read(test), str(test)))


def test_the_same_data_wins_over_the_same_models_and_ties_are_refused(home: Path) -> None:
    all_path = synthetic(80, 3, test_from=60).write(home / "all.jsonl")
    tr = load_eval_data(all_path, split="train", priors="none").table
    mine = train_to(tr, f"{all_path}:train", "knn", "all-knn")
    train_to(synthetic(60, 5), "elsewhere.jsonl", "knn", "elsewhere-knn")
    ident = data_identity(load_eval_data(all_path, split="test").table, str(all_path))
    choice = find_artifact("knn", None, ident)
    assert choice.path == mine and choice.found_by == "same data" and choice.overlap == 0
    # Without the same-data one, two artifacts fit equally: refused, both named.
    import shutil

    shutil.rmtree(mine)
    train_to(synthetic(60, 6), "third.jsonl", "knn", "third-knn")
    with pytest.raises(Exception, match=r"several knn artifacts fit .*elsewhere-knn.*third-knn"):
        find_artifact("knn", None, ident)


def test_queries_trained_on_are_counted(files: tuple[Path, Path], home: Path) -> None:
    train, _ = files
    train_to(OutcomeTable.read(train), str(train), "knn", "my_train-knn")
    r = evaluate(load_eval_data(train, priors="none"), ["knn"], lambdas=[0.0], apgr=False)
    assert r.policies[0].artifact is not None and r.policies[0].artifact["overlap"] == 80
    assert r.policies[0].artifact["found_by"] == "same data"


def test_artifacts_written_before_the_record_are_read_from_their_config(home: Path) -> None:
    d = home / "old-mf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "kind": "mf", "data": "routerbench:train", "n_train": 5, "models": ["a", "b"],
        "tasks": {"vocab": ["t"], "centroids": []}}))
    tr = read_trained_on(d)
    assert tr is not None and tr["recorded"] is False
    assert (tr["base"], tr["models"], tr["tasks"], tr["fingerprint"]) == (
        "routerbench", ["a", "b"], ["t"], None)


# ------------------------------------------------------------------ a failed policy fails
def test_a_failed_policy_makes_the_command_exit_nonzero_after_writing_the_rest(
        files: tuple[Path, Path], home: Path) -> None:
    _, test = files
    out = home / "r.json"
    res = eval_cli("--data", str(test), "--policy", "single:nope", "--policy", "cheapest",
                   "--json", str(out))
    assert res.exit_code == 1
    flat = " ".join(res.output.split())
    assert "single:nope FAILED" in flat and "1 of 2 policies failed: single:nope" in flat
    d = json.loads(out.read_text())
    assert d["policies"][0]["error"] and d["policies"][1]["error"] is None
    ok = eval_cli("--data", str(test), "--policy", "cheapest")
    assert ok.exit_code == 0, ok.output


# ------------------------------------------------------------------ λ-swept oracle
def test_oracle_curve_by_hand() -> None:
    # Four queries, models cost 1 / 2 / 10 (see test_eval_harness): per-query hulls give the
    # start (4, 1/4) and the segments q2 (+1 USD, +1/4) and q3 (+9 USD, +1/4).
    S = [[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]]
    C = [[1, 2, 10]] * 4
    assert oracle_curve(S, C).tolist() == [[4.0, 0.25], [5.0, 0.5], [14.0, 0.75]]
    assert aiq(oracle_curve(S, C), 40.0) == pytest.approx(0.6375)
    o = oracle(S, C)
    assert aiq([(o.cost, o.quality)], 40.0) == pytest.approx(0.4875)
    # A missing cost is never chosen while a known one exists.
    assert oracle_curve([[1.0, 1.0]], [[np.nan, 2.0]]).tolist() == [[2.0, 1.0]]


def test_the_report_has_the_swept_oracle_as_upper_bound(home: Path) -> None:
    from rich.console import Console

    from orchestra.eval.cli import render_report
    from orchestra.eval.plots import plot_report

    t = synthetic(40, 7)
    r = evaluate(t, ["cheapest", "strongest"], apgr=False)
    S, C = t.score_matrix(), t.cost_matrix()
    mx = max(p.cost for p in single_model_points(S, C, t.models).values())
    d = r.to_dict()
    assert d["oracle_curve"]["aiq"] == pytest.approx(aiq(oracle_curve(S, C), mx))
    assert d["oracle_curve"]["aiq"] > d["references"]["oracle"]["aiq"]
    assert d["oracle_curve"]["points"][-1] == pytest.approx(
        [d["references"]["oracle"]["cost"], d["references"]["oracle"]["quality"]])
    for p in d["policies"]:  # every policy lies on or under the upper bound
        assert p["aiq"] <= d["oracle_curve"]["aiq"]
    con = Console(width=220, record=True)
    render_report(r, con)
    assert "oracle, λ-swept (upper bound)" in con.export_text()
    plot_report(d, home / "p.png")


def test_swept_oracle_on_routerbench(shared_data: Path) -> None:
    r = evaluate(load_eval_data("routerbench", split="test"), ["cheapest"], apgr=False)
    assert r.references["oracle"].aiq == pytest.approx(0.932, abs=5e-4)
    assert r.oracle_curve_aiq == pytest.approx(0.957, abs=5e-4)


# ------------------------------------------------------------------ shared runs
def _same(a: list[PointResult], b: list[PointResult]) -> None:
    assert len(a) == len(b) > 0
    for pa, pb in zip(a, b, strict=True):
        da, db = dict(pa.__dict__), dict(pb.__dict__)
        for k in ("seconds", "queries_per_s"):
            da.pop(k)
            db.pop(k)
        assert da == db


def _compare(data: Any, specs: list[str], lambdas: list[float]) -> tuple[EvalReport, EvalReport]:
    shared = evaluate(data, specs, lambdas=lambdas, share_runs=True)
    full = evaluate(data, specs, lambdas=lambdas, share_runs=False)
    for s, f in zip(shared.policies, full.policies, strict=True):
        assert s.error is None and f.error is None, (s.error, f.error)
        _same(s.points, f.points)
        _same(s.apgr_points, f.apgr_points)
        assert (s.aiq, s.apgr, s.cost_to_match) == (f.aiq, f.apgr, f.cost_to_match)
        assert s.shared_runs and not f.shared_runs
        assert f.runs == len(lambdas) * data.table.n_queries
        assert s.runs < f.runs
    return shared, full


def test_shared_runs_give_the_numbers_of_a_full_pass_per_lambda(files: tuple[Path, Path],
                                                                 home: Path) -> None:
    train, test = files
    knn = train_to(OutcomeTable.read(train), str(train), "knn", "my_train-knn")
    mf = train_to(OutcomeTable.read(train), str(train), "mf", "my_train-mf")
    data = load_eval_data(test, priors="none")
    shared, _ = _compare(data, [f"knn,path={knn}", f"mf,path={mf}", f"knn,path={knn},k=2"],
                         [0.0, 0.05, 0.3, 1.0, 3.0, 30.0])
    # The points differ along the sweep (the test is not comparing constants).
    costs = [p.total_cost for p in shared.policies[0].points]
    assert costs[0] > costs[-1]
    # mf reuses the runs knn made for the same (query, calls).
    assert shared.policies[1].runs < shared.policies[0].runs


def test_shared_runs_on_routerbench_with_knn_and_mf(shared_data: Path, home: Path) -> None:
    # Small routers (300 training queries) on 60 test queries keep this quick; the point is
    # the equality, on real queries, models, costs and recorded answers.
    train = load_eval_data("routerbench", split="train", limit=300, priors="none").table
    knn = train_to(train, "routerbench:train", "knn", "routerbench-knn")
    mf = train_to(train, "routerbench:train", "mf", "routerbench-mf")
    data = load_eval_data("routerbench", split="test", limit=60, seed=3)
    shared, _ = _compare(data, ["knn", "mf"], [0.0, 0.02, 0.1, 0.5, 2.0])
    assert [p.artifact["path"] for p in shared.policies if p.artifact] == [str(knn), str(mf)]


class PlanLiar:
    """Plans one model but routes to another: shared runs must catch it."""

    def __init__(self, pool: Pool, lam: float = 0.0) -> None:
        self.lam = float(lam)
        self.name = f"liar(lam={self.lam:g})"

    def default_lambdas(self) -> list[float]:
        return [0.0, 1.0]

    def route_once_plan(self, queries: list[str], tasks: list[str], usd: float | None
                        ) -> list[tuple[tuple[str, str], ...]]:
        return [(("assistant", "A"),) for _ in queries]

    def decide(self, view: RunView) -> Any:
        return Answer() if view.rounds else Route([Call(model="C")])


register_policy("liar-test", PlanLiar, doc="test: plans A, routes to C")


def test_a_run_that_does_not_follow_its_plan_is_an_error(home: Path) -> None:
    r = evaluate(synthetic(6, 8), ["liar-test"], apgr=False)
    assert "planned [('assistant', 'A')]" in (r.policies[0].error or "")
    assert "--no-share-runs" in (r.policies[0].error or "")
    full = evaluate(synthetic(6, 8), ["liar-test"], apgr=False, share_runs=False)
    assert full.policies[0].error is None and full.policies[0].points[0].model_calls == {"C": 6}

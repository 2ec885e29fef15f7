"""The answer-aware cascade on recorded RouterBench answers, through the runtime.

Trains on a subset of the train split (small settings: the test is about the wiring), then runs
the policy through :func:`orchestra.eval.harness.evaluate` on the replay pool for a subset of
the test split and checks the runtime agrees with the offline simulation of the same artifact,
and that it routes sensibly. LLMRouter records no responses: training must say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the 'learn' extra (torch)")

from typer.testing import CliRunner

from orchestra import UserError
from orchestra.eval.data import load_eval_data
from orchestra.eval.harness import evaluate
from orchestra.outcomes import OutcomeTable, load_outcomes
from orchestra.policies.escalate.artifact import load_escalator, save_escalator
from orchestra.policies.escalate.cascade import simulate
from orchestra.training.cli import train_app
from orchestra.training.escalate_fit import prepare_escalate_data, train_escalate

STRONG = "gpt-4-1106-preview"
LAMS = [0.1, 1.0]
_CACHE: dict[str, Any] = {}


def _subset(table: OutcomeTable, n: int, seed: int) -> OutcomeTable:
    rng = np.random.default_rng(seed)
    ids = table.queries
    keep = np.sort(rng.choice(len(ids), size=n, replace=False))
    return table.filter(query_ids=[ids[i] for i in keep.tolist()])


@pytest.fixture
def artifact(shared_data: Path, tmp_path_factory: pytest.TempPathFactory,
             monkeypatch: pytest.MonkeyPatch) -> Path:
    if "artifact" not in _CACHE:
        monkeypatch.setenv("ORCHESTRA_SHARED_DATA", str(shared_data))
        train = _subset(load_outcomes("routerbench:train"), 360, seed=1)
        data = prepare_escalate_data(train, source="routerbench:train[360]")
        esc = train_escalate(data, params={"hidden": 0, "lookahead": True}, folds=2, pairs=4,
                             triples=2, lambdas=(0.0, 0.1, 0.3, 1.0, 3.0))
        _CACHE["artifact"] = save_escalator(esc, tmp_path_factory.mktemp("esc") / "rb-escalate")
    return _CACHE["artifact"]  # type: ignore[no-any-return]


def test_runtime_matches_the_offline_simulation(artifact: Path, shared_data: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_SHARED_DATA", str(shared_data))
    data = load_eval_data("routerbench", split="test", limit=80, seed=3)
    report = evaluate(data, [f"escalate,path={artifact}"], lambdas=LAMS, apgr=False)
    res = report.policies[0]
    assert res.error is None and [p.lam for p in res.points] == LAMS
    assert all(p.errors == 0 for p in res.points)
    # The same decisions offline, on the same queries' recorded answers.
    test = prepare_escalate_data(data.table)
    sim = simulate(load_escalator(artifact), test.queries, test.scores, test.costs, LAMS)
    for point, off in zip(res.points, sim, strict=True):
        assert point.total_cost == pytest.approx(off["total_cost"], rel=1e-6)
        # Grading credits the answer's text: equal texts from two models may be credited to
        # either, so allow a query's worth of difference.
        assert abs(point.mean_score - off["mean_score"]) <= 1.0 / len(test.queries) + 1e-9
        assert point.calls_per_query == pytest.approx(off["calls_per_query"])
    # Sensible routing: at λ = 0.1 near the strong model's accuracy for a fraction of its cost;
    # a larger λ spends less.
    strong = report.singles[STRONG]
    assert res.points[0].total_cost < 0.8 * strong.cost
    assert res.points[0].mean_score >= strong.quality - 0.08
    assert res.points[1].total_cost < res.points[0].total_cost


def test_tables_without_responses_cannot_train_it(shared_data: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_SHARED_DATA", str(shared_data))
    with pytest.raises(UserError, match="needs recorded responses"):
        prepare_escalate_data(load_outcomes("llmrouter:train"), source="llmrouter:train")
    out = CliRunner().invoke(train_app, ["escalate", "--data", "llmrouter"])
    assert out.exit_code == 2
    assert "needs recorded responses" in " ".join(out.output.split())

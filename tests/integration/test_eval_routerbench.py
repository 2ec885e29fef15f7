"""The evaluation harness on the shared RouterBench and LLMRouter data (skipped without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.eval.data import load_eval_data
from orchestra.eval.harness import evaluate


@pytest.fixture()
def data_env(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(shared_data))
    return shared_data


def test_routerbench_references_match_the_data_readme(data_env: Path) -> None:
    data = load_eval_data("routerbench", split="test")
    assert data.table.n_queries == 953 and data.priors_source == "routerbench:train"
    r = evaluate(data, [], apgr=False)  # references only: no runs
    ref = r.references
    # data/README.md: gpt-4 0.874 for $4.80; the oracle 0.974 for $0.20.
    assert ref["best_single"].label == "best single: gpt-4-1106-preview"
    assert ref["best_single"].quality == pytest.approx(0.874, abs=5e-4)
    assert ref["best_single"].cost == pytest.approx(4.80, abs=5e-3)
    assert ref["oracle"].quality == pytest.approx(0.974, abs=5e-4)
    assert ref["oracle"].cost == pytest.approx(0.20, abs=5e-3)
    assert ref["cheapest_single"].label == "cheapest single: mistralai/mistral-7b-chat"
    assert r.max_cost_model == "gpt-4-1106-preview" and not r.estimated_cost
    # AIQ of single models: q · (1 − x); in [0, q]; the most expensive one gets 0.
    for s in r.singles.values():
        assert 0.0 <= s.aiq <= s.quality
        assert s.aiq == pytest.approx(s.quality * (1 - s.cost / r.max_cost))
    assert r.singles["gpt-4-1106-preview"].aiq == 0.0
    assert 0.55 < r.singles["mistralai/mistral-7b-chat"].aiq < 0.6
    assert 0.78 < r.single_hull_aiq < 0.83 and ref["oracle"].aiq > 0.9


def test_routerbench_baselines_through_the_runtime(data_env: Path) -> None:
    # A seeded subset keeps this fast; single-model policies must land exactly on the single
    # models' reference points computed from the matrices of the same queries.
    data = load_eval_data("routerbench", split="test", limit=120, seed=3)
    r = evaluate(data, ["cheapest", "strongest", "random,seed=1",
                        "ensemble,k=3,select=cheapest"], apgr=False, concurrency=40)
    by = {p.spec: p for p in r.policies}
    assert all(p.error is None for p in r.policies)
    cheap, strong = by["cheapest"].points[0], by["strongest"].points[0]
    ref_cheap = r.singles["mistralai/mistral-7b-chat"]
    ref_strong = r.singles["gpt-4-1106-preview"]
    assert cheap.total_cost == pytest.approx(ref_cheap.cost)
    assert cheap.mean_score == pytest.approx(ref_cheap.quality)
    assert strong.total_cost == pytest.approx(ref_strong.cost)
    assert strong.mean_score == pytest.approx(ref_strong.quality)
    assert by["strongest"].aiq == 0.0 and by["cheapest"].aiq == pytest.approx(ref_cheap.aiq)
    rnd = by["random,seed=1"]
    assert 0.0 < rnd.aiq < r.references["oracle"].aiq
    ens = by["ensemble,k=3,select=cheapest"].points[0]
    assert ens.calls_per_query == 3.0 and ens.aggregated == 120 and ens.errors == 0
    for p in r.policies:
        assert p.points[0].n == 120 and 0.0 <= p.aiq <= 1.0


def test_llmrouter_costs_flagged_as_estimated(data_env: Path) -> None:
    data = load_eval_data("llmrouter", split="test", limit=60)
    r = evaluate(data, ["cheapest"], apgr=False)
    d = r.to_dict()
    assert d["data"]["estimated_cost"] is True and "estimated" in d["data"]["cost_note"]
    assert r.policies[0].points[0].mean_score == pytest.approx(
        r.references["cheapest_single"].quality)

"""The loaders on the real recorded benchmarks in the shared data folder.

The data lives beside the project (``$ORCHESTRA_SHARED_DATA``, else ``<repo>/../shared/data``)
and is never copied into it; every test skips with the reason when it is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from orchestra.errors import UserError
from orchestra.outcomes import (
    OutcomeTable,
    inspect_table,
    load_llmrouter,
    load_outcomes,
    load_routerbench,
)

_REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("ORCHESTRA_SHARED_DATA") or _REPO.parent / "shared" / "data")
GPT4 = "gpt-4-1106-preview"
MISTRAL = "mistralai/mistral-7b-chat"


def _need(sub: str) -> Path:
    d = SHARED / sub
    if not d.is_dir():
        pytest.skip(
            f"shared data {str(d)!r} is absent (set ORCHESTRA_SHARED_DATA to the folder holding "
            f"{sub}/); these tests read the real recorded benchmark"
        )
    return d


@pytest.fixture(scope="module")
def rb_test() -> OutcomeTable:
    return load_routerbench(_need("routerbench"), split="test")


@pytest.fixture(scope="module")
def llm_train() -> OutcomeTable:
    return load_llmrouter(_need("llmrouter"), split="train")


# ------------------------------------------------------------------------------ RouterBench
def test_routerbench_test_split_shape(rb_test: OutcomeTable) -> None:
    assert rb_test.score_matrix().shape == (953, 11)
    assert len(rb_test) == 953 * 11
    assert GPT4 in rb_test.models and MISTRAL in rb_test.models
    assert inspect_table(rb_test)["tasks"] == {"arc-challenge": 445, "mbpp": 128, "winogrande": 380}
    assert not rb_test.estimated_cost
    assert set(rb_test.models_info) == set(rb_test.models)
    # One ARC question is recorded twice under one sample id: the second copy gets "#2".
    assert rb_test.meta["repeated_sample_ids"] == ["arc-challenge.val.172"]
    assert "arc-challenge.val.172#2" in rb_test.queries
    assert rb_test.meta["missing_scores_filled"] == 62


def test_routerbench_reference_points(rb_test: OutcomeTable) -> None:
    """The data README's reference numbers (empty score cells count as 0)."""
    r = inspect_table(rb_test)
    gpt4 = r["per_model"][GPT4]
    assert gpt4["mean_score"] == pytest.approx(0.874, abs=0.001)
    assert gpt4["total_cost"] == pytest.approx(4.80, abs=0.01)
    assert r["oracle"]["mean_score"] == pytest.approx(0.974, abs=0.001)
    assert r["oracle"]["total_cost"] == pytest.approx(0.20, abs=0.01)
    mistral = r["per_model"][MISTRAL]
    # The README's 0.592 averages the non-empty cells only; with empty cells as 0 it is 0.589.
    assert mistral["mean_score"] == pytest.approx(0.592, abs=0.005)
    assert mistral["total_cost"] == pytest.approx(0.08, abs=0.005)
    assert r["cheapest_model"]["model"] == MISTRAL
    assert r["best_model"]["model"] == GPT4
    # The cheapest-correct oracle mostly routes to the cheap open models.
    assert max(r["oracle"]["picks"], key=r["oracle"]["picks"].get) == MISTRAL


def test_routerbench_lookup_by_id_and_prompt(rb_test: OutcomeTable) -> None:
    row = rb_test.lookup("arc-challenge.test.1", GPT4)
    assert row.score == 1.0 and row.response == "A" and row.cost_usd == pytest.approx(0.00519)
    assert rb_test.lookup(row.query, MISTRAL).query_id == "arc-challenge.test.1"
    assert row.query.endswith("Answer:") and not row.query.startswith("[")
    with pytest.raises(UserError, match="unknown query 'arc-challenge.test.99999'"):
        rb_test.lookup("arc-challenge.test.99999", GPT4)
    with pytest.raises(KeyError, match="unknown model 'gpt-4'"):
        rb_test.lookup("arc-challenge.test.1", "gpt-4")


def test_routerbench_gold_letters(rb_test: OutcomeTable) -> None:
    gold = rb_test.meta["gold"]
    assert gold["multiple_choice_queries"] == 825
    assert gold["conflicts"] == []
    assert gold["wrong_answers_with_gold_letter"] == 0
    assert gold["with_gold"] == gold["by_vote"] + gold["by_elimination"] == 818
    q = rb_test.query_row("arc-challenge.test.1")
    assert q.gold == "A" and q.choices is not None and len(q.choices) == 4
    assert rb_test.query_row("winogrande.dev.1").gold == "B"
    assert all(q.gold is None for q in rb_test.query_rows if q.task == "mbpp")
    # Every model marked correct on a query answered the gold letter.
    s = rb_test.score_matrix()
    from orchestra.outcomes import extract_choice_letter

    for qi, q in enumerate(rb_test.query_rows):
        if q.gold is None:
            continue
        for mi, m in enumerate(rb_test.models):
            if s[qi, mi] == 1.0:
                resp = rb_test.response(q.query_id, m)
                assert extract_choice_letter(resp, len(q.choices or []), q.choices) == q.gold


def test_routerbench_train_and_all_splits() -> None:
    d = _need("routerbench")
    train = load_routerbench(d, split="train")
    assert train.n_queries == 2225 and train.n_models == 11
    both = load_routerbench(d, split="all")
    assert both.n_queries == 2225 + 953
    assert inspect_table(both)["splits"] == {"test": 953, "train": 2225}
    assert both.filter(splits=["test"]).n_queries == 953


def test_routerbench_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _need("routerbench")
    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(SHARED))
    t = load_outcomes("routerbench:test")
    assert t.score_matrix().shape == (953, 11)
    assert load_outcomes("routerbench", split="test").queries == t.queries


def test_routerbench_round_trip_in_every_format(rb_test: OutcomeTable, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    for suffix in (".parquet", ".jsonl", ".csv"):
        back = OutcomeTable.read(rb_test.write(tmp_path / f"rb{suffix}"))
        np.testing.assert_array_equal(back.score_matrix(), rb_test.score_matrix())
        np.testing.assert_array_equal(back.cost_matrix(), rb_test.cost_matrix())
        assert back.query_rows == rb_test.query_rows
        assert back.response("mbpp.dev.1", GPT4) == rb_test.response("mbpp.dev.1", GPT4)
        assert back.meta["gold"] == rb_test.meta["gold"]


# ------------------------------------------------------------------------------ LLMRouter
def test_llmrouter_train(llm_train: OutcomeTable) -> None:
    assert llm_train.score_matrix().shape == (5608, 9)
    assert len(llm_train.models_info) == 9
    assert all(i.input_price is not None and i.size for i in llm_train.models_info.values())
    assert len(llm_train.tasks) == 14
    assert llm_train.estimated_cost
    assert llm_train.estimated_matrix().all()
    assert "estimated" in llm_train.meta["cost_note"]
    r = inspect_table(llm_train)
    assert r["estimated_cost"] is True and "estimated" in r["cost_note"]
    # The estimate is tokens × price, recomputable from the row.
    row = next(llm_train.rows())
    info = llm_train.models_info[row.model]
    assert row.input_tokens is not None and row.output_tokens is not None
    assert row.cost_usd == pytest.approx(
        (row.input_tokens * (info.input_price or 0) + row.output_tokens * (info.output_price or 0))
        / 1e6
    )
    q = llm_train.query_rows[0]
    assert q.gold is not None and q.split == "train"


def test_llmrouter_test_drops_the_train_overlap(llm_train: OutcomeTable) -> None:
    d = _need("llmrouter")
    test = load_llmrouter(d, split="test")
    assert test.n_queries == 500 - 119 == 381
    assert test.meta["dropped_overlap_with_train"] == 119
    assert set(test.queries).isdisjoint(llm_train.queries)
    full = load_llmrouter(d, split="test", drop_overlap=False)
    assert full.n_queries == 500
    assert len(set(full.queries) & set(llm_train.queries)) == 119


def test_llmrouter_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _need("llmrouter")
    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(SHARED))
    assert load_outcomes("llmrouter:test").n_queries == 381
    assert load_outcomes("llmrouter").n_queries == 5608


def test_cli_inspect_routerbench_json(monkeypatch: pytest.MonkeyPatch) -> None:
    _need("routerbench")
    from typer.testing import CliRunner

    from orchestra.outcomes.cli import data_app

    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(SHARED))
    res = CliRunner().invoke(data_app, ["inspect", "routerbench", "--split", "test", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["queries"] == 953 and report["best_model"]["model"] == GPT4
    assert report["gold"]["with_gold"] == 818

"""Outcome tables: the format, files, validation, lookups, subsets, parsers and summaries.

Everything here runs on small tables the tests build themselves; the shared benchmark data is
exercised in ``test_outcome_loaders.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestra.errors import UserError
from orchestra.outcomes import (
    ModelInfo,
    OutcomeLookupError,
    OutcomeRow,
    OutcomeTable,
    QueryRow,
    extract_choice_letter,
    inspect_table,
    load_llmrouter,
    load_outcomes,
    load_routerbench,
    load_routerbench_hub,
    parse_choices,
    render_inspect,
    routerbench_from_frame,
)

MODELS = ["big", "small", "mid"]


def _rows() -> list[dict[str, Any]]:
    """3 queries × 3 models, the pair (q3, mid) not recorded."""
    out = []
    data = {
        ("q1", "big"): (1.0, 0.01),
        ("q1", "small"): (1.0, 0.001),
        ("q1", "mid"): (0.0, 0.004),
        ("q2", "big"): (1.0, 0.02),
        ("q2", "small"): (0.0, 0.002),
        ("q2", "mid"): (1.0, 0.005),
        ("q3", "big"): (0.5, 0.03),
        ("q3", "small"): (0.25, 0.003),
    }
    texts = {"q1": "What is 2+2?", "q2": 'Say "hi",\nthen stop — ünïcode', "q3": "Write code"}
    tasks = {"q1": "math", "q2": "chat", "q3": "code"}
    for (q, m), (s, c) in data.items():
        out.append(
            {
                "query_id": q,
                "query": texts[q],
                "task": tasks[q],
                "model": m,
                "score": s,
                "cost_usd": c,
                "latency_s": 0.5 if m == "big" else None,
                "input_tokens": 12 if m != "mid" else None,
                "output_tokens": 3 if m != "mid" else None,
                "response": f'answer of {m}, with a comma and a "quote"\nand a newline'
                if m != "small"
                else None,
                "cost_estimated": m == "mid",
            }
        )
    return out


def _table() -> OutcomeTable:
    return OutcomeTable(
        _rows(),
        queries=[
            QueryRow(query_id="q1", query="What is 2+2?", task="math", gold="4", split="train"),
            QueryRow(
                query_id="q2",
                query='Say "hi",\nthen stop — ünïcode',
                task="chat",
                choices=["hi", "bye"],
                split="test",
            ),
        ],
        models_info={
            "big": ModelInfo(
                name="big", description="a big one", input_price=10, output_price=30, size="1T"
            ),
            "small": {"description": "a small one", "input_price": 0.1, "output_price": 0.2},
        },
        meta={"source": "unit test", "note": [1, 2]},
    )


# ------------------------------------------------------------------------------ the table
def test_table_shapes_and_matrices() -> None:
    t = _table()
    assert t.queries == ["q1", "q2", "q3"]
    assert t.models == MODELS
    assert t.tasks == ["chat", "code", "math"]
    assert t.query_tasks == ["math", "chat", "code"]
    assert len(t) == 8 and t.n_queries == 3 and t.n_models == 3
    s = t.score_matrix()
    assert s.shape == (3, 3)
    assert s[0].tolist() == [1.0, 1.0, 0.0]
    assert math.isnan(s[2, 2]) and math.isnan(t.cost_matrix()[2, 2])
    assert t.cost_matrix()[1, 2] == pytest.approx(0.005)
    # Matrices are copies: editing one does not change the table.
    s[0, 0] = 0.0
    assert t.score_matrix()[0, 0] == 1.0
    assert t.estimated_cost is True  # the "mid" rows are estimated
    assert t.estimated_matrix()[:, 2].tolist() == [True, True, False]
    assert t.query_row("q1").gold == "4" and t.query_row("q3").gold is None
    assert set(t.models_info) == {"big", "small"}
    assert t.models_info["small"].output_price == 0.2


def test_lookup_by_id_and_text() -> None:
    t = _table()
    row = t.lookup("q1", "small")
    assert isinstance(row, OutcomeRow)
    assert (row.score, row.cost_usd, row.task, row.input_tokens) == (1.0, 0.001, "math", 12)
    assert t.lookup("What is 2+2?", "big").latency_s == 0.5
    assert "newline" in (t.response("q2", "big") or "")
    assert t.response("q2", "small") is None
    assert t.models_for("q3") == ["big", "small"]


def test_lookup_unknown_query_model_or_pair_raises_never_invents() -> None:
    t = _table()
    with pytest.raises(OutcomeLookupError, match=r"unknown query 'q9'") as e:
        t.lookup("q9", "big")
    assert isinstance(e.value, UserError) and isinstance(e.value, KeyError)
    assert str(e.value).startswith("unknown query")  # not KeyError's quoted repr
    with pytest.raises(
        KeyError, match=r"unknown model 'gpt-5': expected one of \['big', 'small', 'mid'\]"
    ):
        t.lookup("q1", "gpt-5")
    with pytest.raises(UserError, match=r"no outcome recorded for model 'mid' on query 'q3'"):
        t.lookup("q3", "mid")


def test_ambiguous_text_lookup_asks_for_the_id() -> None:
    rows = [
        {"query_id": "a", "query": "same", "task": "t", "model": "m", "score": 1, "cost_usd": 0},
        {"query_id": "b", "query": "same", "task": "t", "model": "m", "score": 0, "cost_usd": 0},
    ]
    t = OutcomeTable(rows)
    assert t.lookup("b", "m").score == 0
    with pytest.raises(OutcomeLookupError, match="matches 2 queries"):
        t.lookup("same", "m")


def test_filter_and_unknown_names() -> None:
    t = _table()
    f = t.filter(tasks=["math", "code"], models=["small", "big"])
    assert f.queries == ["q1", "q3"] and f.models == ["small", "big"]
    assert f.score_matrix().tolist() == [[1.0, 1.0], [0.25, 0.5]]
    assert set(f.models_info) == {"small", "big"}
    assert f.meta["source"] == "unit test"
    assert t.filter(query_ids=["q2"]).queries == ["q2"]
    assert t.filter(splits=["train"]).queries == ["q1"]
    with pytest.raises(UserError, match=r"unknown task\(s\) \['maths'\]"):
        t.filter(tasks=["maths"])
    with pytest.raises(UserError, match="unknown model 'tiny'"):
        t.filter(models=["tiny"])
    with pytest.raises(UserError, match="unknown query 'q7'"):
        t.filter(query_ids=["q7"])


def test_split_is_disjoint_reproducible_and_stratified() -> None:
    rows = [
        {
            "query_id": f"{task}{i}",
            "query": f"{task} {i}",
            "task": task,
            "model": m,
            "score": 1.0,
            "cost_usd": 0.1,
        }
        for task in ("a", "b")
        for i in range(50)
        for m in ("x", "y")
    ]
    t = OutcomeTable(rows)
    train, test = t.split(0.2, seed=3)
    assert set(train.queries).isdisjoint(test.queries)
    assert len(train.queries) + len(test.queries) == 100
    assert sorted(test.query_tasks).count("a") == 10 and test.query_tasks.count("b") == 10
    assert test.models == ["x", "y"]
    assert t.split(0.2, seed=3)[1].queries == test.queries
    assert t.split(0.2, seed=4)[1].queries != test.queries
    with pytest.raises(
        UserError, match=r"test_fraction=1.5: expected a number strictly between 0 and 1"
    ):
        t.split(1.5)


def test_duplicate_pair_and_inconsistent_query_are_errors() -> None:
    rows = _rows()
    with pytest.raises(
        UserError, match=r"row 9: the pair \(query_id='q1', model='big'\) appears twice"
    ):
        OutcomeTable([*rows, rows[0]])
    bad = dict(rows[1], task="other")
    with pytest.raises(UserError, match=r"row 2: field 'task': expected the same task as row 1"):
        OutcomeTable([rows[0], bad])


def test_from_columns_checks_ranges_and_shapes() -> None:
    q = [QueryRow(query_id="a", query="A", task="t"), QueryRow(query_id="b", query="B", task="t")]
    t = OutcomeTable.from_columns(
        query_rows=q,
        models=["m"],
        scores=[[1.0], [np.nan]],
        costs=[[0.5], [np.nan]],
        cost_estimated=True,
    )
    assert len(t) == 1 and t.estimated_matrix().tolist() == [[True], [False]]
    with pytest.raises(
        UserError,
        match=r"query 'b', model 'm': field 'score': expected a number in \[0, 1\] \(got 2.0\)",
    ):
        OutcomeTable.from_columns(
            query_rows=q, models=["m"], scores=[[1.0], [2.0]], costs=[[0.0], [0.0]]
        )
    with pytest.raises(UserError, match="expected a score and a cost together"):
        OutcomeTable.from_columns(
            query_rows=q, models=["m"], scores=[[1.0], [1.0]], costs=[[0.0], [np.nan]]
        )
    with pytest.raises(UserError, match=r"scores has shape \(1, 1\); expected \(2, 1\)"):
        OutcomeTable.from_columns(query_rows=q, models=["m"], scores=[[1.0]], costs=[[0.0]])


# ------------------------------------------------------------------------------ files
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    t = _table()
    path = t.write(tmp_path / f"outcomes{suffix}")
    back = OutcomeTable.read(path)
    assert back.queries == t.queries and back.models == t.models
    assert back.to_records() == t.to_records()
    assert back.query_rows == t.query_rows
    assert back.models_info == t.models_info
    assert back.meta == t.meta
    assert back.estimated_cost is True
    np.testing.assert_array_equal(back.score_matrix(), t.score_matrix())
    np.testing.assert_array_equal(back.cost_matrix(), t.cost_matrix())


def test_bare_rows_are_a_valid_file(tmp_path: Path) -> None:
    p = tmp_path / "bare.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in _rows()) + "\n", encoding="utf-8")
    t = OutcomeTable.read(p)
    assert t.queries == ["q1", "q2", "q3"] and t.models_info == {}
    assert t.query_row("q2").choices is None
    p2 = tmp_path / "bare.csv"
    p2.write_text(
        "query_id,query,task,model,score,cost_usd\nx,hello,t,m,1,0.25\n", encoding="utf-8"
    )
    t2 = OutcomeTable.read(p2)
    assert t2.lookup("hello", "m").cost_usd == 0.25 and t2.lookup("x", "m").response is None


def _jsonl_with(tmp_path: Path, index: int, **change: Any) -> Path:
    rows = [
        {
            "query_id": f"q{i}",
            "query": f"text {i}",
            "task": "t",
            "model": "m",
            "score": 1.0,
            "cost_usd": 0.1,
        }
        for i in range(20)
    ]
    rows[index].update(change)
    for k in [k for k, v in change.items() if v is _DROP]:
        del rows[index][k]
    p = tmp_path / "outcomes.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return p


_DROP: Any = "__drop__"


def test_malformed_jsonl_row_names_file_row_and_field(tmp_path: Path) -> None:
    p = _jsonl_with(tmp_path, 16, score="abc")
    with pytest.raises(
        UserError,
        match=r"^outcomes\.jsonl row 17: field 'score': expected a number in \[0, 1\] \(got 'abc'\)$",
    ):
        OutcomeTable.read(p)
    p = _jsonl_with(tmp_path, 3, score=1.5)
    with pytest.raises(
        UserError,
        match=r"outcomes\.jsonl row 4: field 'score': expected a number in \[0, 1\] \(got 1.5\)",
    ):
        OutcomeTable.read(p)
    p = _jsonl_with(tmp_path, 0, model=_DROP)
    with pytest.raises(UserError, match=r"outcomes\.jsonl row 1: field 'model' is missing"):
        OutcomeTable.read(p)
    p = _jsonl_with(tmp_path, 5, scroe=1.0)
    with pytest.raises(UserError, match=r"outcomes\.jsonl row 6: unknown field 'scroe'"):
        OutcomeTable.read(p)
    p.write_text('{"query_id": "a"\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"outcomes\.jsonl row 1: expected one JSON object a line"):
        OutcomeTable.read(p)


def test_malformed_csv_and_parquet(tmp_path: Path) -> None:
    p = tmp_path / "o.csv"
    p.write_text(
        "query_id,query,task,model,score,cost_usd\na,A,t,m,1,0.1\nb,B,t,m,0,-2\n", encoding="utf-8"
    )
    with pytest.raises(
        UserError,
        match=r"o\.csv row 2: field 'cost_usd': expected a number >= 0 \(USD\) \(got '-2'\)",
    ):
        OutcomeTable.read(p)
    p.write_text("query_id,query,task,model,score,cost,extra\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"unknown column\(s\) \['cost', 'extra'\]"):
        OutcomeTable.read(p)
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    q = tmp_path / "o.parquet"
    pq.write_table(
        pa.table(
            {
                "query_id": ["a", "b", "c"],
                "query": ["A", "B", "C"],
                "task": ["t"] * 3,
                "model": ["m"] * 3,
                "score": [1.0, 0.0, -0.5],
                "cost_usd": [0.0] * 3,
            }
        ),
        q,
    )
    with pytest.raises(
        UserError,
        match=r"o\.parquet row 3: field 'score': expected a number in \[0, 1\] \(got -0.5\)",
    ):
        OutcomeTable.read(q)


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"expected a suffix among \['.jsonl', '.csv', '.parquet'\] \(got '.xlsx'\)"
    ):
        _table().write(tmp_path / "t.xlsx")
    with pytest.raises(UserError, match="does not exist"):
        OutcomeTable.read(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------------------ choice letters
@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("A", "A"),
        ("B\n", "B"),
        ("['C']", None),  # the list repr is unwrapped by the loader, not here
        ("(D)", "D"),
        ("C)", "C"),
        ("b", "B"),
        ("2", "B"),
        ("Answer: C", "C"),
        ("The answer is (A).", "A"),
        ("D (", "D"),
        ("A chart", "A"),
        ("Sarah", "B"),
        ("E", None),  # beyond the 4 options
        ("I do not know", None),
        ("Unfortunately I cannot", None),
        ("", None),
    ],
)
def test_extract_choice_letter(response: str, expected: str | None) -> None:
    assert extract_choice_letter(response, 4, ["Maria", "Sarah", "Kyle", "Logan"]) == expected


def test_extract_choice_letter_without_text_matching() -> None:
    assert extract_choice_letter("Sarah", 2, ["Maria", "Sarah"], match_text=False) is None


def test_parse_choices_reads_the_last_question() -> None:
    prompt = (
        "Q1?\nA) x\nB) y\nPrint only a single choice.\nAnswer:\nA\n\n"
        "Sarah was better than Maria so _ got the cases.\nA) Maria\nB) Sarah\nPrint only. Answer:"
    )
    assert parse_choices(prompt) == ["Maria", "Sarah"]
    assert parse_choices("Write a python function.") is None


# ------------------------------------------------------------------------------ RouterBench parser
RB_MODELS = ["gpt-4-1106-preview", "mistralai/mistral-7b-chat", "claude-v2"]


def _wide_records() -> list[dict[str, Any]]:
    """A small table in RouterBench's wide layout, as the hub's pickle holds it."""

    def mc(q: str, opts: list[str]) -> str:
        letters = "ABCD"
        body = "\n".join(f"{letters[i]}) {o}" for i, o in enumerate(opts))
        return repr(
            [
                f"Example?\nA) no\nB) yes\nAnswer:\nB\n\n{q}\n{body}\nPrint only a single choice. Answer:"
            ]
        )

    rows: list[tuple[str, str, str, list[tuple[float | None, str, float]]]] = [
        # gold B by vote (two models right, one wrong)
        (
            "arc.1",
            mc("Which is hot?", ["ice", "fire", "snow", "rain"]),
            "arc-challenge",
            [(1.0, "['B']", 0.01), (1.0, "['B\\n']", 0.0001), (0.0, "['A']", 0.008)],
        ),
        # nobody right: wrong letters A, C, D leave B by elimination
        (
            "arc.2",
            mc("Which is wet?", ["sand", "water", "dust", "ash"]),
            "arc-challenge",
            [(0.0, "['A']", 0.01), (0.0, "['C']", 0.0001), (0.0, "['D)']", 0.008)],
        ),
        # an empty score cell (counted as 0) and the repeated id
        (
            "arc.2",
            mc("Which is cold?", ["ice", "lava"]),
            "arc-challenge",
            [(None, "['A']", 0.01), (1.0, "['A']", 0.0001), (1.0, "['Ice']", 0.008)],
        ),
        # not multiple choice
        (
            "mbpp.1",
            repr(["Write a python function to add two numbers."]),
            "mbpp",
            [
                (1.0, "['def add(a, b):\\n    return a + b']", 0.02),
                (0.0, "['x']", 0.0002),
                (1.0, "['ok']", 0.01),
            ],
        ),
    ]
    out = []
    for sid, prompt, task, cells in rows:
        rec: dict[str, Any] = {"sample_id": sid, "prompt": prompt, "eval_name": task}
        for m, (s, _, _) in zip(RB_MODELS, cells, strict=True):
            rec[m] = s
        for m, (_, r, _) in zip(RB_MODELS, cells, strict=True):
            rec[f"{m}|model_response"] = r
        for m, (_, _, c) in zip(RB_MODELS, cells, strict=True):
            rec[f"{m}|total_cost"] = c
        rec["oracle_model_to_route_to"] = RB_MODELS[1]
        out.append(rec)
    return out


def _check_wide_table(t: OutcomeTable) -> None:
    assert t.queries == ["arc.1", "arc.2", "arc.2#2", "mbpp.1"]
    assert t.models == RB_MODELS
    assert t.lookup("arc.2#2", "gpt-4-1106-preview").score == 0.0  # empty cell → 0
    assert t.lookup("mbpp.1", "gpt-4-1106-preview").response == "def add(a, b):\n    return a + b"
    assert t.lookup("mbpp.1", "claude-v2").cost_usd == pytest.approx(0.01)
    assert t.query_row("mbpp.1").query == "Write a python function to add two numbers."
    assert t.query_row("arc.1").choices == ["ice", "fire", "snow", "rain"]
    assert [t.query_row(q).gold for q in t.queries] == ["B", "B", "A", None]
    gold = t.meta["gold"]
    assert (gold["by_vote"], gold["by_elimination"], gold["without_gold"], gold["conflicts"]) == (
        2,
        1,
        0,
        [],
    )
    assert gold["wrong_answers_with_gold_letter"] == 0
    assert t.meta["repeated_sample_ids"] == ["arc.2"]
    assert t.meta["missing_scores_filled"] == 1
    assert t.models_info["gpt-4-1106-preview"].input_price == 10.0
    assert not t.estimated_cost


def test_routerbench_hub_layout_parser_on_a_pickled_frame(tmp_path: Path) -> None:
    """The hub's routerbench_0shot.pkl is a pickled DataFrame; same parser, own small file."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(_wide_records())
    t = routerbench_from_frame(df)
    _check_wide_table(t)
    assert {q.split for q in t.query_rows} <= {"train", "test"}
    p = tmp_path / "routerbench_0shot.pkl"
    df.to_pickle(p)
    _check_wide_table(load_routerbench(p))
    _check_wide_table(load_outcomes(p))
    # A folder holding the hub file works too; the hash split keeps a subset.
    tr = load_routerbench(tmp_path, split="train")
    te = load_routerbench(tmp_path, split="test")
    assert sorted(tr.queries + te.queries) == sorted(t.queries)
    assert set(tr.queries).isdisjoint(te.queries)


def test_routerbench_wide_csv_and_missing_score_none(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    p = tmp_path / "mini_test.csv"
    pd.DataFrame(_wide_records()).to_csv(p)  # with pandas' unnamed index column, like the originals
    _check_wide_table(load_routerbench(p))
    _check_wide_table(load_routerbench(tmp_path, split="test"))
    t = load_routerbench(p, missing_score=None)
    assert math.isnan(t.score_matrix()[2, 0])
    with pytest.raises(UserError, match="no outcome recorded"):
        t.lookup("arc.2#2", "gpt-4-1106-preview")


def test_routerbench_bad_cells_and_layout(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    recs = _wide_records()
    recs[1]["claude-v2"] = "maybe"
    p = tmp_path / "bad.csv"
    pd.DataFrame(recs).to_csv(p, index=False)
    with pytest.raises(
        UserError,
        match=r"bad\.csv row 2: field 'claude-v2': expected a number in \[0, 1\] \(got 'maybe'\)",
    ):
        load_routerbench(p)
    p.write_text("id,question\n1,hi\n", encoding="utf-8")
    with pytest.raises(UserError, match="expected RouterBench's wide layout"):
        load_routerbench(p)
    with pytest.raises(UserError, match=r"no RouterBench files for split 'test'"):
        load_routerbench(tmp_path / ".." / tmp_path.name, split="test")


def test_routerbench_hub_offline_is_a_clear_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        UserError,
        match=r"could not download 'routerbench_0shot.pkl' from the Hugging Face dataset 'withmartian/routerbench'",
    ):
        load_routerbench_hub(cache_dir=tmp_path)


# ------------------------------------------------------------------------------ LLMRouter parser
def _llmrouter_dir(tmp_path: Path) -> Path:
    d = tmp_path / "llmrouter"
    d.mkdir()
    models = {
        "a": {"size": "7B", "feature": "model a", "input_price": 0.2, "output_price": 0.4},
        "b": {"size": "70B", "feature": "model b", "input_price": 0.9, "output_price": 0.9},
        "unused": {"size": "1B", "feature": "", "input_price": 1, "output_price": 1},
    }
    (d / "models.json").write_text(json.dumps(models), encoding="utf-8")
    train = [
        {"question": "x" * 40, "scores": {"a": 1.0, "b": 0.5}, "cluster_id": 0},
        {"question": "shared question", "scores": {"a": 0.0, "b": 1.0}, "cluster_id": 1},
    ]
    test = [
        {"question": "shared question", "scores": {"a": 0.0, "b": 1.0}},
        {"question": "only in test", "scores": {"a": 0.25, "b": 0.0}},
    ]
    (d / "outcomes_train.json").write_text(json.dumps(train), encoding="utf-8")
    (d / "outcomes_test.json").write_text(json.dumps(test), encoding="utf-8")
    qtrain = [
        {
            "task_name": "mmlu",
            "query": "x" * 40,
            "ground_truth": "B",
            "metric": "em_mc",
            "choices": "['p', 'q']",
            "task_id": None,
        },
        {
            "task_name": "gsm8k",
            "query": "shared question",
            "ground_truth": "7",
            "metric": "GSM8K",
            "choices": None,
            "task_id": None,
        },
    ]
    qtest = [
        qtrain[1],
        {
            "task_name": "openbook_qa",
            "query": "only in test",
            "ground_truth": "A",
            "metric": "em_mc",
            "choices": "{'text': ['yes', 'no'], 'label': ['A', 'B']}",
            "task_id": None,
        },
    ]
    (d / "queries_train.jsonl").write_text(
        "\n".join(json.dumps(q) for q in qtrain), encoding="utf-8"
    )
    (d / "queries_test.jsonl").write_text("\n".join(json.dumps(q) for q in qtest), encoding="utf-8")
    return d


def test_llmrouter_estimates_costs_and_flags_them(tmp_path: Path) -> None:
    d = _llmrouter_dir(tmp_path)
    t = load_llmrouter(d)
    assert t.models == ["a", "b"] and set(t.models_info) == {"a", "b"}
    assert t.estimated_cost and all(r.cost_estimated for r in t.rows())
    row = t.lookup("x" * 40, "a")
    # 40 chars / 4 = 10 input tokens; em_mc assumes 16 output tokens.
    assert (row.input_tokens, row.output_tokens) == (10, 16)
    assert row.cost_usd == pytest.approx((10 * 0.2 + 16 * 0.4) / 1e6)
    assert t.query_row("x" * 40).choices == ["p", "q"] and t.query_row("x" * 40).gold == "B"
    assert "estimated" in t.meta["cost_note"]
    test = load_llmrouter(d, split="test")
    assert test.query_texts == ["only in test"] and test.meta["dropped_overlap_with_train"] == 1
    assert test.query_row("only in test").choices == ["yes", "no"]
    assert load_llmrouter(d, split="test", drop_overlap=False).n_queries == 2
    # The same text has the same id in both splits.
    assert load_llmrouter(d, split="test", drop_overlap=False).queries[0] == t.queries[1]
    assert load_outcomes(d, split="test").n_queries == 1


def test_llmrouter_question_without_query_entry(tmp_path: Path) -> None:
    d = _llmrouter_dir(tmp_path)
    (d / "queries_train.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(
        UserError,
        match=r"outcomes_train\.json row 1: question 'xxxx.*has no entry in queries_train\.jsonl",
    ):
        load_llmrouter(d)
    with pytest.raises(
        UserError, match=r"split='dev' for LLMRouter: expected one of \['train', 'test'\]"
    ):
        load_llmrouter(d, split="dev")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ names
def test_load_outcomes_unknown_name_lists_known_ones() -> None:
    with pytest.raises(
        UserError, match=r"unknown outcome table 'routerbnch'.*'routerbench', 'routerbench:train'"
    ):
        load_outcomes("routerbnch")
    with pytest.raises(UserError, match=r"outcome file 'missing.jsonl' does not exist"):
        load_outcomes("missing.jsonl")
    with pytest.raises(UserError, match=r"names split 'test' but split='train'"):
        load_outcomes("llmrouter:test", split="train")


def test_load_outcomes_reads_files_in_the_format(tmp_path: Path) -> None:
    p = _table().write(tmp_path / "t.jsonl")
    assert load_outcomes(p).queries == ["q1", "q2", "q3"]
    assert load_outcomes(str(p), split="test").queries == ["q2"]


# ------------------------------------------------------------------------------ inspect + CLI
def test_inspect_oracle_and_best_model() -> None:
    r = inspect_table(_table())
    json.dumps(r)  # JSON-serialisable
    assert r["queries"] == 3 and r["rows"] == 8
    assert r["tasks"] == {"chat": 1, "code": 1, "math": 1}
    assert r["per_model"]["big"] == {
        "n": 3,
        "mean_score": pytest.approx(2.5 / 3),
        "total_cost": pytest.approx(0.06),
        "mean_cost": pytest.approx(0.02),
    }
    assert r["per_model"]["mid"]["n"] == 2
    # Oracle: q1 → small (cheapest at 1.0), q2 → mid (0.005 < 0.02), q3 → big (0.5 best).
    assert r["oracle"]["mean_score"] == pytest.approx(2.5 / 3)
    assert r["oracle"]["total_cost"] == pytest.approx(0.001 + 0.005 + 0.03)
    assert r["oracle"]["picks"] == {"small": 1, "mid": 1, "big": 1}
    assert r["best_model"]["model"] == "big"
    assert r["cheapest_model"]["model"] == "small"
    assert r["estimated_cost"] is True


def test_render_inspect_prints_tables() -> None:
    from rich.console import Console

    console = Console(record=True, width=140)
    render_inspect(inspect_table(_table()), console)
    text = console.export_text()
    assert "oracle" in text and "big" in text and "ESTIMATED" in text and "Queries per task" in text


def test_cli_inspect(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestra.outcomes.cli import data_app

    p = _table().write(tmp_path / "t.csv")
    runner = CliRunner()
    res = runner.invoke(data_app, ["inspect", str(p), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["best_model"]["model"] == "big" and report["queries"] == 3
    res = runner.invoke(data_app, ["inspect", str(p)])
    assert res.exit_code == 0 and "Per model" in res.stdout
    res = runner.invoke(data_app, ["inspect", "nonsense"])
    assert res.exit_code == 2
    assert "unknown outcome table 'nonsense'" in res.output

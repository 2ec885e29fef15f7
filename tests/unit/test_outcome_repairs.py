"""Outcome files with bad rows (strict by default, ``--clip-scores`` / ``--dedupe`` on request)
and ``orchestra data split``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from orchestra import UserError
from orchestra.outcomes import OutcomeTable, load_outcomes
from orchestra.outcomes.cli import data_app
from orchestra.outcomes.repairs import describe_repairs, outcome_repairs


def row(qid: str, model: str, score: Any, *, task: str = "t", text: str | None = None,
        cost: float = 0.01) -> dict[str, Any]:
    return {"query_id": qid, "query": text or f"question {qid}", "task": task, "model": model,
            "score": score, "cost_usd": cost}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    cols = list(rows[0])
    path.write_text(",".join(cols) + "\n" + "".join(
        ",".join(str(r[c]) for c in cols) + "\n" for r in rows), encoding="utf-8")
    return path


BAD = [row("q1", "a", 1.0), row("q1", "b", 1.7), row("q2", "a", -0.2), row("q2", "b", 0.5),
       row("q2", "b", 0.0),                      # the pair (q2, b) again
       row("q3", "a", 1.0), row("q3", "b", 0.0, task="u"),  # q3 under a second task
       row("q4", "a", 0.3), row("q4", "b", 0.6)]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_strict_by_default_and_each_error_names_its_flag(tmp_path: Path, fmt: str) -> None:
    write = write_jsonl if fmt == "jsonl" else write_csv
    scores = write(tmp_path / f"s.{fmt}", [row("q1", "a", 1.0), row("q1", "b", 1.7)])
    with pytest.raises(UserError) as e:
        load_outcomes(scores)
    assert "row 2" in str(e.value) and "1.7" in str(e.value) and "--clip-scores" in str(e.value)
    twice = write(tmp_path / f"d.{fmt}", [row("q1", "a", 1.0), row("q1", "a", 0.0)])
    with pytest.raises(UserError, match="appears twice.*--dedupe"):
        load_outcomes(twice)
    tasks = write(tmp_path / f"t.{fmt}", [row("q1", "a", 1.0), row("q1", "b", 0.0, task="u")])
    with pytest.raises(UserError, match="same task.*--dedupe"):
        load_outcomes(tasks)


def test_a_score_that_is_not_a_number_is_never_clipped(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [row("q1", "a", "abc")])
    with pytest.raises(UserError, match="'abc'") as e:
        load_outcomes(path, clip_scores=True)
    assert "--clip-scores" not in str(e.value)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_clip_and_dedupe_repair_and_count(tmp_path: Path, fmt: str) -> None:
    write = write_jsonl if fmt == "jsonl" else write_csv
    path = write(tmp_path / f"bad.{fmt}", BAD)
    table = load_outcomes(path, clip_scores=True, dedupe=True)
    rep = table.meta["repairs"]
    assert (rep["clipped_scores"], rep["duplicate_pairs"], rep["conflicting_rows"]) == (2, 1, 1)
    s = table.score_matrix()
    assert s[table.query_index("q1"), table.model_index("b")] == 1.0
    assert s[table.query_index("q2"), table.model_index("a")] == 0.0
    assert s[table.query_index("q2"), table.model_index("b")] == 0.5  # the first row kept
    assert np.isnan(s[table.query_index("q3"), table.model_index("b")])  # the conflict dropped
    assert table.query_row("q3").task == "t" and len(table) == 7
    line = describe_repairs(rep)
    assert line is not None and "clipped 2 score(s)" in line and "dropped 1 row(s)" in line


def test_one_repair_alone_leaves_the_other_strict(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", BAD)
    with pytest.raises(UserError, match="--dedupe"):
        load_outcomes(path, clip_scores=True)
    with pytest.raises(UserError, match="--clip-scores"):
        load_outcomes(path, dedupe=True)


def test_repairs_through_the_context_as_a_command_passes_them(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", BAD)
    with outcome_repairs(clip_scores=True, dedupe=True) as log:
        table = load_outcomes(path)
    assert len(table) == 7 and (log.clipped_scores, log.duplicate_pairs) == (2, 1)
    with pytest.raises(UserError):
        load_outcomes(path)  # outside the block: strict again


def test_repaired_table_round_trips(tmp_path: Path) -> None:
    table = load_outcomes(write_jsonl(tmp_path / "bad.jsonl", BAD), clip_scores=True, dedupe=True)
    back = OutcomeTable.read(table.write(tmp_path / "clean.jsonl"))
    np.testing.assert_array_equal(back.score_matrix(), table.score_matrix())
    assert back.meta["repairs"]["clipped_scores"] == 2  # provenance kept


def test_inspect_command_offers_the_flags(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", BAD)
    strict = CliRunner().invoke(data_app, ["inspect", str(path)])
    assert strict.exit_code == 2 and "--clip-scores" in " ".join(strict.output.split())
    ok = CliRunner().invoke(data_app, ["inspect", str(path), "--clip-scores", "--dedupe",
                                       "--json"])
    assert ok.exit_code == 0, ok.output
    assert "clipped 2 score(s)" in " ".join(ok.output.split())


# ---------------------------------------------------------------------- data split


def table_with_shared_prompts(n: int = 40) -> OutcomeTable:
    rows = []
    for i in range(n):
        task = "x" if i % 2 else "y"
        text = f"prompt {i // 2}" if i < 20 else f"prompt {i}"  # ten prompts under two ids each
        for m in ("a", "b"):
            rows.append(row(f"q{i}", m, float((i + len(m)) % 2), task=task, text=text))
    return OutcomeTable(rows)


def test_split_keeps_a_prompt_on_one_side_and_is_reproducible() -> None:
    table = table_with_shared_prompts()
    for seed in range(5):
        train, test = table.split(0.3, seed=seed)
        assert not set(train.query_texts) & set(test.query_texts)
        assert train.n_queries + test.n_queries == table.n_queries
        again = table.split(0.3, seed=seed)
        assert again[1].queries == test.queries


def test_split_with_unique_texts_is_the_per_query_draw() -> None:
    rows = [row(f"q{i}", "a", 1.0, task="xy"[i % 2]) for i in range(50)]
    table = OutcomeTable(rows)
    _, test = table.split(0.2, seed=3)
    rng = np.random.default_rng(3)  # the documented per-task, per-query draw
    tasks = np.array(table.query_tasks, dtype=object)
    expect = set()
    for t in table.tasks:
        g = np.flatnonzero(tasks == t)
        expect |= set(rng.permutation(g)[: round(len(g) * 0.2)].tolist())
    assert {table.query_index(q) for q in test.queries} == expect


def test_data_split_command_writes_labelled_files(tmp_path: Path) -> None:
    src = table_with_shared_prompts().write(tmp_path / "all.jsonl")
    a, b = tmp_path / "train.jsonl", tmp_path / "test.parquet"
    args = ["split", str(src), "--test-fraction", "0.25", "--seed", "7", "--out-train", str(a),
            "--out-test", str(b), "--json"]
    res = CliRunner().invoke(data_app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    train, test = load_outcomes(a, split="train"), load_outcomes(b, split="test")
    assert summary["train"]["queries"] == train.n_queries
    assert train.n_queries + test.n_queries == 40
    assert not set(train.query_texts) & set(test.query_texts)
    first = test.queries
    CliRunner().invoke(data_app, args)
    assert load_outcomes(b).queries == first  # same seed, same split
    with pytest.raises(UserError, match="unknown split"):
        load_outcomes(b, split="train")


def test_data_split_refuses_bad_input_naming_it(tmp_path: Path) -> None:
    src = table_with_shared_prompts().write(tmp_path / "all.jsonl")
    res = CliRunner().invoke(data_app, ["split", str(src), "--test-fraction", "1.5",
                                        "--out-train", "a.jsonl", "--out-test", "b.jsonl"])
    assert res.exit_code == 2 and "test_fraction=1.5" in " ".join(res.output.split())
    same = CliRunner().invoke(data_app, ["split", str(src), "--out-train", str(tmp_path / "x.jsonl"),
                                         "--out-test", str(tmp_path / "x.jsonl")])
    assert same.exit_code == 2 and "same file" in same.output


def test_a_file_without_splits_names_the_split_command(tmp_path: Path) -> None:
    src = table_with_shared_prompts().write(tmp_path / "all.jsonl")
    with pytest.raises(UserError) as e:
        load_outcomes(src, split="test")
    assert "orchestra data split" in str(e.value) and "use split()" not in str(e.value)


def test_eval_command_offers_the_flags(tmp_path: Path) -> None:
    from orchestra.cli import app

    rows = [row(f"q{i}", m, float(i % 2), cost=0.01 if m == "a" else 0.05)
            for i in range(12) for m in ("a", "b")]
    rows[1]["score"] = 1.4
    path = write_jsonl(tmp_path / "bad.jsonl", [*rows, dict(rows[2])])
    strict = CliRunner().invoke(app, ["eval", "--data", str(path), "--policy", "cheapest",
                                      "--quiet"])
    # `orchestra` (main) formats a UserError as one line, exit 2; the app itself raises it.
    assert isinstance(strict.exception, UserError) and "--clip-scores" in str(strict.exception)
    report = tmp_path / "r.json"
    ok = CliRunner().invoke(app, ["eval", "--data", str(path), "--policy", "cheapest", "--quiet",
                                  "--clip-scores", "--dedupe", "--json", str(report)])
    assert ok.exit_code == 0, ok.output
    text = " ".join(ok.output.split())
    assert "clipped 1 score(s)" in text and "dropped 1 row(s) repeating" in text
    assert json.loads(report.read_text())["data"]["n_queries"] == 12

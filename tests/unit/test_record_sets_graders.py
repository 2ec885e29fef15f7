"""Labelled sets (orchestra.record.sets) and answer graders (orchestra.record.graders).

Real questions from the shared QA sets where they are present (NQ, GSM8K), written files for
the other layouts, and a stand-in ``datasets`` module for ``hf:`` (the hub is unreachable here).
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from orchestra.errors import UserError
from orchestra.record.graders import (
    contains_match,
    exact_match,
    last_number,
    letter_match,
    number_match,
    resolve_grader,
    token_f1,
)
from orchestra.record.sets import LabelledItem, load_labelled, load_labelled_sets

# ---------------------------------------------------------------------- the shared sets


def test_nq_by_name_reads_question_and_alias_list(shared_data: Path) -> None:
    s = load_labelled("nq", limit=3)
    assert s.source.endswith("qa/nq_test.json")
    first = s.items[0]
    assert first.question == "when was the last time anyone was on the moon"
    assert first.gold == ("14 December 1972 UTC", "December 1972")
    assert first.task == "nq"
    assert first.grader == "em"
    assert first.choices is None
    # The id is a hash of the prompt: the same in every load and every file.
    want = "q" + hashlib.sha1(first.question.encode()).hexdigest()[:12]
    assert first.id == want
    assert [it.id for it in load_labelled("nq:test", limit=3).items] == [it.id for it in s.items]
    assert len(s.items) == 3


def test_gsm8k_by_name_keeps_the_number_after_the_hashes(shared_data: Path) -> None:
    items = load_labelled("gsm8k", limit=3).items
    assert [it.gold for it in items] == [("18",), ("3",), ("70000",)]  # "#### 70,000" style too
    assert {it.grader for it in items} == {"number"}
    assert {it.task for it in items} == {"gsm8k"}
    assert items[0].question.startswith("Janet’s ducks lay 16 eggs per day.")


def test_seeded_sample_is_reproducible_and_a_larger_limit_extends_it(shared_data: Path) -> None:
    a = [it.id for it in load_labelled("nq", seed=3, limit=5).items]
    b = [it.id for it in load_labelled("nq", seed=3, limit=8).items]
    first = [it.id for it in load_labelled("nq", limit=5).items]
    assert b[:5] == a
    assert a != first


def test_a_shared_name_without_data_dirs_says_where_it_looked(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.delenv("ORCHESTRA_SHARED_DATA", raising=False)
    monkeypatch.delenv("ORCHESTRA_DATA_DIR", raising=False)
    with pytest.raises(UserError, match="ORCHESTRA_SHARED_DATA"):
        load_labelled("gsm8k")


def test_unknown_name_lists_the_shared_sets() -> None:
    with pytest.raises(UserError, match=r"unknown labelled set 'trivia'.*'nq', 'gsm8k'"):
        load_labelled("trivia")
    with pytest.raises(UserError, match="does not exist"):
        load_labelled("no/such/file.jsonl")


# ---------------------------------------------------------------------- files of other layouts


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_with_usual_column_names_and_given_ids(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "mine_test.jsonl", [
        {"id": 7, "query": "Capital of France?", "ground_truth": "Paris", "task_name": "geo"},
        {"id": "b", "query": "2+2?", "ground_truth": 4},
    ])
    s = load_labelled(f)
    assert [it.id for it in s.items] == ["7", "b"]
    assert s.items[0] == LabelledItem(id="7", question="Capital of France?", gold=("Paris",),
                                      task="geo", grader="em")
    # No task column value: the file's name without its split suffix; a JSON number → number.
    assert (s.items[1].task, s.items[1].gold, s.items[1].grader) == ("mine", ("4",), "number")


def test_csv_with_named_columns_and_a_json_list_of_aliases(tmp_path: Path) -> None:
    f = tmp_path / "qs.csv"
    f.write_text('q,expected,kind\n"Who wrote Hamlet?","[""Shakespeare"", ""William '
                 'Shakespeare""]",lit\nHow many legs has a spider?,8,bio\n', encoding="utf-8")
    s = load_labelled(f, question="q", gold="expected", task="kind")
    assert s.items[0].gold == ("Shakespeare", "William Shakespeare")
    assert s.items[0].task == "lit"
    # A CSV cell is text: "8" is an alias, graded by exact match unless --grader says otherwise.
    assert (s.items[1].gold, s.items[1].grader) == (("8",), "em")
    with pytest.raises(UserError, match=r"no column 'answer' for the gold.*\['q', 'expected'"):
        load_labelled(f, question="q", gold="answer")
    with pytest.raises(UserError, match=r"no gold column.*--gold-col"):
        load_labelled(f, question="q")


def test_choices_become_a_letter_and_are_shown_in_the_prompt(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "mc.jsonl", [
        {"question": "Which is a fruit?", "choices": ["Carrot", "Apple", "Leek"], "answer": "B"},
        {"question": "Which is red?", "choices": ["Sky", "Blood"], "answer": 1},
        {"question": "Which swims?", "choices": ["Fish", "Cat"], "answer": "Fish"},
        {"question": "Pick one\nA) x\nB) y", "answer": "(B)"},
    ])
    items = load_labelled(f).items
    assert [it.gold for it in items] == [("B",), ("B",), ("A",), ("B",)]
    assert {it.grader for it in items} == {"letter"}
    assert items[0].prompt == "Which is a fruit?\n\nA) Carrot\nB) Apple\nC) Leek"
    assert items[3].choices == ("x", "y")
    assert items[3].prompt == items[3].question  # options already in the text
    bad = _jsonl(tmp_path / "bad.jsonl", [{"question": "Q?", "choices": ["a", "b"], "answer": 5}])
    with pytest.raises(UserError, match=r"bad.jsonl row 1: gold 5 is not one of the 2 options"):
        load_labelled(bad)


def test_rows_without_question_or_gold_are_named(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "x.jsonl", [{"question": "ok?", "answer": "yes"},
                                      {"question": "", "answer": "no"}])
    with pytest.raises(UserError, match=r"x.jsonl row 2: column 'question'"):
        load_labelled(f)
    g = _jsonl(tmp_path / "y.jsonl", [{"question": "ok?", "answer": []}])
    with pytest.raises(UserError, match=r"y.jsonl row 1: column 'answer': expected a gold"):
        load_labelled(g)


def test_repeated_questions_are_dropped_and_counted(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "d.jsonl", [{"question": "Q?", "answer": "a"},
                                      {"question": "Q?", "answer": "a"},
                                      {"question": "R?", "answer": "b"}])
    s = load_labelled(f)
    assert (len(s.items), s.duplicates) == (2, 1)


def test_one_id_for_two_questions_across_sets_is_refused(tmp_path: Path) -> None:
    a = _jsonl(tmp_path / "a.jsonl", [{"id": "1", "question": "Q?", "answer": "a"}])
    b = _jsonl(tmp_path / "b.jsonl", [{"id": "1", "question": "Other?", "answer": "b"}])
    with pytest.raises(UserError, match="question id '1' names different questions"):
        load_labelled_sets([a, b])


# ---------------------------------------------------------------------- hf:


def test_hf_without_datasets_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets → ImportError
    with pytest.raises(UserError, match=r"needs the Hugging Face 'datasets' package.*pip install"):
        load_labelled("hf:gsm8k:main:test")


def test_hf_rows_are_read_like_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    fake = types.ModuleType("datasets")

    def load_dataset(name: str, config: str | None, split: str) -> list[dict[str, Any]]:
        calls.append((name, config, split))
        return [{"question": "What is 3 + 4?", "answer": "3 + 4 = 7\n#### 7"}]

    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    items = load_labelled("hf:openai/gsm8k:main").items
    assert calls == [("openai/gsm8k", "main", "test")]
    assert (items[0].gold, items[0].grader, items[0].task) == (("7",), "number", "gsm8k")
    load_labelled("hf:openai/gsm8k:train")
    assert calls[-1] == ("openai/gsm8k", None, "train")


def test_hf_hub_unreachable_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("datasets")

    def load_dataset(*_: Any, **__: Any) -> Any:
        raise ConnectionError("Couldn't reach 'gsm8k' on the Hub (ConnectionError)")

    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(UserError, match="hub is unreachable"):
        load_labelled("hf:gsm8k")


# ---------------------------------------------------------------------- graders


NQ_MOON = ("14 December 1972 UTC", "December 1972")
NQ_HEAVY = ("Bobby Scott", "Bob Russell")


def test_exact_match_normalises_and_takes_any_alias() -> None:
    assert exact_match("December 1972", NQ_MOON) == 1.0
    assert exact_match("  The december, 1972. ", NQ_MOON) == 1.0
    assert exact_match("1972", NQ_MOON) == 0.0  # an answer SmolLM2 gave: not the whole alias
    assert exact_match("Bob Dylan", NQ_HEAVY) == 0.0
    assert exact_match(None, NQ_HEAVY) == 0.0


def test_contains_is_whole_words_of_an_alias() -> None:
    assert contains_match("It was in December 1972.", NQ_MOON) == 1.0
    assert contains_match("The song was written by Bob Russell", NQ_HEAVY) == 1.0
    assert contains_match("Bob Russells", NQ_HEAVY) == 0.0


def test_token_f1_is_the_best_alias() -> None:
    # "bobby scott and bob russell" vs "bobby scott": p = 2/5, r = 1 → 4/7.
    assert token_f1("Bobby Scott and Bob Russell", NQ_HEAVY) == pytest.approx(4 / 7)
    assert token_f1("December 1972", NQ_MOON) == 1.0
    assert token_f1("in 1972", NQ_MOON) == pytest.approx(2 * 0.5 * 0.5)  # vs "december 1972"
    assert token_f1("", NQ_MOON) == 0.0


def test_number_match_reads_the_last_number_like_gsm8k() -> None:
    assert number_match("She makes $18 every day.", ["18"]) == 1.0
    assert number_match("16 - 3 - 4 = 9 eggs; 9 * 2 = $18.00", ["18"]) == 1.0
    assert number_match("18.0", ["18"]) == 1.0
    assert number_match("The profit is $70,000.", ["70000"]) == 1.0
    assert number_match("It makes 18 dollars from 16 eggs", ["18"]) == 0.0  # the last is 16
    assert number_match("Janet has 16 eggs per day * 3 eggs per day = 48 eggs", ["18"]) == 0.0
    assert number_match("no number here", ["18"]) == 0.0
    assert number_match("It fell by -3 degrees", ["-3"]) == 1.0
    assert number_match("45%", ["45"]) == 1.0
    assert last_number("1, 2, 3,500") == 3500.0
    assert last_number("v2 of it") is None


def test_letter_match_uses_the_choice_extractor() -> None:
    opts = ("Kyle", "Sarah", "Logan")
    assert letter_match("The answer is (B)", ["B"], opts) == 1.0
    assert letter_match("B) Sarah", ["B"], opts) == 1.0
    assert letter_match("Sarah", ["B"], opts) == 1.0  # the option's text
    assert letter_match("I would pick (C) here", ["B"], opts) == 0.0
    assert letter_match("no idea", ["B"], opts) == 0.0


def test_auto_grades_each_item_by_its_sets_grader(shared_data: Path) -> None:
    [nq] = load_labelled("nq", limit=1).items
    [gsm] = load_labelled("gsm8k", limit=1).items
    auto = resolve_grader(None)
    assert auto("December 1972", nq) == 1.0
    assert auto("She makes $18 every day at the market.", gsm) == 1.0
    assert auto.name_for(nq) == "em" and auto.name_for(gsm) == "number"
    assert resolve_grader("contains")("It was December 1972", nq) == 1.0


def test_unknown_grader_lists_the_builtins() -> None:
    with pytest.raises(UserError, match=r"unknown grader 'exact'.*'em'.*module:function"):
        resolve_grader("exact")


# ---------------------------------------------------------------------- a user's function

_ITEM = LabelledItem(id="q1", question="Capital of France?", gold=("Paris", "paris, france"),
                     task="geo")


def test_a_users_function_by_module_and_by_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_grading.py").write_text(
        "def starts(answer, gold):\n"
        "    return any((answer or '').lower().startswith(g.lower()) for g in gold)\n"
        "def half(answer, gold, item=None):\n"
        "    return 0.5 if item.task == 'geo' else 0.0\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # found in the current folder, as from the command line
    g = resolve_grader("my_grading:starts")
    assert g("Paris is the capital", _ITEM) == 1.0
    assert g("Lyon", _ITEM) == 0.0
    assert resolve_grader(f"{tmp_path / 'my_grading.py'}:half")("x", _ITEM) == 0.5


def test_a_users_function_that_fails_is_named(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad_grading.py").write_text(
        "import json\n"
        "def too_big(answer, gold):\n    return 2\n"
        "def boom(answer, gold):\n    raise ValueError('no')\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"cannot import 'no_such_mod'"):
        resolve_grader("no_such_mod:f")
    with pytest.raises(UserError, match=r"has no 'nope'; expected a function, e.g. one of "
                                        r"\['boom', 'too_big'\]"):
        resolve_grader("bad_grading:nope")
    with pytest.raises(UserError, match=r"returned 2 for question 'q1'; expected a bool or a "
                                        r"number in \[0, 1\]"):
        resolve_grader("bad_grading:too_big").check(_ITEM)
    with pytest.raises(UserError, match=r"raised ValueError: no on question 'q1'"):
        resolve_grader("bad_grading:boom")("Paris", _ITEM)
    with pytest.raises(UserError, match=r"file 'nowhere/x.py' does not exist"):
        resolve_grader("nowhere/x.py:f")

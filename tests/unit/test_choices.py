"""The one choice extractor (orchestra/outcomes/choices.py) and its two users: gold derivation
(a known number of options) and the vote refiner / grader (``extract_short_answer``, options
unknown). RouterBench's own answer shapes are pinned in test_outcomes.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestra.outcomes import extract_choice_letter
from orchestra.refiners import extract_short_answer, vote

OPTIONS = ["Maria", "Sarah", "Kyle", "Logan"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("**B**", "B"),  # markdown emphasis is stripped
        ("`c`", "C"),
        ("The answer is: D", "D"),
        ("The correct option is C", "C"),
        ("My choice: (A)", "A"),
        ("answer: b", "B"),  # a lower-case stated label that ends the clause
        ("The answer is b.", "B"),
        ("The answer is a cat", None),  # the article, not a label
        ("answer is b because", None),
        ("I would pick (C) here", None),  # rule 6 is off by default
        ("Answer: F", None),  # beyond the 4 options
    ],
)
def test_known_number_of_options(response: str, expected: str | None) -> None:
    assert extract_choice_letter(response, 4, OPTIONS) == expected


def test_a_parenthesised_label_anywhere_only_when_asked() -> None:
    text = "Both look plausible, but I would pick (C) here."
    assert extract_choice_letter(text, 4) is None
    assert extract_choice_letter(text, 4, anywhere=True) == "C"
    # A label beyond the options is skipped, the next one is read.
    assert extract_choice_letter("not (F) but (B)", 4, anywhere=True) == "B"
    assert extract_choice_letter("not (F) nor (G)", 4, anywhere=True) is None


def test_unknown_number_of_options_reads_a_to_e_and_keeps_numbers() -> None:
    assert extract_choice_letter("E", None) == "E"
    assert extract_choice_letter("F", None) is None
    assert extract_choice_letter("2", None) is None  # a number is not taken for an option
    assert extract_choice_letter("2", 4) == "B"
    assert extract_choice_letter("Sarah", None, OPTIONS) == "B"  # the text still matches


@pytest.mark.parametrize(
    "answer",
    ["B", "(B)", "B.", "b", "**B**", "Answer: B", "The answer is (B).", "B) Sarah", "answer: b"],
)
def test_gold_derivation_and_the_vote_read_the_same_letter(answer: str) -> None:
    assert extract_choice_letter(answer, 4, OPTIONS) == "B"
    assert extract_short_answer(answer, "choice") == "B"
    assert extract_short_answer(answer) == "B"


def test_short_answer_modes_around_the_extractor() -> None:
    long_text = "Paris is the capital; (B) in the list says so, and it is right there."
    assert extract_short_answer(long_text, "choice") == "B"  # grading a choice question
    assert extract_short_answer(long_text) != "B"  # auto: a long answer stays free text
    assert extract_short_answer("so (B)") == "B"  # auto: a short one is read
    assert extract_short_answer("The answer is a cat") == "cat"
    assert extract_short_answer("2") == "2" and extract_short_answer("2", "choice") == ""
    assert extract_short_answer("nothing here", "choice") == ""


def test_the_vote_counts_letter_forms_together() -> None:
    idx, votes = vote(["**C**", "answer: c", "The answer is (C).", "A"])
    assert votes == {"C": 3, "A": 1} and idx == 0


def test_the_refiner_reads_letters_without_loading_the_outcome_tables() -> None:
    # orchestra.outcomes exports lazily: the vote (imported by every run) gets the extractor
    # without numpy, pandas or the loaders.
    code = (
        "import sys, orchestra.refiners\n"
        "heavy = [m for m in sys.modules if m in ('numpy', 'pandas')\n"
        "         or m.startswith('orchestra.outcomes.') and m != 'orchestra.outcomes.choices']\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_outcomes_name_resolves() -> None:
    from orchestra import outcomes

    for name in outcomes.__all__:
        assert getattr(outcomes, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = outcomes.nope  # type: ignore[attr-defined]

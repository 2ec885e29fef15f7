"""Multiple-choice questions: the options in a prompt, and the letter an answer picks.

:func:`extract_choice_letter` is the one place that reads a choice letter out of free text:
the RouterBench loaders derive gold letters with it (:mod:`orchestra.outcomes.gold`), and the
vote refiner and the evaluation harness read answers with it
(:func:`orchestra.refiners.extract_short_answer`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["extract_choice_letter", "parse_choices"]

#: Option labels, in order; a question has at most this many options.
_LETTERS = "ABCDEFGHIJ"
#: The labels read when the number of options is unknown (``n_choices=None``).
_UNKNOWN_N = 5

_CHOICE_LINE = re.compile(r"^\s*\(?([A-J])\)\s?(.*?)\s*$")
_BARE_LABEL = re.compile(r"\(?([A-Ja-j])\)?[.):]?")
_BARE_NUMBER = re.compile(r"\(?([1-9])\)?[.):]?")
# A stated label; a lower-case one only where it ends a clause ("answer: b", not "is a dog").
_STATED = re.compile(
    r"(?i:\b(?:answer|option|choice)\b(?:\s+is)?)\s*:?\s*\(?"
    r"(?:([A-J])\b|([a-j])(?=\)|[.,;:!]?$|[.,;:!]\s))"
)
_LEADING = re.compile(r"\(?([A-J])(?:[).:\]]|\s)")
_PARENTHESISED = re.compile(r"\(([A-J])\)")


def parse_choices(prompt: str) -> list[str] | None:
    """The options of the last multiple-choice question in a prompt, or None.

    Looks at the prompt's last paragraph (few-shot examples come before it) for lines
    ``A) text``, ``B) text``, ... in order; two or more make a multiple-choice question.

    Example:
        >>> parse_choices("Q?\\nA) Kyle\\nB) Logan\\nAnswer:")
        ['Kyle', 'Logan']
    """
    last = prompt.rstrip().rsplit("\n\n", 1)[-1]
    choices: list[str] = []
    for line in last.splitlines():
        m = _CHOICE_LINE.match(line)
        if m and _LETTERS.index(m.group(1)) == len(choices):
            choices.append(m.group(2))
    return choices if len(choices) >= 2 else None


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def extract_choice_letter(
    response: str | None,
    n_choices: int | None = 4,
    choices: Sequence[str] | None = None,
    *,
    match_text: bool = True,
    anywhere: bool = False,
) -> str | None:
    """The choice letter a free-text answer picks, or None when it cannot tell.

    Rules, first match wins (worked out on RouterBench's recorded answers); the answer is
    first stripped of white space, quotes and markdown emphasis (``**B**``):

    1. a bare label: ``B``, ``(B)``, ``B)``, ``B.``, ``b`` (a label beyond the options: None);
    2. a bare number 1..n when ``n_choices`` is known: ``2`` → ``B``;
    3. a stated label: ``Answer: B``, ``The answer is (B)``, ``the correct option is C``,
       ``answer: b`` (lower case only where it ends a clause: not ``the answer is a dog``);
    4. the text of one choice (``Sarah`` when ``B) Sarah``), ignoring case and punctuation;
    5. a label that starts the answer: ``B) Sarah``, ``D (``, ``A chart``;
    6. with ``anywhere``: a parenthesised label anywhere, ``I would pick (C) here``.

    Args:
        response: the answer text.
        n_choices: how many options the question had (letters beyond are ignored). None when
            unknown (the vote refiner reads answers of any question): labels A–E are read and a
            bare number is not taken for an option (it stays a number).
        choices: the option texts, for rule 4.
        match_text: apply rule 4. RouterBench's grader wants a label and marks an answer
            that only repeats the option text wrong, so gold derivation skips rule 4 when it
            reads the answers marked wrong.
        anywhere: apply rule 6. Grading a free-form answer to a known multiple-choice question
            wants it; gold derivation does not (a recorded answer that discusses several
            options is not read as picking one), nor does the vote on a long answer to a
            question that may not be multiple choice.
    """
    if not response:
        return None
    letters = _LETTERS[: _UNKNOWN_N if n_choices is None else max(1, min(n_choices, 10))]
    s = response.strip().strip("*_`'\" ").strip()
    if not s:
        return None
    m = _BARE_LABEL.fullmatch(s)
    if m:
        x = m.group(1).upper()
        return x if x in letters else None
    m = _BARE_NUMBER.fullmatch(s) if n_choices is not None else None
    if m:
        k = int(m.group(1))
        return letters[k - 1] if k <= len(letters) else None
    m = _STATED.search(s)
    if m and (m.group(1) or m.group(2).upper()) in letters:
        return m.group(1) or m.group(2).upper()
    if choices and match_text:
        ns = _norm(s)
        hits = [i for i, c in enumerate(choices) if _norm(c) and _norm(c) == ns]
        if len(hits) == 1 and hits[0] < len(letters):
            return letters[hits[0]]
    m = _LEADING.match(s)
    if m and m.group(1) in letters:
        return m.group(1)
    if anywhere:
        for m in _PARENTHESISED.finditer(s):
            if m.group(1) in letters:
                return m.group(1)
    return None

"""Gold letters of multiple-choice queries, derived from which models were marked correct.

RouterBench records each model's answer and whether it was graded correct, but not the gold
letter; :func:`_derive_gold` recovers it from the recorded grading (see there for the rules
and the checks it reports).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from orchestra.outcomes.choices import _LETTERS, extract_choice_letter
from orchestra.outcomes.rows import QueryRow


def _derive_gold(
    query_rows: list[QueryRow],
    score: np.ndarray,
    responses: np.ndarray,
    models: Sequence[str],
    recorded: np.ndarray | None = None,
) -> tuple[list[QueryRow], dict[str, Any]]:
    """Gold letters for multiple-choice queries from the recorded correctness.

    Votes: the letter extracted from the answer of every model marked correct (score 1).
    One letter → gold ("vote"). Different letters → no gold (a conflict, listed). No correct
    model: if the letters of the models marked wrong (read without rule 4 of
    :func:`extract_choice_letter`) cover all options but one, that one is gold
    ("elimination"). The check ``wrong_answers_with_gold_letter`` counts answers marked
    wrong whose letter equals the voted gold: 0 means the recorded grading and this extraction
    agree. Only recorded scores vote: ``recorded`` (same shape as ``score``) masks out cells
    whose score was filled in for an empty cell.
    """
    if recorded is None:
        recorded = ~np.isnan(score)
    out: list[QueryRow] = []
    stats: Counter[str] = Counter()
    conflicts: list[dict[str, Any]] = []
    per_task: dict[str, Counter[str]] = {}
    wrong_with_gold = 0
    for qi, q in enumerate(query_rows):
        if not q.choices or q.gold is not None:
            out.append(q)
            continue
        n = len(q.choices)
        tstats = per_task.setdefault(q.task, Counter())
        tstats["queries"] += 1
        right: Counter[str] = Counter()
        wrong: set[str] = set()
        letters_of: list[str | None] = []
        for mi in range(len(models)):
            sc = score[qi, mi]
            if not recorded[qi, mi]:
                letters_of.append(None)
                continue
            correct = sc >= 1.0
            letter = extract_choice_letter(responses[qi, mi], n, q.choices, match_text=correct)
            letters_of.append(letter)
            if letter is None:
                continue
            if correct:
                right[letter] += 1
            elif sc <= 0.0:
                wrong.add(letter)
        gold: str | None = None
        if len(right) == 1:
            gold = next(iter(right))
            tstats["vote"] += 1
            wrong_with_gold += sum(
                1 for mi, letter in enumerate(letters_of) if letter == gold and score[qi, mi] <= 0.0
            )
        elif len(right) > 1:
            tstats["conflict"] += 1
            conflicts.append({"query_id": q.query_id, "votes": dict(right)})
        else:
            left = [x for x in _LETTERS[:n] if x not in wrong]
            if len(left) == 1:
                gold = left[0]
                tstats["elimination"] += 1
            else:
                tstats["none"] += 1
        stats["with_gold"] += gold is not None
        out.append(q.model_copy(update={"gold": gold}) if gold is not None else q)
    report = {
        "method": "letter of the models marked correct; else elimination of wrong letters",
        "multiple_choice_queries": sum(t["queries"] for t in per_task.values()),
        "with_gold": stats["with_gold"],
        "by_vote": sum(t["vote"] for t in per_task.values()),
        "by_elimination": sum(t["elimination"] for t in per_task.values()),
        "without_gold": sum(t["none"] for t in per_task.values()),
        "conflicts": conflicts,
        "wrong_answers_with_gold_letter": wrong_with_gold,
        "per_task": {t: dict(c) for t, c in sorted(per_task.items())},
    }
    return out, report

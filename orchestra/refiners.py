"""Merging a round's outputs: majority vote over extracted short answers.

The LLM refiner (a model call) lives in :mod:`orchestra.nodes.refine`; the extraction and voting
here are pure functions, also used by the evaluation harness to grade short answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

__all__ = ["extract_short_answer", "normalize_answer", "vote"]

_CHOICE_PATTERNS = [
    re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*\(?\b([A-E])\b\)?", re.I),
    re.compile(r"^\s*\(?([A-E])\)?(?:[.):\s]|$)"),
    re.compile(r"\(([A-E])\)"),
]
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.I)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, squeeze spaces (SQuAD-style)."""
    t = text.lower()
    t = "".join(ch for ch in t if ch not in set(string.punctuation))
    t = _ARTICLES.sub(" ", t)
    return " ".join(t.split())


def extract_short_answer(text: str, kind: str = "auto") -> str:
    """The short answer in a model output, for voting and grading.

    Args:
        text: the output.
        kind: ``choice`` (a letter A–E), ``number`` (the last number), ``text`` (the first line,
            normalised) or ``auto`` (choice if the output starts with or states a letter, else a
            number for a numeric-looking answer line, else text).
    """
    s = text.strip()
    if not s:
        return ""
    if kind in ("choice", "auto"):
        for pat in _CHOICE_PATTERNS:
            m = pat.search(s)
            if m and (kind == "choice" or pat is not _CHOICE_PATTERNS[2] or len(s) < 40):
                return m.group(1).upper()
        if kind == "choice":
            return ""
    first = s.splitlines()[0]
    for marker in ("####", "answer is", "answer:"):
        idx = s.lower().rfind(marker)
        if idx >= 0:
            first = s[idx + len(marker):].strip().splitlines()[0] if s[idx + len(marker):].strip() else first
            break
    if kind == "number" or (kind == "auto" and _NUMBER.fullmatch(first.strip().rstrip(".").replace("$", ""))):
        nums = _NUMBER.findall(first) or _NUMBER.findall(s)
        return nums[-1].replace(",", "") if nums else ""
    return normalize_answer(first)


def vote(outputs: Sequence[str], *, kind: str = "auto",
         priority: Sequence[float] | None = None) -> tuple[int, dict[str, int]]:
    """Majority vote over extracted short answers.

    Args:
        outputs: the round's outputs (failed calls left out).
        kind: see :func:`extract_short_answer`.
        priority: a tie-break score per output (higher wins, e.g. a model's quality prior);
            ties beyond that go to the earliest output.

    Returns:
        The index of a representative output of the winning answer, and the vote counts.
    """
    if not outputs:
        raise ValueError("vote() needs at least one output")
    keys = [extract_short_answer(o, kind) for o in outputs]
    counts = Counter(k for k in keys if k)
    if not counts:
        return 0, {}
    top = max(counts.values())
    winners = {k for k, c in counts.items() if c == top}
    prio = list(priority) if priority is not None else [0.0] * len(outputs)
    best = max(
        (i for i, k in enumerate(keys) if k in winners),
        key=lambda i: (prio[i], -i),
    )
    return best, dict(counts)

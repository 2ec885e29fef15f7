"""Merging a round's outputs: majority vote over extracted short answers.

The LLM refiner (a model call) lives in :mod:`orchestra._nodes.refine`; the extraction and voting
here are pure functions, also used by the evaluation harness to grade short answers.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from orchestra.outcomes.choices import extract_choice_letter

__all__ = ["extract_short_answer", "normalize_answer", "vote"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)


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
            number for a numeric-looking answer line, else text). Letters are read by the one
            choice extractor, :func:`orchestra.outcomes.choices.extract_choice_letter`.
    """
    s = text.strip()
    if not s:
        return ""
    if kind in ("choice", "auto"):
        # The number of options is unknown here: letters A-E, a bare number stays a number. A
        # "(B)" inside a long free-text answer is only read as a choice when one is expected.
        letter = extract_choice_letter(s, None, anywhere=kind == "choice" or len(s) < 40)
        if letter is not None:
            return letter
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


def _agree(a: str, b: str) -> bool:
    """Whether two extracted answers agree: equal, or (free text) one is a run of whole words
    inside the other ("william shakespeare" and "hamlet by william shakespeare")."""
    if a == b:
        return True
    if _is_token(a) or _is_token(b):
        return False  # letters and numbers agree only when equal
    wa, wb = a.split(), b.split()
    short, long_ = (wa, wb) if len(wa) <= len(wb) else (wb, wa)
    return any(long_[i:i + len(short)] == short for i in range(len(long_) - len(short) + 1))


def _is_token(key: str) -> bool:
    """A choice letter or a number: compared exactly, never by containment."""
    return bool(re.fullmatch(r"[A-E]", key) or _NUMBER.fullmatch(key))


# Words that say nothing about a question's subject (for :func:`_on_topic`).
_FUNCTION_WORDS = frozenset({
    "a", "an", "the", "of", "in", "on", "at", "to", "is", "was", "were", "be", "been", "are",
    "am", "who", "whom", "whose", "what", "when", "where", "which", "why", "how", "many",
    "much", "does", "did", "do", "done", "by", "for", "and", "or", "with", "from", "as", "it",
    "its", "this", "that", "these", "those", "there", "their", "they", "he", "she", "his",
    "her", "him", "i", "you", "your", "we", "our", "me", "my", "not", "no", "yes",
})


ON_TOPIC_MAX_WORDS = 6
"""The on-topic tie-break of :func:`vote` considers answers of at most this many words."""


def _on_topic(key: str, query_words: frozenset[str], max_words: int | None) -> bool:
    """A short answer that names something the question is about and adds something of its own
    ("hamlet by william shakespeare" to "Who wrote Hamlet?"), as opposed to one that shares
    nothing with the question ("king lear": an answer to some other question) or only repeats it.
    """
    if _is_token(key) or (max_words is not None and len(key.split()) > max_words):
        return False
    words = set(key.split()) - _FUNCTION_WORDS
    return bool(words & query_words) and bool(words - query_words)


def vote(outputs: Sequence[str], *, kind: str = "auto",
         priority: Sequence[float] | None = None, query: str | None = None,
         topic_max_words: int | None = ON_TOPIC_MAX_WORDS) -> tuple[int, dict[str, int]]:
    """Majority vote over extracted short answers, agreeing answers counted together.

    Each output's short answer (:func:`extract_short_answer`) gets one vote from every output
    that agrees with it: the same answer, or, for free text, one contained in the other as whole
    words ("william shakespeare" agrees with "hamlet by william shakespeare"; letters and numbers
    agree only when equal). The most supported answer wins; among equally supported ones:

    1. an answer contained in another supported one (the common core of the agreement, the
       shorter form) over the one that contains it;
    2. with ``query``: a short free-text answer (at most ``topic_max_words`` words) on the
       question's topic (it shares a content word with the question and adds one of its own)
       over one that is not;
    3. the higher ``priority`` (e.g. the model's quality prior);
    4. the earliest output.

    Why, measured on the embedded pool (``benchmarks/local_defaults.py``, 300 NQ + GSM8K
    questions): two tiny models almost never say the same thing, so nearly every round is a tie,
    and the higher prior alone answered "Who wrote Hamlet?" with Gemma's "King Lear" over
    SmolLM2's "Hamlet by William Shakespeare". Rule 2 fixes that case at no measured cost; applied
    to answers of any length it lost exact matches (SmolLM2's long sentences repeat the question
    and won nearly every tie), hence the word limit.

    Args:
        outputs: the round's outputs (failed calls left out).
        kind: see :func:`extract_short_answer`.
        priority: a tie-break score per output (higher wins).
        query: the question, for the on-topic rule (``None``: no such rule).
        topic_max_words: the on-topic rule's word limit (``None``: any length).

    Returns:
        The index of a representative output of the winning answer, and the votes: per distinct
        short answer, how many outputs agree with it.
    """
    if not outputs:
        raise ValueError("vote() needs at least one output")
    keys = [extract_short_answer(o, kind) for o in outputs]
    distinct = list(dict.fromkeys(k for k in keys if k))
    if not distinct:
        return 0, {}
    support = {k: sum(1 for o in keys if o and _agree(k, o)) for k in distinct}
    top = max(support.values())
    winners = [k for k in distinct if support[k] == top]
    core = {k: any(k != w and _agree(k, w) and len(k.split()) < len(w.split()) for w in winners)
            for k in winners}
    qwords = frozenset(normalize_answer(query).split()) - _FUNCTION_WORDS if query else frozenset()
    topical = {k: _on_topic(k, qwords, topic_max_words) for k in winners}
    prio = list(priority) if priority is not None else [0.0] * len(outputs)
    best = max(
        (i for i, k in enumerate(keys) if k in support and support[k] == top),
        key=lambda i: (core[keys[i]], topical[keys[i]], prio[i], -i),
    )
    return best, support

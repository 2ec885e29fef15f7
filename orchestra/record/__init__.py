"""Recording outcomes on your own pool and labelled questions (``orchestra record``).

One job a module: labelled sets — questions with gold answers from the shared QA files, your
JSONL/CSV files or the Hugging Face hub (:mod:`~orchestra.record.sets`); answer graders
(:mod:`~orchestra.record.graders`); the outcome file being written, appended and resumed
(:mod:`~orchestra.record.files`); the recording itself, every (agent, model) of a pool
answering every question through the runtime under one hard budget
(:mod:`~orchestra.record.recorder`); and the command (:mod:`~orchestra.record.cli`).

Example:
    >>> from orchestra.record import load_labelled, record
    >>> items = load_labelled("nq", limit=20).items                      # doctest: +SKIP
    >>> summary = record("local", items, "outcomes.jsonl", budget_usd=0.01)  # doctest: +SKIP
    >>> summary.per_model["gemma3"]["accuracy"]                           # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover — imported on first use (see _LAZY)
    from orchestra.record.graders import GRADERS, Grader, resolve_grader
    from orchestra.record.recorder import (
        Pair,
        RecordProgress,
        RecordSummary,
        arecord,
        choose_pairs,
        record,
    )
    from orchestra.record.sets import SHARED_SETS, LabelledItem, LabelledSet, load_labelled

__all__ = [
    "GRADERS",
    "SHARED_SETS",
    "Grader",
    "LabelledItem",
    "LabelledSet",
    "Pair",
    "RecordProgress",
    "RecordSummary",
    "arecord",
    "choose_pairs",
    "load_labelled",
    "record",
    "resolve_grader",
]

# Where each name lives: loading a set or a grader does not import the runtime.
_LAZY = {
    **dict.fromkeys(["GRADERS", "Grader", "resolve_grader"], "orchestra.record.graders"),
    **dict.fromkeys(["Pair", "RecordProgress", "RecordSummary", "arecord", "choose_pairs",
                     "record"], "orchestra.record.recorder"),
    **dict.fromkeys(["SHARED_SETS", "LabelledItem", "LabelledSet", "load_labelled"],
                    "orchestra.record.sets"),
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'orchestra.record' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

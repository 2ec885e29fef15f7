"""Recorded outcome tables: per-query, per-model score and cost, with loaders and summaries.

One job a module: the rows (:mod:`~orchestra.outcomes.rows`, the format), the in-memory table
(:mod:`~orchestra.outcomes.table`, over the arrays of :mod:`~orchestra.outcomes.columns`, cut
by :mod:`~orchestra.outcomes.subsets`), its files (:mod:`~orchestra.outcomes.table_io`), the
data folders (:mod:`~orchestra.outcomes.datadirs`), multiple-choice parsing and the one choice
extractor (:mod:`~orchestra.outcomes.choices`), gold letters (:mod:`~orchestra.outcomes.gold`),
RouterBench (:mod:`~orchestra.outcomes.routerbench`, layout in
:mod:`~orchestra.outcomes.routerbench_wide`), LLMRouter (:mod:`~orchestra.outcomes.llmrouter`),
and loading by name or path (:mod:`~orchestra.outcomes.loaders`).

Example:
    >>> from orchestra.outcomes import load_outcomes, inspect_table
    >>> table = load_outcomes("routerbench:test")          # doctest: +SKIP
    >>> table.score_matrix().shape                          # doctest: +SKIP
    (953, 11)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover — the names are imported on first use (see _LAZY)
    from orchestra.outcomes.choices import extract_choice_letter, parse_choices
    from orchestra.outcomes.datadirs import data_dirs
    from orchestra.outcomes.inspect import inspect_table, oracle_choice, render_inspect
    from orchestra.outcomes.llmrouter import LLMROUTER_OUTPUT_TOKENS, load_llmrouter
    from orchestra.outcomes.loaders import KNOWN_NAMES, load_outcomes
    from orchestra.outcomes.routerbench import (
        load_routerbench,
        load_routerbench_hub,
        routerbench_from_frame,
    )
    from orchestra.outcomes.routerbench_wide import ROUTERBENCH_MODELS
    from orchestra.outcomes.rows import ModelInfo, OutcomeLookupError, OutcomeRow, QueryRow
    from orchestra.outcomes.table import OutcomeTable

__all__ = [
    "KNOWN_NAMES",
    "LLMROUTER_OUTPUT_TOKENS",
    "ROUTERBENCH_MODELS",
    "ModelInfo",
    "OutcomeLookupError",
    "OutcomeRow",
    "OutcomeTable",
    "QueryRow",
    "data_dirs",
    "extract_choice_letter",
    "inspect_table",
    "load_llmrouter",
    "load_outcomes",
    "load_routerbench",
    "load_routerbench_hub",
    "oracle_choice",
    "parse_choices",
    "render_inspect",
    "routerbench_from_frame",
]

# Where each name lives. Imported on first use, so that a light module (the vote refiner reads
# choice letters with orchestra.outcomes.choices) does not pull numpy and every loader in.
_LAZY = {
    **dict.fromkeys(["extract_choice_letter", "parse_choices"], "orchestra.outcomes.choices"),
    "data_dirs": "orchestra.outcomes.datadirs",
    **dict.fromkeys(
        ["inspect_table", "oracle_choice", "render_inspect"], "orchestra.outcomes.inspect"
    ),
    **dict.fromkeys(["LLMROUTER_OUTPUT_TOKENS", "load_llmrouter"], "orchestra.outcomes.llmrouter"),
    **dict.fromkeys(["KNOWN_NAMES", "load_outcomes"], "orchestra.outcomes.loaders"),
    **dict.fromkeys(
        ["load_routerbench", "load_routerbench_hub", "routerbench_from_frame"],
        "orchestra.outcomes.routerbench",
    ),
    "ROUTERBENCH_MODELS": "orchestra.outcomes.routerbench_wide",
    **dict.fromkeys(
        ["ModelInfo", "OutcomeLookupError", "OutcomeRow", "QueryRow"], "orchestra.outcomes.rows"
    ),
    "OutcomeTable": "orchestra.outcomes.table",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'orchestra.outcomes' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

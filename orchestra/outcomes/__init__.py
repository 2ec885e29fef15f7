"""Recorded outcome tables: per-query, per-model score and cost, with loaders and summaries.

The format is documented in :mod:`orchestra.outcomes.table`; loaders for RouterBench,
LLMRouter and files already in the format live in :mod:`orchestra.outcomes.loaders`.

Example:
    >>> from orchestra.outcomes import load_outcomes, inspect_table
    >>> table = load_outcomes("routerbench:test")          # doctest: +SKIP
    >>> table.score_matrix().shape                          # doctest: +SKIP
    (953, 11)
"""

from __future__ import annotations

from orchestra.outcomes.inspect import inspect_table, oracle_choice, render_inspect
from orchestra.outcomes.loaders import (
    KNOWN_NAMES,
    LLMROUTER_OUTPUT_TOKENS,
    ROUTERBENCH_MODELS,
    data_dirs,
    extract_choice_letter,
    load_llmrouter,
    load_outcomes,
    load_routerbench,
    load_routerbench_hub,
    parse_choices,
    routerbench_from_frame,
)
from orchestra.outcomes.table import (
    ModelInfo,
    OutcomeLookupError,
    OutcomeRow,
    OutcomeTable,
    QueryRow,
)

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

"""Load an outcome table by name or path: the dispatch over every source.

- :func:`load_outcomes`: a name (``routerbench``, ``routerbench:test``, ``llmrouter``,
  ``llmrouter:test``, ...) or any path (a file in the outcome format, a wide RouterBench file,
  or a folder of either benchmark).
- The sources: :func:`~orchestra.outcomes.load_routerbench` (:mod:`orchestra.outcomes.routerbench`),
  :func:`~orchestra.outcomes.load_llmrouter` (:mod:`orchestra.outcomes.llmrouter`) and
  :meth:`OutcomeTable.read <orchestra.outcomes.OutcomeTable.read>` (:mod:`orchestra.outcomes.table_io`).

Named data is looked for in ``$ORCHESTRA_DATA_DIR``, then ``$ORCHESTRA_SHARED_DATA`` (see
:func:`~orchestra.outcomes.data_dirs`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from orchestra.errors import UserError
from orchestra.outcomes.choices import extract_choice_letter, parse_choices
from orchestra.outcomes.datadirs import _check_split, data_dirs, find_data_dir
from orchestra.outcomes.llmrouter import (
    CHARS_PER_TOKEN,
    LLMROUTER_DEFAULT_OUTPUT_TOKENS,
    LLMROUTER_OUTPUT_TOKENS,
    load_llmrouter,
)
from orchestra.outcomes.routerbench import (
    ROUTERBENCH_HUB_FILE,
    ROUTERBENCH_HUB_REPO,
    _split_files,
    load_routerbench,
    load_routerbench_hub,
    routerbench_from_frame,
)
from orchestra.outcomes.routerbench_wide import _COST, ROUTERBENCH_MODELS
from orchestra.outcomes.table import OutcomeTable
from orchestra.outcomes.table_io import SUFFIXES

# This module once held every loader; the names it exported stay importable from here (they
# live in the modules imported above). New code imports them from ``orchestra.outcomes``.
__all__ = [
    "CHARS_PER_TOKEN",
    "KNOWN_NAMES",
    "LLMROUTER_DEFAULT_OUTPUT_TOKENS",
    "LLMROUTER_OUTPUT_TOKENS",
    "ROUTERBENCH_HUB_FILE",
    "ROUTERBENCH_HUB_REPO",
    "ROUTERBENCH_MODELS",
    "data_dirs",
    "extract_choice_letter",
    "find_data_dir",
    "load_llmrouter",
    "load_outcomes",
    "load_routerbench",
    "load_routerbench_hub",
    "parse_choices",
    "routerbench_from_frame",
]


#: Names :func:`load_outcomes` resolves. A bare name is its "train" split.
KNOWN_NAMES = (
    "routerbench",
    "routerbench:train",
    "routerbench:test",
    "routerbench:all",
    "llmrouter",
    "llmrouter:train",
    "llmrouter:test",
)

_NAME = re.compile(r"^(routerbench|llmrouter)(?::([A-Za-z]+))?$")


def _is_wide_csv(path: Path) -> bool:
    with path.open(encoding="utf-8", newline="") as f:
        header = f.readline()
    return "sample_id" in header and _COST in header


def load_outcomes(name_or_path: str | Path, *, split: str | None = None,
                  clip_scores: bool | None = None, dedupe: bool | None = None) -> OutcomeTable:
    """Load an outcome table by name or from a path.

    Names (:data:`KNOWN_NAMES`): ``routerbench[:train|test|all]`` — the ``routerbench``
    folder of the data dirs, else the Hugging Face hub; ``llmrouter[:train|test]`` — the
    ``llmrouter`` folder of the data dirs. A bare name is its train split.

    Paths: a ``.jsonl`` / ``.csv`` / ``.parquet`` file in the outcome format
    (:meth:`OutcomeTable.read`); a wide RouterBench ``.csv`` / ``.pkl``; a folder holding
    LLMRouter's files or RouterBench's split CSVs.

    Args:
        name_or_path: a known name or a path.
        split: the split, for names without one and for folders; for an outcome file, keeps
            the queries of that split.
        clip_scores / dedupe: repairs of an outcome-format file's bad rows (see
            :mod:`orchestra.outcomes.repairs`; counted in ``meta["repairs"]``); ``None``: as the
            enclosing :func:`~orchestra.outcomes.repairs.outcome_repairs` says, else strict.
            The benchmarks' own files are checked by their loaders and never repaired.

    Raises:
        UserError: an unknown name (the known ones are listed), a path that does not exist,
            or a split that the source does not have.
    """
    text = str(name_or_path)
    m = _NAME.match(text) if not isinstance(name_or_path, Path) else None
    if m:
        kind, named_split = m.group(1), m.group(2)
        if named_split and split and named_split != split:
            raise UserError(
                f"{text!r} names split {named_split!r} but split={split!r} was given; expected "
                "one of them, or both equal"
            )
        s = named_split or split or "train"
        if kind == "routerbench":
            return load_routerbench(None, split=_check_split(s, ("train", "test", "all"), text))
        return load_llmrouter(None, split=_check_split(s, ("train", "test"), text))
    p = Path(name_or_path)
    if p.is_dir():
        if list(p.glob("outcomes_*.json")):
            return load_llmrouter(
                p, split=_check_split(split or "train", ("train", "test"), str(p))
            )
        if (
            _split_files(p, "train")
            or _split_files(p, "test")
            or (p / ROUTERBENCH_HUB_FILE).is_file()
        ):
            s = _check_split(split or "train", ("train", "test", "all"), str(p))
            return load_routerbench(p, split=s)
        raise UserError(
            f"folder {text!r} holds no known benchmark files; expected LLMRouter's "
            "outcomes_{train,test}.json or RouterBench's '*_{train,test}.csv'"
        )
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".pkl" or (suffix == ".csv" and _is_wide_csv(p)):
            table = load_routerbench(p)
        elif suffix in SUFFIXES:
            table = OutcomeTable.read(p, clip_scores=clip_scores, dedupe=dedupe)
        else:
            raise UserError(
                f"cannot load {text!r}: expected a suffix among {[*SUFFIXES, '.pkl']!r} (got {suffix!r})"
            )
        if split is not None:
            table = table.filter(splits=[split])
        return table
    looks_like_path = p.suffix != "" or os.sep in text or "/" in text
    if looks_like_path:
        raise UserError(
            f"outcome file {text!r} does not exist; expected an existing file or folder"
        )
    raise UserError(
        f"unknown outcome table {text!r}: expected one of {list(KNOWN_NAMES)!r} or a path to a "
        f"{'/'.join(SUFFIXES)} file or a benchmark folder"
    )

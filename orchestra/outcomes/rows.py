"""The records of an outcome table: one row per (query, model), the query table, model infos.

One **row** per (query, model) pair that was recorded (:class:`OutcomeRow`)::

    query_id        str    unique id of the query (stable across files)
    query           str    the prompt text the model saw
    task            str    benchmark / task name ("arc-challenge", "mbpp", ...)
    model           str    model name
    score           float  quality in [0, 1] (1 = correct)
    cost_usd        float  USD spent on that call, >= 0
    latency_s       float  optional, seconds
    input_tokens    int    optional
    output_tokens   int    optional
    response        str    optional, the recorded answer text
    cost_estimated  bool   True when cost_usd was estimated, not recorded (default False)

Rows of one query must agree on ``query`` and ``task``; a (query_id, model) pair appears at
most once. Per-query facts that do not depend on the model live in a query table
(:class:`QueryRow`: gold answer, choices, split) and per-model facts in :class:`ModelInfo`.
Asking a table for a query, model or pair it does not hold raises :class:`OutcomeLookupError`.

The validation helpers here turn pydantic's errors into one line that names the source, the
row, the field, what was expected and what was found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from orchestra.errors import UserError

__all__ = ["ModelInfo", "OutcomeLookupError", "OutcomeRow", "QueryRow"]


class OutcomeRow(BaseModel):
    """One recorded (query, model) outcome. See the module docstring for the format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query_id: str = Field(min_length=1)
    query: str
    task: str = Field(min_length=1)
    model: str = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    cost_usd: float = Field(ge=0.0, allow_inf_nan=False)
    latency_s: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    response: str | None = None
    cost_estimated: bool = False


class QueryRow(BaseModel):
    """One query of a table: its text, task and model-independent facts.

    Attributes:
        query_id: unique id of the query.
        query: the prompt text.
        task: benchmark / task name.
        gold: the reference answer when known (for multiple choice, the letter).
        choices: the answer options of a multiple-choice query (texts, in letter order).
        split: the split the query belongs to ("train", "test", ...), when known.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    query_id: str = Field(min_length=1)
    query: str
    task: str = Field(min_length=1)
    gold: str | None = None
    choices: list[str] | None = None
    split: str | None = None


class ModelInfo(BaseModel):
    """What is known about a model of the table.

    Attributes:
        name: the model name used in the rows.
        description: prose description (may be empty).
        input_price: USD per 1M input tokens, None when unknown.
        output_price: USD per 1M output tokens, None when unknown.
        size: parameter count as written by the source ("7B"), None when unknown.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    input_price: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    output_price: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    size: str | None = None


class OutcomeLookupError(UserError, KeyError):
    """An unknown query, model or (query, model) pair was asked for.

    A :class:`~orchestra.errors.UserError` that is also a :class:`KeyError`, so ``except
    KeyError`` works as for a mapping.
    """

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


_Entry = TypeVar("_Entry", QueryRow, ModelInfo)

# Appended to strict errors that an opt-in repair (orchestra.outcomes.repairs) would fix.
CLIP_HINT = ("; fix the row, or clip scores into [0, 1] with --clip-scores "
             "(clip_scores=True in Python)")
DEDUPE_HINT = ("; or drop the repeated and conflicting rows (the first row of each query id "
               "and pair is kept) with --dedupe (dedupe=True in Python)")

_ROWS_ADAPTER: TypeAdapter[list[OutcomeRow]] = TypeAdapter(list[OutcomeRow])

#: The row fields, in file column order.
_FIELDS = tuple(OutcomeRow.model_fields)
_REQUIRED = tuple(n for n, f in OutcomeRow.model_fields.items() if f.is_required())

# What each field must hold, for "expected X (got Y)" messages.
_EXPECTED: dict[str, str] = {
    "query_id": "a non-empty string",
    "query": "a string",
    "task": "a non-empty string",
    "model": "a non-empty string",
    "score": "a number in [0, 1]",
    "cost_usd": "a number >= 0 (USD)",
    "latency_s": "a number >= 0 (seconds) or empty",
    "input_tokens": "an integer >= 0 or empty",
    "output_tokens": "an integer >= 0 or empty",
    "response": "a string or empty",
    "cost_estimated": "true or false",
}


def _validate_rows(
    records: Sequence[Any], source: str, row_numbers: Sequence[int] | None = None
) -> list[OutcomeRow]:
    """Validate row records (mappings or rows) into :class:`OutcomeRow` s.

    Raises:
        UserError: the first bad row, as ``<source> row N: field 'f': expected X (got Y)``
            (N from ``row_numbers`` when given, else the 1-based position).
    """
    try:
        return _ROWS_ADAPTER.validate_python(
            [r.model_dump() if isinstance(r, OutcomeRow) else r for r in records]
        )
    except ValidationError as err:
        raise _row_error(err, source, row_numbers) from None


def _row_error(err: ValidationError, source: str, row_numbers: Sequence[int] | None) -> UserError:
    """The first problem of a list validation as ``<file> row N: field 'f': expected X (got Y)``."""
    e = err.errors()[0]
    loc = e.get("loc", ())
    index = loc[0] if loc and isinstance(loc[0], int) else None
    field = str(loc[1]) if len(loc) > 1 else None
    row = (
        (row_numbers[index] if row_numbers is not None else index + 1) if index is not None else "?"
    )
    where = f"{source} row {row}"
    if e["type"] == "missing":
        msg = f"{where}: field {field!r} is missing; every row needs {', '.join(_REQUIRED)}"
    elif e["type"] == "extra_forbidden":
        msg = (
            f"{where}: unknown field {field!r} (got {e.get('input')!r}); expected only "
            f"{', '.join(_FIELDS)} — rename or drop the column"
        )
    elif field is None:
        msg = f"{where}: expected an object with the outcome fields (got {e.get('input')!r})"
    else:
        expected = _EXPECTED.get(field, e["msg"])
        msg = f"{where}: field {field!r}: expected {expected} (got {e.get('input')!r})"
        if field == "score" and e["type"] in ("greater_than_equal", "less_than_equal"):
            msg += CLIP_HINT
    total = err.error_count()
    if total > 1:
        msg += f" [and {total - 1} more problem(s)]"
    return UserError(msg)


def _validate_query(q: QueryRow | Mapping[str, Any], source: str) -> QueryRow:
    """A query table entry as a :class:`QueryRow`; a bad one names its query id and field."""
    if isinstance(q, QueryRow):
        return q
    return _validate_entry(QueryRow, q, f"{source}: query table entry {dict(q).get('query_id')!r}")


def _validate_model_info(name: str, info: ModelInfo | Mapping[str, Any], source: str) -> ModelInfo:
    """A model's info as a :class:`ModelInfo` named ``name``; a bad one names the model and field."""
    if isinstance(info, ModelInfo):
        return info
    return _validate_entry(
        ModelInfo, {"name": name, **dict(info)}, f"{source}: model info for {name!r}"
    )


def _validate_entry(kind: type[_Entry], value: Mapping[str, Any], where: str) -> _Entry:
    try:
        return kind.model_validate(value)
    except ValidationError as err:
        e = err.errors()[0]
        raise UserError(
            f"{where}: field {'.'.join(map(str, e['loc']))!r}: {e['msg']} (got {e.get('input')!r})"
        ) from None

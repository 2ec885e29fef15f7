"""Recorded outcome tables: how well, and at what cost, each model answered each query.

The format
==========
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

Files: ``.jsonl`` (one row a line), ``.csv`` (one row a line, a header; empty cell = absent)
and ``.parquet``. The format is picked from the suffix. Table-level metadata (the query table,
the model infos, free-form notes) is optional and stored where each format has room for it:

- JSONL: a first line ``{"_table": {...}}``;
- Parquet: the schema metadata key ``orchestra.outcomes``;
- CSV: a sidecar ``<file>.meta.json`` beside the CSV.

The metadata object is ``{"version": 1, "queries": [QueryRow...], "models": {name:
ModelInfo}, "meta": {...}}``. A file of bare rows is a valid table.

In memory, :class:`OutcomeTable` keeps dense (n_queries, n_models) numpy arrays (NaN where a
pair was not recorded) with a query index and a model index, so a 1,000 × 11 table loads and
slices in milliseconds.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from orchestra.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from numpy.typing import ArrayLike, NDArray

__all__ = [
    "FORMAT_VERSION",
    "SUFFIXES",
    "ModelInfo",
    "OutcomeLookupError",
    "OutcomeRow",
    "OutcomeTable",
    "QueryRow",
]

#: Version of the table-level metadata written beside the rows.
FORMAT_VERSION = 1
#: File suffixes :meth:`OutcomeTable.read` and :meth:`OutcomeTable.write` understand.
SUFFIXES = (".jsonl", ".csv", ".parquet")

_META_KEY = "orchestra.outcomes"
_JSONL_META = "_table"


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


_ROWS_ADAPTER: TypeAdapter[list[OutcomeRow]] = TypeAdapter(list[OutcomeRow])

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
_FIELDS = tuple(OutcomeRow.model_fields)
_OPTIONAL_NUMERIC = ("latency_s", "input_tokens", "output_tokens")


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
    total = err.error_count()
    if total > 1:
        msg += f" [and {total - 1} more problem(s)]"
    return UserError(msg)


_REQUIRED = tuple(n for n, f in OutcomeRow.model_fields.items() if f.is_required())


class OutcomeTable:
    """Per-query, per-model outcomes (score and cost), with the query table and model infos.

    Build one from rows (validated), from dense columns (:meth:`from_columns`, what loaders
    use), or from a file (:meth:`read`). Query order and model order are the row and column
    order of :meth:`score_matrix` and :meth:`cost_matrix`.

    Args:
        rows: outcome rows, as :class:`OutcomeRow` or mappings with the same fields.
        queries: the query table; queries missing from it are derived from the rows. A query
            listed here without any row is kept (its matrix row is all NaN).
        models_info: per-model information, keyed by model name (names not in the rows are
            dropped).
        meta: free-form provenance and notes (JSON-serialisable), kept through filters and
            written with the table.
        source: a name for messages (a file name).

    Raises:
        UserError: a row is invalid, a (query, model) pair repeats, or rows of one query
            disagree on its text or task.
    """

    __slots__ = (
        "_cost",
        "_estimated",
        "_in_tok",
        "_latency",
        "_mindex",
        "_models",
        "_models_info",
        "_out_tok",
        "_qindex",
        "_query_ids",
        "_query_rows",
        "_response",
        "_score",
        "_tasks",
        "_text_index",
        "meta",
    )

    def __init__(
        self,
        rows: Iterable[OutcomeRow | Mapping[str, Any]] = (),
        *,
        queries: Iterable[QueryRow | Mapping[str, Any]] | None = None,
        models_info: Mapping[str, ModelInfo | Mapping[str, Any]] | None = None,
        meta: Mapping[str, Any] | None = None,
        source: str = "rows",
    ) -> None:
        raw = list(rows)
        checked: list[OutcomeRow]
        if all(isinstance(r, OutcomeRow) for r in raw):
            checked = [r for r in raw if isinstance(r, OutcomeRow)]
        else:
            try:
                checked = _ROWS_ADAPTER.validate_python(
                    [r.model_dump() if isinstance(r, OutcomeRow) else r for r in raw]
                )
            except ValidationError as err:
                raise _row_error(err, source, None) from None
        self._build(checked, queries, models_info, meta, source)

    # ------------------------------------------------------------------ construction
    def _build(
        self,
        rows: Sequence[OutcomeRow],
        queries: Iterable[QueryRow | Mapping[str, Any]] | None,
        models_info: Mapping[str, ModelInfo | Mapping[str, Any]] | None,
        meta: Mapping[str, Any] | None,
        source: str,
        row_numbers: Sequence[int] | None = None,
    ) -> None:
        qrows: dict[str, QueryRow] = {}
        for q in queries or ():
            qr = q if isinstance(q, QueryRow) else _validate_query(q, source)
            if qr.query_id in qrows:
                raise UserError(
                    f"{source}: query id {qr.query_id!r} is listed twice in the query table; "
                    "expected unique query ids"
                )
            qrows[qr.query_id] = qr
        models: dict[str, int] = {}
        for r in rows:
            if r.model not in models:
                models[r.model] = len(models)
        # Queries first seen in the rows get a QueryRow derived from the first row.
        seen_text: dict[str, tuple[str, str, int]] = {}
        for i, r in enumerate(rows):
            prev = seen_text.get(r.query_id)
            rownum = row_numbers[i] if row_numbers is not None else i + 1
            if prev is None:
                seen_text[r.query_id] = (r.query, r.task, rownum)
                if r.query_id not in qrows:
                    qrows[r.query_id] = QueryRow(query_id=r.query_id, query=r.query, task=r.task)
            elif prev[0] != r.query or prev[1] != r.task:
                field = "query" if prev[0] != r.query else "task"
                raise UserError(
                    f"{source} row {rownum}: field {field!r}: expected the same {field} as row "
                    f"{prev[2]} for query id {r.query_id!r} (got {getattr(r, field)!r}); give "
                    "each distinct query its own query_id"
                )
            qr = qrows[r.query_id]
            if qr.query != r.query or qr.task != r.task:
                raise UserError(
                    f"{source} row {rownum}: query id {r.query_id!r} has task {r.task!r} and a "
                    f"query text that differ from the query table (task {qr.task!r}); expected "
                    "rows and query table to agree"
                )
        query_ids = list(qrows)
        qindex = {q: i for i, q in enumerate(query_ids)}
        nq, nm = len(query_ids), len(models)
        score = np.full((nq, nm), np.nan)
        cost = np.full((nq, nm), np.nan)
        latency = np.full((nq, nm), np.nan)
        in_tok = np.full((nq, nm), -1, dtype=np.int64)
        out_tok = np.full((nq, nm), -1, dtype=np.int64)
        response = np.full((nq, nm), None, dtype=object)
        estimated = np.zeros((nq, nm), dtype=bool)
        for i, r in enumerate(rows):
            qi, mi = qindex[r.query_id], models[r.model]
            if not np.isnan(score[qi, mi]):
                rownum = row_numbers[i] if row_numbers is not None else i + 1
                raise UserError(
                    f"{source} row {rownum}: the pair (query_id={r.query_id!r}, "
                    f"model={r.model!r}) appears twice; expected at most one row per pair"
                )
            score[qi, mi] = r.score
            cost[qi, mi] = r.cost_usd
            if r.latency_s is not None:
                latency[qi, mi] = r.latency_s
            if r.input_tokens is not None:
                in_tok[qi, mi] = r.input_tokens
            if r.output_tokens is not None:
                out_tok[qi, mi] = r.output_tokens
            response[qi, mi] = r.response
            estimated[qi, mi] = r.cost_estimated
        self._set(
            query_rows=[qrows[q] for q in query_ids],
            models=list(models),
            score=score,
            cost=cost,
            latency=latency,
            in_tok=in_tok,
            out_tok=out_tok,
            response=response,
            estimated=estimated,
            models_info=models_info,
            meta=meta,
            source=source,
        )

    def _set(
        self,
        *,
        query_rows: list[QueryRow],
        models: list[str],
        score: NDArray[np.float64],
        cost: NDArray[np.float64],
        latency: NDArray[np.float64],
        in_tok: NDArray[np.int64],
        out_tok: NDArray[np.int64],
        response: NDArray[np.object_],
        estimated: NDArray[np.bool_],
        models_info: Mapping[str, ModelInfo | Mapping[str, Any]] | None,
        meta: Mapping[str, Any] | None,
        source: str,
    ) -> None:
        self._query_rows = query_rows
        self._query_ids = [q.query_id for q in query_rows]
        self._qindex = {q: i for i, q in enumerate(self._query_ids)}
        if len(self._qindex) != len(self._query_ids):
            dup = next(q for q in self._query_ids if self._query_ids.count(q) > 1)
            raise UserError(f"{source}: query id {dup!r} appears twice; expected unique query ids")
        self._text_index: dict[str, list[int]] | None = None
        self._tasks = np.array([q.task for q in query_rows], dtype=object)
        self._models = list(models)
        self._mindex = {m: i for i, m in enumerate(self._models)}
        self._score = score
        self._cost = cost
        self._latency = latency
        self._in_tok = in_tok
        self._out_tok = out_tok
        self._response = response
        self._estimated = estimated
        info: dict[str, ModelInfo] = {}
        for name, mi in (models_info or {}).items():
            if name not in self._mindex:
                continue
            if isinstance(mi, ModelInfo):
                m = mi
            else:
                try:
                    m = ModelInfo.model_validate({"name": name, **dict(mi)})
                except ValidationError as err:
                    e = err.errors()[0]
                    raise UserError(
                        f"{source}: model info for {name!r}: field {'.'.join(map(str, e['loc']))!r}: "
                        f"{e['msg']} (got {e.get('input')!r})"
                    ) from None
            info[name] = m
        self._models_info = info
        self.meta: dict[str, Any] = dict(meta or {})

    @classmethod
    def from_columns(
        cls,
        *,
        query_rows: Sequence[QueryRow],
        models: Sequence[str],
        scores: ArrayLike,
        costs: ArrayLike,
        responses: ArrayLike | None = None,
        latency_s: ArrayLike | None = None,
        input_tokens: ArrayLike | None = None,
        output_tokens: ArrayLike | None = None,
        cost_estimated: bool | ArrayLike = False,
        models_info: Mapping[str, ModelInfo | Mapping[str, Any]] | None = None,
        meta: Mapping[str, Any] | None = None,
        source: str = "columns",
    ) -> OutcomeTable:
        """Build a table from dense (n_queries, n_models) arrays, checked in bulk.

        The fast path used by loaders: no per-row objects are built.

        Args:
            query_rows: one :class:`QueryRow` per matrix row.
            models: one name per matrix column.
            scores: scores in [0, 1]; NaN where the pair was not recorded.
            costs: USD >= 0; NaN exactly where ``scores`` is NaN.
            responses: optional object array of ``str | None``.
            latency_s: optional, NaN = unknown.
            input_tokens: optional, negative or NaN = unknown.
            output_tokens: optional, negative or NaN = unknown.
            cost_estimated: one flag for all cells or a boolean array.
            models_info: per-model information.
            meta: free-form provenance and notes.
            source: a name for messages.

        Shapes:
            every array: (len(query_rows), len(models)).

        Raises:
            UserError: a shape, a range or the NaN pattern is wrong, or a model repeats.
        """
        nq, nm = len(query_rows), len(models)
        if len(set(models)) != nm:
            dup = next(m for m in models if list(models).count(m) > 1)
            raise UserError(f"{source}: model {dup!r} appears twice; expected unique model names")

        def arr(x: ArrayLike | None, name: str, fill: float) -> NDArray[np.float64]:
            if x is None:
                return np.full((nq, nm), fill)
            a = np.asarray(x, dtype=np.float64)
            if a.shape != (nq, nm):
                raise UserError(
                    f"{source}: {name} has shape {a.shape}; expected ({nq}, {nm}) "
                    "(n_queries, n_models)"
                )
            return a.copy()

        score = arr(scores, "scores", np.nan)
        cost = arr(costs, "costs", np.nan)
        _check_range(score, 0.0, 1.0, "score", "a number in [0, 1]", query_rows, models, source)
        _check_range(
            cost, 0.0, math.inf, "cost_usd", "a number >= 0 (USD)", query_rows, models, source
        )
        if not np.array_equal(np.isnan(score), np.isnan(cost)):
            qi, mi = np.argwhere(np.isnan(score) != np.isnan(cost))[0]
            raise UserError(
                f"{source}: query {query_rows[qi].query_id!r}, model {models[mi]!r}: expected a "
                f"score and a cost together (got score={score[qi, mi]!r}, cost={cost[qi, mi]!r})"
            )
        latency = arr(latency_s, "latency_s", np.nan)
        _check_range(
            latency, 0.0, math.inf, "latency_s", "a number >= 0", query_rows, models, source
        )

        def tok(x: ArrayLike | None, name: str) -> NDArray[np.int64]:
            a = arr(x, name, -1.0)
            return np.where(np.isnan(a) | (a < 0), -1, np.round(a)).astype(np.int64)

        if responses is None:
            resp = np.full((nq, nm), None, dtype=object)
        else:
            resp = np.asarray(responses, dtype=object)
            if resp.shape != (nq, nm):
                raise UserError(
                    f"{source}: responses has shape {resp.shape}; expected ({nq}, {nm})"
                )
        if isinstance(cost_estimated, bool):
            est = np.full((nq, nm), cost_estimated)
        else:
            est = np.asarray(cost_estimated, dtype=bool)
            if est.shape != (nq, nm):
                raise UserError(
                    f"{source}: cost_estimated has shape {est.shape}; expected ({nq}, {nm})"
                )
        est = est & ~np.isnan(score)
        table = cls.__new__(cls)
        table._set(
            query_rows=list(query_rows),
            models=list(models),
            score=score,
            cost=cost,
            latency=latency,
            in_tok=tok(input_tokens, "input_tokens"),
            out_tok=tok(output_tokens, "output_tokens"),
            response=resp,
            estimated=est,
            models_info=models_info,
            meta=meta,
            source=source,
        )
        return table

    # ------------------------------------------------------------------ shape and names
    @property
    def queries(self) -> list[str]:
        """Query ids, in matrix row order."""
        return list(self._query_ids)

    @property
    def models(self) -> list[str]:
        """Model names, in matrix column order."""
        return list(self._models)

    @property
    def tasks(self) -> list[str]:
        """The distinct task names, sorted."""
        return sorted(set(self._tasks.tolist()))

    @property
    def query_tasks(self) -> list[str]:
        """The task of each query, in matrix row order."""
        return self._tasks.tolist()

    @property
    def query_texts(self) -> list[str]:
        """The text of each query, in matrix row order."""
        return [q.query for q in self._query_rows]

    @property
    def query_rows(self) -> list[QueryRow]:
        """The query table, in matrix row order."""
        return list(self._query_rows)

    @property
    def models_info(self) -> dict[str, ModelInfo]:
        """What is known about each model (only models that have an entry)."""
        return dict(self._models_info)

    @property
    def estimated_cost(self) -> bool:
        """Whether any cost in the table was estimated rather than recorded."""
        return bool(self._estimated.any())

    @property
    def n_queries(self) -> int:
        """Number of queries (matrix rows)."""
        return len(self._query_ids)

    @property
    def n_models(self) -> int:
        """Number of models (matrix columns)."""
        return len(self._models)

    def __len__(self) -> int:
        """Number of recorded (query, model) rows."""
        return int((~np.isnan(self._score)).sum())

    def __repr__(self) -> str:
        flag = ", estimated_cost=True" if self.estimated_cost else ""
        return (
            f"OutcomeTable(queries={self.n_queries}, models={self.n_models}, rows={len(self)}, "
            f"tasks={len(self.tasks)}{flag})"
        )

    # ------------------------------------------------------------------ matrices
    def score_matrix(self) -> NDArray[np.float64]:
        """Scores as a (n_queries, n_models) array, NaN where a pair was not recorded (a copy)."""
        return self._score.copy()

    def cost_matrix(self) -> NDArray[np.float64]:
        """Costs in USD as a (n_queries, n_models) array, NaN where not recorded (a copy)."""
        return self._cost.copy()

    def latency_matrix(self) -> NDArray[np.float64]:
        """Latencies in seconds as a (n_queries, n_models) array, NaN where unknown (a copy)."""
        return self._latency.copy()

    def estimated_matrix(self) -> NDArray[np.bool_]:
        """Which costs were estimated, as a (n_queries, n_models) boolean array (a copy)."""
        return self._estimated.copy()

    # ------------------------------------------------------------------ lookups
    def query_index(self, query_text_or_id: str) -> int:
        """Matrix row of a query given by id or, failing that, by its exact text.

        Raises:
            OutcomeLookupError: no such query, or the text matches several queries.
        """
        i = self._qindex.get(query_text_or_id)
        if i is not None:
            return i
        if self._text_index is None:
            index: dict[str, list[int]] = {}
            for j, q in enumerate(self._query_rows):
                index.setdefault(q.query, []).append(j)
            self._text_index = index
        hits = self._text_index.get(query_text_or_id)
        if not hits:
            shown = (
                query_text_or_id if len(query_text_or_id) <= 80 else query_text_or_id[:77] + "..."
            )
            raise OutcomeLookupError(
                f"unknown query {shown!r}: expected one of the table's {self.n_queries} query ids "
                f"(e.g. {self._query_ids[:3]!r}) or the exact text of one of its queries"
            )
        if len(hits) > 1:
            ids = [self._query_ids[j] for j in hits]
            raise OutcomeLookupError(
                f"query text matches {len(hits)} queries {ids!r}; expected a unique text — "
                "look it up by query id instead"
            )
        return hits[0]

    def model_index(self, model: str) -> int:
        """Matrix column of a model.

        Raises:
            OutcomeLookupError: the model is not in the table.
        """
        j = self._mindex.get(model)
        if j is None:
            raise OutcomeLookupError(f"unknown model {model!r}: expected one of {self._models!r}")
        return j

    def _row(self, qi: int, mi: int) -> OutcomeRow:
        q = self._query_rows[qi]
        return OutcomeRow.model_construct(
            query_id=q.query_id,
            query=q.query,
            task=q.task,
            model=self._models[mi],
            score=float(self._score[qi, mi]),
            cost_usd=float(self._cost[qi, mi]),
            latency_s=None if np.isnan(self._latency[qi, mi]) else float(self._latency[qi, mi]),
            input_tokens=None if self._in_tok[qi, mi] < 0 else int(self._in_tok[qi, mi]),
            output_tokens=None if self._out_tok[qi, mi] < 0 else int(self._out_tok[qi, mi]),
            response=self._response[qi, mi],
            cost_estimated=bool(self._estimated[qi, mi]),
        )

    def lookup(self, query_text_or_id: str, model: str) -> OutcomeRow:
        """The recorded outcome of ``model`` on a query (by id or exact text).

        Never invents: an unknown query, an unknown model or a pair that was not recorded
        raises.

        Raises:
            OutcomeLookupError: (a ``UserError`` and a ``KeyError``) for an unknown query or
                model, or a pair with no recorded outcome.
        """
        qi = self.query_index(query_text_or_id)
        mi = self.model_index(model)
        if np.isnan(self._score[qi, mi]):
            raise OutcomeLookupError(
                f"no outcome recorded for model {model!r} on query {self._query_ids[qi]!r}; "
                f"models recorded for it: {self.models_for(self._query_ids[qi])!r}"
            )
        return self._row(qi, mi)

    def response(self, query_id: str, model: str) -> str | None:
        """The recorded response text of ``model`` on a query (None if none was recorded).

        Raises:
            OutcomeLookupError: unknown query or model, or no outcome recorded for the pair.
        """
        return self.lookup(query_id, model).response

    def query_row(self, query_text_or_id: str) -> QueryRow:
        """The query table entry of a query given by id or exact text."""
        return self._query_rows[self.query_index(query_text_or_id)]

    def models_for(self, query_text_or_id: str) -> list[str]:
        """Models with a recorded outcome on the query."""
        qi = self.query_index(query_text_or_id)
        return [m for j, m in enumerate(self._models) if not np.isnan(self._score[qi, j])]

    def rows(self) -> Iterator[OutcomeRow]:
        """Every recorded row, query by query, models in column order."""
        qs, ms = np.nonzero(~np.isnan(self._score))
        for qi, mi in zip(qs.tolist(), ms.tolist(), strict=True):
            yield self._row(qi, mi)

    def to_records(self) -> list[dict[str, Any]]:
        """Every recorded row as a plain dict (the file format's fields)."""
        return [r.model_dump() for r in self.rows()]

    # ------------------------------------------------------------------ subsets
    def _subset(self, qsel: NDArray[np.intp], msel: NDArray[np.intp]) -> OutcomeTable:
        new = OutcomeTable.__new__(OutcomeTable)
        grid = np.ix_(qsel, msel)
        models = [self._models[j] for j in msel.tolist()]
        new._set(
            query_rows=[self._query_rows[i] for i in qsel.tolist()],
            models=models,
            score=self._score[grid],
            cost=self._cost[grid],
            latency=self._latency[grid],
            in_tok=self._in_tok[grid],
            out_tok=self._out_tok[grid],
            response=self._response[grid],
            estimated=self._estimated[grid],
            models_info={m: self._models_info[m] for m in models if m in self._models_info},
            meta=self.meta,
            source="subset",
        )
        return new

    def filter(
        self,
        *,
        tasks: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        query_ids: Iterable[str] | None = None,
        splits: Iterable[str] | None = None,
    ) -> OutcomeTable:
        """A new table restricted to some tasks, models, queries and/or splits.

        Models keep the order given; queries keep the table's order. Every name must exist
        (a typo never silently yields an empty table).

        Raises:
            UserError: an unknown task, model, query id or split.
        """
        qmask = np.ones(self.n_queries, dtype=bool)
        if tasks is not None:
            wanted = _as_list(tasks, "tasks")
            unknown = [t for t in wanted if t not in set(self._tasks.tolist())]
            if unknown:
                raise UserError(f"unknown task(s) {unknown!r}: expected some of {self.tasks!r}")
            qmask &= np.isin(self._tasks, np.array(wanted, dtype=object))
        if query_ids is not None:
            ids = _as_list(query_ids, "query_ids")
            idx = [self.query_index(q) for q in ids]
            sel = np.zeros(self.n_queries, dtype=bool)
            sel[idx] = True
            qmask &= sel
        if splits is not None:
            wanted_splits = _as_list(splits, "splits")
            have = sorted({q.split for q in self._query_rows if q.split is not None})
            unknown = [x for x in wanted_splits if x not in have]
            if unknown:
                raise UserError(
                    f"unknown split(s) {unknown!r}: expected some of {have!r}"
                    + ("" if have else " (this table records no splits; use split() instead)")
                )
            qmask &= np.array([q.split in wanted_splits for q in self._query_rows], dtype=bool)
        if models is None:
            msel = np.arange(self.n_models)
        else:
            msel = np.array(
                [self.model_index(m) for m in _as_list(models, "models")], dtype=np.intp
            )
        return self._subset(np.flatnonzero(qmask), msel)

    def split(
        self, test_fraction: float = 0.2, *, seed: int = 0, stratify: bool = True
    ) -> tuple[OutcomeTable, OutcomeTable]:
        """Random (train, test) split of the queries; reproducible for a given seed.

        Args:
            test_fraction: share of queries in the test table, in (0, 1).
            seed: random seed.
            stratify: split each task separately so both sides keep the task mix.

        Returns:
            (train, test) tables over disjoint queries and the same models.

        Raises:
            UserError: ``test_fraction`` is outside (0, 1).
        """
        if not isinstance(test_fraction, int | float) or not 0.0 < float(test_fraction) < 1.0:
            raise UserError(
                f"test_fraction={test_fraction!r}: expected a number strictly between 0 and 1 "
                "(e.g. 0.2)"
            )
        rng = np.random.default_rng(seed)
        test = np.zeros(self.n_queries, dtype=bool)
        groups = (
            [np.flatnonzero(self._tasks == t) for t in self.tasks]
            if stratify
            else [np.arange(self.n_queries)]
        )
        for g in groups:
            k = round(len(g) * float(test_fraction))
            test[rng.permutation(g)[:k]] = True
        allm = np.arange(self.n_models)
        return self._subset(np.flatnonzero(~test), allm), self._subset(np.flatnonzero(test), allm)

    # ------------------------------------------------------------------ files
    def _metadata(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "queries": [q.model_dump() for q in self._query_rows],
            "models": {n: m.model_dump() for n, m in self._models_info.items()},
            "meta": self.meta,
        }

    def write(self, path: str | Path) -> Path:
        """Write the table; the format is picked from the suffix (.jsonl, .csv, .parquet).

        Returns:
            The path written.

        Raises:
            UserError: unknown suffix, or pyarrow missing for parquet.
        """
        p = Path(path)
        fmt = _format_of(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        records = self.to_records()
        meta = self._metadata()
        if fmt == ".jsonl":
            with p.open("w", encoding="utf-8") as f:
                f.write(json.dumps({_JSONL_META: meta}, ensure_ascii=False) + "\n")
                for r in records:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        elif fmt == ".csv":
            with p.open("w", encoding="utf-8", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(_FIELDS))
                w.writeheader()
                for r in records:
                    w.writerow({k: ("" if v is None else v) for k, v in r.items()})
            _sidecar(p).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        else:
            pa, pq = _pyarrow()
            schema = pa.schema(
                [
                    ("query_id", pa.string()),
                    ("query", pa.string()),
                    ("task", pa.string()),
                    ("model", pa.string()),
                    ("score", pa.float64()),
                    ("cost_usd", pa.float64()),
                    ("latency_s", pa.float64()),
                    ("input_tokens", pa.int64()),
                    ("output_tokens", pa.int64()),
                    ("response", pa.string()),
                    ("cost_estimated", pa.bool_()),
                ],
                metadata={_META_KEY: json.dumps(meta, ensure_ascii=False)},
            )
            cols = {name: [r[name] for r in records] for name in _FIELDS}
            pq.write_table(pa.Table.from_pydict(cols, schema=schema), p)
        return p

    @classmethod
    def read(cls, path: str | Path) -> OutcomeTable:
        """Read a table written in the outcome format (.jsonl, .csv or .parquet).

        Every row is validated; a bad one raises with the file, row number and field, e.g.
        ``outcomes.jsonl row 17: field 'score': expected a number in [0, 1] (got 'abc')``.

        Raises:
            UserError: missing file, unknown suffix, malformed file or row.
        """
        p = Path(path)
        fmt = _format_of(p)
        if not p.is_file():
            raise UserError(
                f"outcome file {str(p)!r} does not exist; expected a path to a "
                f"{'/'.join(SUFFIXES)} file"
            )
        name = p.name
        meta: dict[str, Any] | None = None
        records: list[Any] = []
        numbers: list[int] = []
        if fmt == ".jsonl":
            with p.open(encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(
                            f"{name} row {lineno}: expected one JSON object a line (got "
                            f"{line.strip()[:60]!r}: {e.msg})"
                        ) from None
                    if (
                        isinstance(obj, dict)
                        and _JSONL_META in obj
                        and len(obj) == 1
                        and not records
                    ):
                        meta = obj[_JSONL_META]
                        continue
                    records.append(obj)
                    numbers.append(lineno)
        elif fmt == ".csv":
            with p.open(encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                unknown = [h for h in header if h not in _FIELDS]
                if unknown:
                    raise UserError(
                        f"{name}: unknown column(s) {unknown!r}; expected columns among "
                        f"{list(_FIELDS)!r}"
                    )
                for rownum, rec in enumerate(reader, 1):
                    records.append(
                        {k: v for k, v in rec.items() if not (v == "" and k in _CSV_EMPTY_IS_NONE)}
                    )
                    numbers.append(rownum)
            side = _sidecar(p)
            if side.is_file():
                try:
                    meta = json.loads(side.read_text(encoding="utf-8"))
                except json.JSONDecodeError as e:
                    raise UserError(f"{side.name}: expected JSON metadata ({e.msg})") from None
        else:
            _pa, pq = _pyarrow()
            try:
                tbl = pq.read_table(p)
            except Exception as e:  # noqa: BLE001 — pyarrow raises many types for a broken file
                raise UserError(f"{name}: expected a parquet file ({e})") from None
            raw_meta = (tbl.schema.metadata or {}).get(_META_KEY.encode())
            if raw_meta:
                meta = json.loads(raw_meta)
            unknown = [c for c in tbl.column_names if c not in _FIELDS]
            if unknown:
                raise UserError(
                    f"{name}: unknown column(s) {unknown!r}; expected columns among {list(_FIELDS)!r}"
                )
            records = [{k: v for k, v in r.items() if v is not None} for r in tbl.to_pylist()]
            numbers = list(range(1, len(records) + 1))
        try:
            rows = _ROWS_ADAPTER.validate_python(records)
        except ValidationError as err:
            raise _row_error(err, name, numbers) from None
        queries: list[Any] | None = None
        models_info: dict[str, Any] | None = None
        extra: dict[str, Any] | None = None
        if meta is not None:
            if not isinstance(meta, dict):
                raise UserError(f"{name}: table metadata must be a JSON object (got {meta!r})")
            version = meta.get("version", FORMAT_VERSION)
            if version != FORMAT_VERSION:
                raise UserError(
                    f"{name}: table metadata version {version!r} is not supported; expected "
                    f"{FORMAT_VERSION} — upgrade orchestra"
                )
            queries = meta.get("queries")
            models_info = meta.get("models")
            extra = meta.get("meta")
        table = cls.__new__(cls)
        table._build(rows, queries, models_info, extra, name, numbers)
        return table


# CSV cannot tell an empty string from "absent": empty optional cells mean absent.
_CSV_EMPTY_IS_NONE = frozenset(
    {"latency_s", "input_tokens", "output_tokens", "response", "cost_estimated"}
)


def _validate_query(q: Mapping[str, Any], source: str) -> QueryRow:
    try:
        return QueryRow.model_validate(q)
    except ValidationError as err:
        e = err.errors()[0]
        raise UserError(
            f"{source}: query table entry {dict(q).get('query_id')!r}: field "
            f"{'.'.join(map(str, e['loc']))!r}: {e['msg']} (got {e.get('input')!r})"
        ) from None


def _check_range(
    a: NDArray[np.float64],
    lo: float,
    hi: float,
    field: str,
    expected: str,
    query_rows: Sequence[QueryRow],
    models: Sequence[str],
    source: str,
) -> None:
    with np.errstate(invalid="ignore"):
        bad = np.isinf(a) | (a < lo) | (a > hi)
    if bad.any():
        qi, mi = np.argwhere(bad)[0]
        raise UserError(
            f"{source}: query {query_rows[qi].query_id!r}, model {models[mi]!r}: field "
            f"{field!r}: expected {expected} (got {float(a[qi, mi])!r})"
        )


def _as_list(x: Iterable[str], name: str) -> list[str]:
    if isinstance(x, str):
        return [x]
    out = list(x)
    if not all(isinstance(v, str) for v in out):
        raise UserError(f"{name}={out!r}: expected names (strings)")
    return out


def _format_of(p: Path) -> str:
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(
            f"cannot tell the format of {str(p)!r}: expected a suffix among {list(SUFFIXES)!r} "
            f"(got {suffix!r})"
        )
    return suffix


def _sidecar(p: Path) -> Path:
    return p.with_name(p.name + ".meta.json")


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            "reading or writing .parquet needs pyarrow, which is not installed; expected it "
            "from the 'learn' extra: pip install 'orchestra[learn]' (or pip install pyarrow), "
            "or use .jsonl / .csv"
        ) from None
    return pa, pq

"""The dense storage behind :class:`~orchestra.outcomes.OutcomeTable`: built and checked.

An outcome table keeps one (n_queries, n_models) numpy array per field, NaN (or -1 for token
counts) where a pair was not recorded, so a 1,000 × 11 table loads and slices in milliseconds.
:func:`_columns_from_rows` builds them from validated rows (files, hand-written rows),
:func:`_columns_from_arrays` from arrays a loader already holds, checked in bulk.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestra.errors import UserError
from orchestra.outcomes.rows import DEDUPE_HINT, OutcomeRow, QueryRow, _validate_query

if TYPE_CHECKING:  # pragma: no cover
    from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class _Columns:
    """The arrays of a table; every array has shape (len(query_rows), len(models)).

    The indexes (query id → row, model → column, text → rows) are built on first use.
    """

    query_rows: list[QueryRow]
    models: list[str]
    score: NDArray[np.float64]
    cost: NDArray[np.float64]
    latency: NDArray[np.float64]
    in_tok: NDArray[np.int64]
    out_tok: NDArray[np.int64]
    response: NDArray[np.object_]
    estimated: NDArray[np.bool_]

    @cached_property
    def query_ids(self) -> list[str]:
        return [q.query_id for q in self.query_rows]

    @cached_property
    def qindex(self) -> dict[str, int]:
        return {q: i for i, q in enumerate(self.query_ids)}

    @cached_property
    def mindex(self) -> dict[str, int]:
        return {m: i for i, m in enumerate(self.models)}

    @cached_property
    def tasks(self) -> NDArray[np.object_]:
        return np.array([q.task for q in self.query_rows], dtype=object)

    @cached_property
    def text_index(self) -> dict[str, list[int]]:
        index: dict[str, list[int]] = {}
        for j, q in enumerate(self.query_rows):
            index.setdefault(q.query, []).append(j)
        return index

    def take(self, qsel: NDArray[np.intp], msel: NDArray[np.intp]) -> _Columns:
        """The sub-grid of the selected query rows and model columns, in the order given."""
        grid = np.ix_(qsel, msel)
        return _Columns(
            query_rows=[self.query_rows[i] for i in qsel.tolist()],
            models=[self.models[j] for j in msel.tolist()],
            score=self.score[grid],
            cost=self.cost[grid],
            latency=self.latency[grid],
            in_tok=self.in_tok[grid],
            out_tok=self.out_tok[grid],
            response=self.response[grid],
            estimated=self.estimated[grid],
        )

    def row(self, qi: int, mi: int) -> OutcomeRow:
        """The cell (qi, mi) as an :class:`OutcomeRow` (not re-validated: the arrays are)."""
        q = self.query_rows[qi]
        return OutcomeRow.model_construct(
            query_id=q.query_id,
            query=q.query,
            task=q.task,
            model=self.models[mi],
            score=float(self.score[qi, mi]),
            cost_usd=float(self.cost[qi, mi]),
            latency_s=None if np.isnan(self.latency[qi, mi]) else float(self.latency[qi, mi]),
            input_tokens=None if self.in_tok[qi, mi] < 0 else int(self.in_tok[qi, mi]),
            output_tokens=None if self.out_tok[qi, mi] < 0 else int(self.out_tok[qi, mi]),
            response=self.response[qi, mi],
            cost_estimated=bool(self.estimated[qi, mi]),
        )


def _query_table(
    rows: Sequence[OutcomeRow],
    queries: Iterable[QueryRow | Mapping[str, Any]] | None,
    source: str,
    row_numbers: Sequence[int] | None,
) -> dict[str, QueryRow]:
    """The query table (given entries first, then queries first seen in the rows), checked
    against the rows: every row of a query agrees on its text and task."""
    qrows: dict[str, QueryRow] = {}
    for q in queries or ():
        qr = _validate_query(q, source)
        if qr.query_id in qrows:
            raise UserError(
                f"{source}: query id {qr.query_id!r} is listed twice in the query table; "
                "expected unique query ids"
            )
        qrows[qr.query_id] = qr
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
                "each distinct query its own query_id" + DEDUPE_HINT
            )
        qr = qrows[r.query_id]
        if qr.query != r.query or qr.task != r.task:
            raise UserError(
                f"{source} row {rownum}: query id {r.query_id!r} has task {r.task!r} and a "
                f"query text that differ from the query table (task {qr.task!r}); expected "
                "rows and query table to agree" + DEDUPE_HINT
            )
    return qrows


def _columns_from_rows(
    rows: Sequence[OutcomeRow],
    queries: Iterable[QueryRow | Mapping[str, Any]] | None,
    source: str,
    row_numbers: Sequence[int] | None = None,
) -> _Columns:
    """The arrays of validated rows; models in order of first appearance.

    Raises:
        UserError: a (query, model) pair repeats, or rows of one query disagree on its text or
            task or with the query table.
    """
    qrows = _query_table(rows, queries, source, row_numbers)
    models: dict[str, int] = {}
    for r in rows:
        models.setdefault(r.model, len(models))
    qindex = {q: i for i, q in enumerate(qrows)}
    nq, nm = len(qrows), len(models)
    cols = _Columns(
        query_rows=list(qrows.values()),
        models=list(models),
        score=np.full((nq, nm), np.nan),
        cost=np.full((nq, nm), np.nan),
        latency=np.full((nq, nm), np.nan),
        in_tok=np.full((nq, nm), -1, dtype=np.int64),
        out_tok=np.full((nq, nm), -1, dtype=np.int64),
        response=np.full((nq, nm), None, dtype=object),
        estimated=np.zeros((nq, nm), dtype=bool),
    )
    for i, r in enumerate(rows):
        qi, mi = qindex[r.query_id], models[r.model]
        if not np.isnan(cols.score[qi, mi]):
            rownum = row_numbers[i] if row_numbers is not None else i + 1
            raise UserError(
                f"{source} row {rownum}: the pair (query_id={r.query_id!r}, "
                f"model={r.model!r}) appears twice; expected at most one row per pair"
                + DEDUPE_HINT
            )
        cols.score[qi, mi] = r.score
        cols.cost[qi, mi] = r.cost_usd
        if r.latency_s is not None:
            cols.latency[qi, mi] = r.latency_s
        if r.input_tokens is not None:
            cols.in_tok[qi, mi] = r.input_tokens
        if r.output_tokens is not None:
            cols.out_tok[qi, mi] = r.output_tokens
        cols.response[qi, mi] = r.response
        cols.estimated[qi, mi] = r.cost_estimated
    return cols


def _columns_from_arrays(
    *,
    query_rows: Sequence[QueryRow],
    models: Sequence[str],
    scores: ArrayLike,
    costs: ArrayLike,
    responses: ArrayLike | None,
    latency_s: ArrayLike | None,
    input_tokens: ArrayLike | None,
    output_tokens: ArrayLike | None,
    cost_estimated: bool | ArrayLike,
    source: str,
) -> _Columns:
    """The arrays of :meth:`OutcomeTable.from_columns` (see there), copied and checked."""
    nq, nm = len(query_rows), len(models)
    if len(set(models)) != nm:
        dup = next(m for m in models if list(models).count(m) > 1)
        raise UserError(f"{source}: model {dup!r} appears twice; expected unique model names")
    ids = [q.query_id for q in query_rows]
    if len(set(ids)) != nq:
        dup = next(q for q in ids if ids.count(q) > 1)
        raise UserError(f"{source}: query id {dup!r} appears twice; expected unique query ids")

    def shaped(a: NDArray[Any], name: str) -> NDArray[Any]:
        if a.shape != (nq, nm):
            raise UserError(
                f"{source}: {name} has shape {a.shape}; expected ({nq}, {nm}) (n_queries, n_models)"
            )
        return a

    def arr(x: ArrayLike | None, name: str, fill: float) -> NDArray[np.float64]:
        if x is None:
            return np.full((nq, nm), fill)
        return shaped(np.asarray(x, dtype=np.float64), name).copy()

    def check(a: NDArray[np.float64], hi: float, field: str, expected: str) -> None:
        with np.errstate(invalid="ignore"):
            bad = np.isinf(a) | (a < 0.0) | (a > hi)
        if bad.any():
            qi, mi = np.argwhere(bad)[0]
            raise UserError(
                f"{source}: query {query_rows[qi].query_id!r}, model {models[mi]!r}: field "
                f"{field!r}: expected {expected} (got {float(a[qi, mi])!r})"
            )

    def tok(x: ArrayLike | None, name: str) -> NDArray[np.int64]:
        a = arr(x, name, -1.0)
        return np.where(np.isnan(a) | (a < 0), -1, np.round(a)).astype(np.int64)

    score = arr(scores, "scores", np.nan)
    cost = arr(costs, "costs", np.nan)
    check(score, 1.0, "score", "a number in [0, 1]")
    check(cost, math.inf, "cost_usd", "a number >= 0 (USD)")
    if not np.array_equal(np.isnan(score), np.isnan(cost)):
        qi, mi = np.argwhere(np.isnan(score) != np.isnan(cost))[0]
        raise UserError(
            f"{source}: query {query_rows[qi].query_id!r}, model {models[mi]!r}: expected a "
            f"score and a cost together (got score={score[qi, mi]!r}, cost={cost[qi, mi]!r})"
        )
    latency = arr(latency_s, "latency_s", np.nan)
    check(latency, math.inf, "latency_s", "a number >= 0")
    if responses is None:
        resp = np.full((nq, nm), None, dtype=object)
    else:
        resp = shaped(np.asarray(responses, dtype=object), "responses")
    if isinstance(cost_estimated, bool):
        est = np.full((nq, nm), cost_estimated)
    else:
        est = shaped(np.asarray(cost_estimated, dtype=bool), "cost_estimated")
    return _Columns(
        query_rows=list(query_rows),
        models=list(models),
        score=score,
        cost=cost,
        latency=latency,
        in_tok=tok(input_tokens, "input_tokens"),
        out_tok=tok(output_tokens, "output_tokens"),
        response=resp,
        estimated=est & ~np.isnan(score),
    )

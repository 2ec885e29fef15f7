"""The in-memory outcome table: how well, and at what cost, each model answered each query.

:class:`OutcomeTable` holds the rows of :mod:`orchestra.outcomes.rows` (one per recorded
(query, model) pair) as dense (n_queries, n_models) arrays (:mod:`orchestra.outcomes.columns`;
NaN where a pair was not recorded) with a query index and a model index, so a 1,000 × 11 table
loads and slices in milliseconds. Files (JSONL, CSV, Parquet) are read and written by
:mod:`orchestra.outcomes.table_io`; subsets are picked by :mod:`orchestra.outcomes.subsets`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestra.outcomes.columns import _Columns, _columns_from_arrays, _columns_from_rows
from orchestra.outcomes.repairs import active_repairs
from orchestra.outcomes.rows import (
    ModelInfo,
    OutcomeLookupError,
    OutcomeRow,
    QueryRow,
    _validate_model_info,
    _validate_rows,
)
from orchestra.outcomes.subsets import _filter_selection, _split_selection
from orchestra.outcomes.table_io import _read_file, _write_file

if TYPE_CHECKING:  # pragma: no cover
    from numpy.typing import ArrayLike, NDArray

# OutcomeLookupError is defined with the rows and stays importable from here.
__all__ = ["OutcomeLookupError", "OutcomeTable"]


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

    __slots__ = ("_cols", "_models_info", "meta")

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
        checked = [r for r in raw if isinstance(r, OutcomeRow)]
        if len(checked) != len(raw):
            checked = _validate_rows(raw, source)
        self._set(_columns_from_rows(checked, queries, source), models_info, meta, source)

    # ------------------------------------------------------------------ construction
    def _set(
        self,
        cols: _Columns,
        models_info: Mapping[str, ModelInfo | Mapping[str, Any]] | None,
        meta: Mapping[str, Any] | None,
        source: str,
    ) -> None:
        self._cols = cols
        self._models_info = {
            name: _validate_model_info(name, mi, source)
            for name, mi in (models_info or {}).items()
            if name in cols.mindex
        }
        self.meta: dict[str, Any] = dict(meta or {})

    @classmethod
    def _of(
        cls,
        cols: _Columns,
        models_info: Mapping[str, ModelInfo | Mapping[str, Any]] | None,
        meta: Mapping[str, Any] | None,
        source: str,
    ) -> OutcomeTable:
        table = cls.__new__(cls)
        table._set(cols, models_info, meta, source)
        return table

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
        cols = _columns_from_arrays(
            query_rows=query_rows,
            models=models,
            scores=scores,
            costs=costs,
            responses=responses,
            latency_s=latency_s,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_estimated=cost_estimated,
            source=source,
        )
        return cls._of(cols, models_info, meta, source)

    # ------------------------------------------------------------------ shape and names
    @property
    def queries(self) -> list[str]:
        """Query ids, in matrix row order."""
        return list(self._cols.query_ids)

    @property
    def models(self) -> list[str]:
        """Model names, in matrix column order."""
        return list(self._cols.models)

    @property
    def tasks(self) -> list[str]:
        """The distinct task names, sorted."""
        return sorted(set(self._cols.tasks.tolist()))

    @property
    def query_tasks(self) -> list[str]:
        """The task of each query, in matrix row order."""
        return self._cols.tasks.tolist()

    @property
    def query_texts(self) -> list[str]:
        """The text of each query, in matrix row order."""
        return [q.query for q in self._cols.query_rows]

    @property
    def query_rows(self) -> list[QueryRow]:
        """The query table, in matrix row order."""
        return list(self._cols.query_rows)

    @property
    def models_info(self) -> dict[str, ModelInfo]:
        """What is known about each model (only models that have an entry)."""
        return dict(self._models_info)

    @property
    def estimated_cost(self) -> bool:
        """Whether any cost in the table was estimated rather than recorded."""
        return bool(self._cols.estimated.any())

    @property
    def n_queries(self) -> int:
        """Number of queries (matrix rows)."""
        return len(self._cols.query_ids)

    @property
    def n_models(self) -> int:
        """Number of models (matrix columns)."""
        return len(self._cols.models)

    def __len__(self) -> int:
        """Number of recorded (query, model) rows."""
        return int((~np.isnan(self._cols.score)).sum())

    def __repr__(self) -> str:
        flag = ", estimated_cost=True" if self.estimated_cost else ""
        return (
            f"OutcomeTable(queries={self.n_queries}, models={self.n_models}, rows={len(self)}, "
            f"tasks={len(self.tasks)}{flag})"
        )

    # ------------------------------------------------------------------ matrices
    def score_matrix(self) -> NDArray[np.float64]:
        """Scores as a (n_queries, n_models) array, NaN where a pair was not recorded (a copy)."""
        return self._cols.score.copy()

    def cost_matrix(self) -> NDArray[np.float64]:
        """Costs in USD as a (n_queries, n_models) array, NaN where not recorded (a copy)."""
        return self._cols.cost.copy()

    def latency_matrix(self) -> NDArray[np.float64]:
        """Latencies in seconds as a (n_queries, n_models) array, NaN where unknown (a copy)."""
        return self._cols.latency.copy()

    def estimated_matrix(self) -> NDArray[np.bool_]:
        """Which costs were estimated, as a (n_queries, n_models) boolean array (a copy)."""
        return self._cols.estimated.copy()

    # ------------------------------------------------------------------ lookups
    def query_index(self, query_text_or_id: str) -> int:
        """Matrix row of a query given by id or, failing that, by its exact text.

        Raises:
            OutcomeLookupError: no such query, or the text matches several queries.
        """
        i = self._cols.qindex.get(query_text_or_id)
        if i is not None:
            return i
        hits = self._cols.text_index.get(query_text_or_id)
        if not hits:
            shown = (
                query_text_or_id if len(query_text_or_id) <= 80 else query_text_or_id[:77] + "..."
            )
            raise OutcomeLookupError(
                f"unknown query {shown!r}: expected one of the table's {self.n_queries} query ids "
                f"(e.g. {self._cols.query_ids[:3]!r}) or the exact text of one of its queries"
            )
        if len(hits) > 1:
            ids = [self._cols.query_ids[j] for j in hits]
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
        j = self._cols.mindex.get(model)
        if j is None:
            raise OutcomeLookupError(
                f"unknown model {model!r}: expected one of {self._cols.models!r}"
            )
        return j

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
        if np.isnan(self._cols.score[qi, mi]):
            raise OutcomeLookupError(
                f"no outcome recorded for model {model!r} on query {self._cols.query_ids[qi]!r}; "
                f"models recorded for it: {self.models_for(self._cols.query_ids[qi])!r}"
            )
        return self._cols.row(qi, mi)

    def response(self, query_id: str, model: str) -> str | None:
        """The recorded response text of ``model`` on a query (None if none was recorded).

        Raises:
            OutcomeLookupError: unknown query or model, or no outcome recorded for the pair.
        """
        return self.lookup(query_id, model).response

    def query_row(self, query_text_or_id: str) -> QueryRow:
        """The query table entry of a query given by id or exact text."""
        return self._cols.query_rows[self.query_index(query_text_or_id)]

    def models_for(self, query_text_or_id: str) -> list[str]:
        """Models with a recorded outcome on the query."""
        qi = self.query_index(query_text_or_id)
        return [m for j, m in enumerate(self._cols.models) if not np.isnan(self._cols.score[qi, j])]

    def rows(self) -> Iterator[OutcomeRow]:
        """Every recorded row, query by query, models in column order."""
        qs, ms = np.nonzero(~np.isnan(self._cols.score))
        for qi, mi in zip(qs.tolist(), ms.tolist(), strict=True):
            yield self._cols.row(qi, mi)

    def to_records(self) -> list[dict[str, Any]]:
        """Every recorded row as a plain dict (the file format's fields)."""
        return [r.model_dump() for r in self.rows()]

    # ------------------------------------------------------------------ subsets
    def _subset(self, qsel: NDArray[np.intp], msel: NDArray[np.intp]) -> OutcomeTable:
        cols = self._cols.take(qsel, msel)
        info = {m: self._models_info[m] for m in cols.models if m in self._models_info}
        return OutcomeTable._of(cols, info, self.meta, "subset")

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
        qsel, msel = _filter_selection(
            self, tasks=tasks, models=models, query_ids=query_ids, splits=splits
        )
        return self._subset(qsel, msel)

    def split(
        self, test_fraction: float = 0.2, *, seed: int = 0, stratify: bool = True
    ) -> tuple[OutcomeTable, OutcomeTable]:
        """Random (train, test) split of the queries; reproducible for a given seed.

        Queries sharing a prompt text (the same prompt under two ids or tasks) land on the same
        side, so a test prompt is never a training one (``orchestra data split`` on the
        command line).

        Args:
            test_fraction: share of queries in the test table, in (0, 1).
            seed: random seed.
            stratify: split each task separately so both sides keep the task mix.

        Returns:
            (train, test) tables over disjoint queries and the same models.

        Raises:
            UserError: ``test_fraction`` is outside (0, 1).
        """
        train, test = _split_selection(self, test_fraction, seed=seed, stratify=stratify)
        allm = np.arange(self.n_models)
        return self._subset(train, allm), self._subset(test, allm)

    def with_split(self, split: str | None) -> OutcomeTable:
        """A copy whose queries are all labelled ``split`` (``None`` clears the labels), so that
        a file written from it loads with ``--split``/``split=``."""
        rows = [q.model_copy(update={"split": split}) for q in self._cols.query_rows]
        cols = dataclasses.replace(self._cols, query_rows=rows)
        return OutcomeTable._of(cols, self._models_info, self.meta, "subset")

    # ------------------------------------------------------------------ files
    def write(self, path: str | Path) -> Path:
        """Write the table; the format is picked from the suffix (.jsonl, .csv, .parquet).

        The format of each file is described in :mod:`orchestra.outcomes.table_io`.

        Returns:
            The path written.

        Raises:
            UserError: unknown suffix, or pyarrow missing for parquet.
        """
        return _write_file(
            path,
            self.to_records(),
            queries=[q.model_dump() for q in self._cols.query_rows],
            models_info={n: m.model_dump() for n, m in self._models_info.items()},
            meta=self.meta,
        )

    @classmethod
    def read(cls, path: str | Path, *, clip_scores: bool | None = None,
             dedupe: bool | None = None) -> OutcomeTable:
        """Read a table written in the outcome format (.jsonl, .csv or .parquet).

        Every row is validated; a bad one raises with the file, row number and field, e.g.
        ``outcomes.jsonl row 17: field 'score': expected a number in [0, 1] (got 'abc')``.

        Args:
            path: the file.
            clip_scores: clip finite scores outside [0, 1] into it instead of raising.
            dedupe: drop rows repeating a (query_id, model) pair or giving a query id another
                text or task, instead of raising. What both did is in ``meta["repairs"]``
                (:mod:`orchestra.outcomes.repairs`; ``None``: as the enclosing
                :func:`~orchestra.outcomes.repairs.outcome_repairs` says, else strict).

        Raises:
            UserError: missing file, unknown suffix, malformed file or row.
        """
        f = _read_file(path, active_repairs(clip_scores, dedupe))
        cols = _columns_from_rows(f.rows, f.queries, f.name, f.row_numbers)
        return cls._of(cols, f.models_info, f.meta, f.name)

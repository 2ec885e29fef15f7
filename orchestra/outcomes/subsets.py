"""Choosing part of an outcome table: by task, model, query or split, or a random split.

The functions here pick matrix rows and columns from a table's public accessors;
:meth:`OutcomeTable.filter <orchestra.outcomes.OutcomeTable.filter>` and
:meth:`OutcomeTable.split <orchestra.outcomes.OutcomeTable.split>` cut the table with them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from orchestra.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from numpy.typing import NDArray

    from orchestra.outcomes.table import OutcomeTable

_Selection = tuple["NDArray[np.intp]", "NDArray[np.intp]"]


def _filter_selection(
    table: OutcomeTable,
    *,
    tasks: Iterable[str] | None,
    models: Iterable[str] | None,
    query_ids: Iterable[str] | None,
    splits: Iterable[str] | None,
) -> _Selection:
    """(query rows, model columns) kept by :meth:`OutcomeTable.filter` (see there)."""
    qmask = np.ones(table.n_queries, dtype=bool)
    query_tasks = np.array(table.query_tasks, dtype=object)
    if tasks is not None:
        wanted = _as_list(tasks, "tasks")
        unknown = [t for t in wanted if t not in set(table.tasks)]
        if unknown:
            raise UserError(f"unknown task(s) {unknown!r}: expected some of {table.tasks!r}")
        qmask &= np.isin(query_tasks, np.array(wanted, dtype=object))
    if query_ids is not None:
        idx = [table.query_index(q) for q in _as_list(query_ids, "query_ids")]
        sel = np.zeros(table.n_queries, dtype=bool)
        sel[idx] = True
        qmask &= sel
    if splits is not None:
        wanted_splits = _as_list(splits, "splits")
        query_splits = [q.split for q in table.query_rows]
        have = sorted({s for s in query_splits if s is not None})
        unknown = [x for x in wanted_splits if x not in have]
        if unknown:
            raise UserError(
                f"unknown split(s) {unknown!r}: expected some of {have!r}"
                + ("" if have else " (this table records no splits; split it with `orchestra "
                   "data split FILE --test-fraction 0.2 --seed 0 --out-train train.jsonl "
                   "--out-test test.jsonl`, or OutcomeTable.split() in Python)")
            )
        qmask &= np.array([s in wanted_splits for s in query_splits], dtype=bool)
    if models is None:
        msel = np.arange(table.n_models)
    else:
        msel = np.array([table.model_index(m) for m in _as_list(models, "models")], dtype=np.intp)
    return np.flatnonzero(qmask), msel


def _split_selection(
    table: OutcomeTable, test_fraction: float, *, seed: int, stratify: bool
) -> _Selection:
    """(train rows, test rows) of :meth:`OutcomeTable.split` (see there)."""
    if not isinstance(test_fraction, int | float) or not 0.0 < float(test_fraction) < 1.0:
        raise UserError(
            f"test_fraction={test_fraction!r}: expected a number strictly between 0 and 1 "
            "(e.g. 0.2)"
        )
    rng = np.random.default_rng(seed)
    test = np.zeros(table.n_queries, dtype=bool)
    # The unit drawn is a prompt text: queries that share one (the same prompt under two ids or
    # tasks) go to the same side, so a test prompt is never trained on. With unique texts the
    # units are the queries and the draw is the per-query one.
    units: dict[str, list[int]] = {}
    for i, text in enumerate(table.query_texts):
        units.setdefault(text, []).append(i)
    members = list(units.values())
    unit_task = np.array([table.query_tasks[m[0]] for m in members], dtype=object)
    groups = (
        [np.flatnonzero(unit_task == t) for t in sorted(set(unit_task.tolist()))]
        if stratify
        else [np.arange(len(members))]
    )
    for g in groups:
        k = round(len(g) * float(test_fraction))
        for u in rng.permutation(g)[:k].tolist():
            test[members[u]] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def _as_list(x: Iterable[str], name: str) -> list[str]:
    if isinstance(x, str):
        return [x]
    out = list(x)
    if not all(isinstance(v, str) for v in out):
        raise UserError(f"{name}={out!r}: expected names (strings)")
    return out

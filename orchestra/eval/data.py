"""The queries to evaluate on: a named benchmark's split or a file, a task filter, a seeded subset,
and the quality priors (from a train split, never the evaluated queries)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from orchestra.errors import UserError

if TYPE_CHECKING:
    from orchestra.outcomes.table import OutcomeTable

__all__ = ["EvalData", "load_eval_data"]

#: Names that :func:`load_eval_data` treats as a benchmark with splits (``NAME:SPLIT``).
_KNOWN = ("routerbench", "llmrouter")


@dataclass
class EvalData:
    """The queries to evaluate on and how they were chosen.

    Attributes:
        table: the outcomes (already filtered to the tasks and the subset).
        name: what ``--data`` said.
        split: the split evaluated (None for a file without splits).
        priors: quality priors per model (from a train split), or None.
        priors_source: where the priors came from.
        limit / seed: the seeded random subset's size (None: every query) and seed.
        tasks: the task filter (None: every task).
    """

    table: OutcomeTable
    name: str
    split: str | None
    priors: dict[str, float] | None = None
    priors_source: str | None = None
    limit: int | None = None
    seed: int = 0
    tasks: list[str] | None = None


def load_eval_data(data: str | Path | OutcomeTable, *, split: str | None = None,
                   tasks: Sequence[str] | None = None, limit: int | None = None, seed: int = 0,
                   priors: str | None = "auto") -> EvalData:
    """Load the outcomes to evaluate on.

    Args:
        data: a table, a known name (``routerbench``, ``llmrouter``; ``NAME:SPLIT`` works too) or
            a path (see :func:`orchestra.outcomes.load_outcomes`).
        split: the split (default for a known name: ``test``; for a path: all queries).
        tasks: keep only these tasks.
        limit: keep a seeded random subset of this many queries (table order kept).
        seed: the subset's seed.
        priors: ``auto`` (a known name's train split when evaluating another split), ``none``,
            or a name/path whose mean scores per model become the pool's quality priors (used by
            ``strongest``, ``ensemble,select=strongest`` and vote tie-breaks). Never the
            evaluated queries themselves.

    Raises:
        UserError: unknown data, split, task, or a bad limit.
    """
    table, label, the_split, known = _load_table(data, split)
    if tasks:
        table = table.filter(tasks=list(tasks))
    if limit is not None:
        table = _subset(table, limit, seed)
    prior_src = _priors_source(priors, known, the_split)
    prior_map = _priors_from(prior_src, table.models) if prior_src is not None else None
    if table.n_queries == 0:
        raise UserError(f"no queries left to evaluate in {label!r} (split {the_split!r}, tasks "
                        f"{list(tasks) if tasks else 'all'})")
    return EvalData(table=table, name=label, split=the_split, priors=prior_map,
                    priors_source=prior_src, limit=limit, seed=seed,
                    tasks=list(tasks) if tasks else None)


def _load_table(data: str | Path | OutcomeTable, split: str | None
                ) -> tuple[OutcomeTable, str, str | None, str | None]:
    """(table, label, split evaluated, known benchmark name or None)."""
    from orchestra.outcomes import load_outcomes
    from orchestra.outcomes.table import OutcomeTable

    if isinstance(data, OutcomeTable):
        table = data.filter(splits=[split]) if split is not None else data
        return table, "<table>", split, None
    label = str(data)
    head, _, named_split = label.partition(":")
    if head in _KNOWN and not Path(label).exists():
        the_split = named_split or split or "test"
        return load_outcomes(head, split=the_split), label, the_split, head
    return load_outcomes(data, split=split), label, split, None


def _subset(table: OutcomeTable, limit: int, seed: int) -> OutcomeTable:
    """A seeded random subset of ``limit`` queries, in table order."""
    if limit < 1:
        raise UserError(f"expected --limit >= 1 (got {limit!r})")
    if limit >= table.n_queries:
        return table
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(table.n_queries, size=limit, replace=False))
    ids = table.queries
    return table.filter(query_ids=[ids[i] for i in keep.tolist()])


def _priors_source(priors: str | None, known: str | None, split: str | None) -> str | None:
    """The table whose scores give the priors: ``auto`` → a known benchmark's train split when
    another split is evaluated."""
    p = (priors or "none").strip()
    if p == "auto":
        return f"{known}:train" if known is not None and split not in ("train", "all") else None
    return None if p.lower() == "none" else p


def _priors_from(source: str, models: Sequence[str]) -> dict[str, float]:
    """Mean score per model of ``source`` (missing scores count 0), for the given models."""
    from orchestra.outcomes import load_outcomes

    src = load_outcomes(source)
    s = src.score_matrix()
    return {m: float(np.nanmean(np.nan_to_num(s[:, j], nan=0.0)))
            for j, m in enumerate(src.models) if m in models}

"""Opt-in repairs of an outcome file's bad rows: clipping scores, dropping repeated rows.

Loading is strict by default: one score outside [0, 1], one (query_id, model) pair written twice
or one query id given two texts or tasks rejects the whole file, with the row named. Two
explicit repairs turn those rows into counts instead (``--clip-scores`` / ``--dedupe`` on the
commands that load outcome files; ``clip_scores=`` / ``dedupe=`` in
:func:`~orchestra.outcomes.load_outcomes` and :meth:`OutcomeTable.read
<orchestra.outcomes.OutcomeTable.read>`):

- **clip_scores**: a finite number outside [0, 1] becomes 0 or 1 (a score that is not a number
  stays an error);
- **dedupe**: the first row of a (query_id, model) pair is kept and later ones dropped; a row
  that gives its query id another text or task than the query's first row (or its entry in the
  file's query table) is dropped.

What was repaired is counted in ``table.meta["repairs"]`` (and, inside
:func:`outcome_repairs`, in the :class:`RepairLog` it yields, over every file loaded);
:func:`describe_repairs` says it in one line. A command that loads outcomes through code it does
not own (``orchestra eval``) sets the repairs for that code with :func:`outcome_repairs`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from orchestra.outcomes.rows import CLIP_HINT, DEDUPE_HINT, OutcomeRow

__all__ = [
    "CLIP_HINT",
    "DEDUPE_HINT",
    "RepairLog",
    "Repairs",
    "active_repairs",
    "describe_repairs",
    "outcome_repairs",
]



@dataclass(frozen=True)
class Repairs:
    """Which repairs to apply when loading an outcome file (both off: strict)."""

    clip_scores: bool = False
    dedupe: bool = False

    @property
    def any(self) -> bool:
        return self.clip_scores or self.dedupe


@dataclass
class RepairLog:
    """What the repairs did, summed over every file loaded inside :func:`outcome_repairs`.

    Attributes:
        clipped_scores: scores moved into [0, 1].
        duplicate_pairs: rows dropped for repeating a (query_id, model) pair.
        conflicting_rows: rows dropped for giving a query id another text or task.
        files: one ``table.meta["repairs"]`` record per file loaded.
    """

    clipped_scores: int = 0
    duplicate_pairs: int = 0
    conflicting_rows: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: Mapping[str, Any]) -> None:
        self.clipped_scores += int(record.get("clipped_scores", 0))
        self.duplicate_pairs += int(record.get("duplicate_pairs", 0))
        self.conflicting_rows += int(record.get("conflicting_rows", 0))
        self.files.append(dict(record))

    def to_dict(self) -> dict[str, Any]:
        return {"clipped_scores": self.clipped_scores, "duplicate_pairs": self.duplicate_pairs,
                "conflicting_rows": self.conflicting_rows, "files": list(self.files)}


_ACTIVE: ContextVar[tuple[Repairs, RepairLog | None]] = ContextVar(
    "orchestra_outcome_repairs", default=(Repairs(), None))


@contextmanager
def outcome_repairs(*, clip_scores: bool = False, dedupe: bool = False) -> Iterator[RepairLog]:
    """Apply these repairs to every outcome file loaded in this block (unless a loader is
    given its own), and count what they did in the yielded :class:`RepairLog`."""
    log = RepairLog()
    token = _ACTIVE.set((Repairs(clip_scores=bool(clip_scores), dedupe=bool(dedupe)), log))
    try:
        yield log
    finally:
        _ACTIVE.reset(token)


def active_repairs(clip_scores: bool | None = None, dedupe: bool | None = None) -> Repairs:
    """The repairs to apply: the given flags, else those of the enclosing
    :func:`outcome_repairs` (strict outside one)."""
    ctx, _ = _ACTIVE.get()
    return Repairs(clip_scores=ctx.clip_scores if clip_scores is None else bool(clip_scores),
                   dedupe=ctx.dedupe if dedupe is None else bool(dedupe))


def _log(record: Mapping[str, Any]) -> None:
    _, log = _ACTIVE.get()
    if log is not None:
        log.add(record)


def clip_score_records(records: list[Any]) -> tuple[list[Any], int, list[str]]:
    """Records with every finite score outside [0, 1] clipped into it.

    Returns:
        ``(records, how many were clipped, up to 3 examples "query_id/model: 1.2 -> 1")``.
    """
    out: list[Any] = []
    n = 0
    examples: list[str] = []
    for rec in records:
        if isinstance(rec, Mapping) and "score" in rec:
            v = rec["score"]
            f = _as_float(v)
            if f is not None and math.isfinite(f) and not 0.0 <= f <= 1.0:
                clipped = min(1.0, max(0.0, f))
                if len(examples) < 3:
                    examples.append(f"{rec.get('query_id')}/{rec.get('model')}: {v!r} -> "
                                    f"{clipped:g}")
                rec = {**rec, "score": clipped}
                n += 1
        out.append(rec)
    return out, n, examples


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return None
    try:
        return float(v)
    except ValueError:
        return None


def dedupe_rows(rows: Sequence[OutcomeRow], numbers: Sequence[int],
                queries: Sequence[Any] | None) -> tuple[list[OutcomeRow], list[int], int, int,
                                                        list[str]]:
    """Rows without repeated (query_id, model) pairs or rows that disagree with their query's
    first text and task (the query table's entry when the file has one).

    Returns:
        ``(rows kept, their row numbers, duplicate pairs dropped, conflicting rows dropped,
        up to 3 examples)``.
    """
    first: dict[str, tuple[str, str]] = {}
    for q in queries or ():
        get = q.get if isinstance(q, Mapping) else (lambda k, q=q: getattr(q, k, None))
        qid, text, task = get("query_id"), get("query"), get("task")
        if isinstance(qid, str) and isinstance(text, str) and isinstance(task, str):
            first.setdefault(qid, (text, task))
    pairs: set[tuple[str, str]] = set()
    kept: list[OutcomeRow] = []
    kept_numbers: list[int] = []
    dup = conflict = 0
    examples: list[str] = []
    for row, num in zip(rows, numbers, strict=True):
        ref = first.setdefault(row.query_id, (row.query, row.task))
        if ref != (row.query, row.task):
            conflict += 1
            if len(examples) < 3:
                what = "task" if ref[1] != row.task else "text"
                examples.append(f"row {num}: query id {row.query_id!r} with another {what}")
            continue
        if (row.query_id, row.model) in pairs:
            dup += 1
            if len(examples) < 3:
                examples.append(f"row {num}: ({row.query_id!r}, {row.model!r}) again")
            continue
        pairs.add((row.query_id, row.model))
        kept.append(row)
        kept_numbers.append(num)
    return kept, kept_numbers, dup, conflict, examples


def record_repairs(source: str, repairs: Repairs, *, clipped: int = 0, duplicates: int = 0,
                   conflicts: int = 0, examples: Sequence[str] = ()) -> dict[str, Any]:
    """The ``table.meta["repairs"]`` record of one file (also added to the active log)."""
    record = {"source": source, "clip_scores": repairs.clip_scores, "dedupe": repairs.dedupe,
              "clipped_scores": clipped, "duplicate_pairs": duplicates,
              "conflicting_rows": conflicts, "examples": list(examples)}
    _log(record)
    return record


def describe_repairs(record: Mapping[str, Any] | RepairLog | None) -> str | None:
    """One line saying what the repairs did (``None`` when none were asked for)."""
    if record is None:
        return None
    if isinstance(record, RepairLog):
        if not record.files:
            return None
        rec: Mapping[str, Any] = {
            **record.to_dict(), "source": ", ".join(str(f.get("source")) for f in record.files),
            "examples": [e for f in record.files for e in f.get("examples") or []]}
        asked = {k: any(f.get(k) for f in record.files) for k in ("clip_scores", "dedupe")}
    else:
        rec = record
        asked = {k: bool(rec.get(k)) for k in ("clip_scores", "dedupe")}
    parts = []
    if asked["clip_scores"]:
        parts.append(f"clipped {rec.get('clipped_scores', 0)} score(s) into [0, 1]")
    if asked["dedupe"]:
        parts.append(f"dropped {rec.get('duplicate_pairs', 0)} row(s) repeating a "
                     f"(query_id, model) pair and {rec.get('conflicting_rows', 0)} giving a "
                     "query id another text or task")
    if not parts:
        return None
    ex = list(rec.get("examples") or [])
    return (f"{rec.get('source')}: " + "; ".join(parts)
            + (f" (e.g. {'; '.join(ex[:3])})" if ex else ""))

"""Exported traces as training data: logged bandit feedback turned into a sparse outcome table.

``orchestra traces export --out runs.jsonl`` writes one example a run
(:mod:`orchestra.trace.export`); a graded one (``score``: from ``--grades``, the run's
``Orchestra.feedback`` score or its ``meta["gold"]``) says how good the answer of the model the
run called was. That is **logged bandit feedback**: one model's outcome per query, never the
others'. :func:`table_from_traces` makes it an :class:`~orchestra.outcomes.OutcomeTable` with
one recorded cell per (query, called model), NaN elsewhere, marked
``meta["feedback"] = "logged"``:

- a run counts when it is graded and its route calls went to exactly one model (the grade is
  then that model's outcome); a run that fanned out to several models is skipped (its grade is
  the merged answer's, no one model's), as are runs whose calls all failed and ungraded runs
  (each counted in ``meta["traces"]``);
- the cell's score and cost are the means over the runs of that (query, model) (a query asked
  twice of one model is two observations of it); the query id is the run's ``meta["query_id"]``
  when it had one, else a hash of the text, and the task its ``meta["task"]`` (else ``traces``).

Which policies learn from it is decided by their training code
(:func:`logged_feedback_support`): ``bandit`` (per-model ridge regressions on the queries routed
to that model: exactly what a log gives), ``knn`` / ``mlp`` / ``mf`` (their scorers, cost model
and loss already skip unrecorded cells; hyperparameters are chosen by out-of-fold log-loss on the
observed cells, and λ is calibrated with each unobserved choice's predicted outcome); not
``escalate`` nor ``gnn`` (see the reasons there).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import UserError

__all__ = ["DEFAULT_TASK", "Observation", "is_trace_file", "logged_feedback_support",
           "observations_from_traces", "refuse_logged", "table_from_traces"]

#: Task given to runs without ``meta["task"]``.
DEFAULT_TASK = "traces"
_RUNTIME_ROLES = frozenset({"refine", "policy", "tool"})

#: Why a policy cannot learn from logged feedback, by kind (absent: it can).
_CANNOT = {
    "escalate": (
        "escalate's training replays, on every training query, the answers of every model the "
        "cascade might call next and grades them (its scorer reads how answers agree); a trace "
        "holds only the answers of the models its run called"
    ),
    "gnn": (
        "the GNN's early stopping and λ calibration score every model's choice on held-out "
        "queries (validation AIQ), which needs each model's outcome on them; a trace holds the "
        "called model's only"
    ),
}


def logged_feedback_support(kind: str) -> str | None:
    """``None`` when policy ``kind`` can train on logged feedback, else why not."""
    return _CANNOT.get(kind)


def refuse_logged(kind: str, path: str) -> UserError:
    """The error for a policy that cannot learn from the traces file ``path``."""
    why = _CANNOT[kind]
    return UserError(
        f"`orchestra train {kind}` cannot learn from {path!r}: it is exported traces, logged "
        f"bandit feedback (each run shows only the called model's outcome), and {why}. Missing: "
        "the other models' outcomes on the same queries. Record a full table (`orchestra record "
        "--pool P --data SET --out outcomes.jsonl`) and train on it, or train a policy that "
        "learns from traces: bandit, knn, mlp or mf"
    )


def is_trace_file(path: str | Path) -> bool:
    """Whether ``path`` is a JSONL file of exported traces (its first object has ``run_id``
    and ``calls``), as opposed to an outcome table."""
    p = Path(path)
    if p.suffix.lower() != ".jsonl" or not p.is_file():
        return False
    with p.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                first = json.loads(line)
            except json.JSONDecodeError:
                return False
            return isinstance(first, dict) and "run_id" in first and "calls" in first
    return False


@dataclass(frozen=True)
class Observation:
    """One graded run as one model's outcome on one query."""

    run_id: str
    query_id: str
    query: str
    task: str
    model: str
    score: float
    cost_usd: float
    latency_s: float
    input_tokens: int
    output_tokens: int


def observations_from_traces(path: str | Path, *, clip_scores: bool = False
                             ) -> tuple[list[Observation], dict[str, int]]:
    """Every usable run of an exported traces file, in file order (oldest first), and the
    counts of runs read, used and skipped by reason (see the module docstring).

    Raises:
        UserError: an unreadable file, no graded run (with how to add grades), a grade outside
            [0, 1] without ``clip_scores``, or no run usable as one model's outcome.
    """
    from orchestra.outcomes.rows import CLIP_HINT
    from orchestra.trace.export import read_examples

    name = str(path)
    out: list[Observation] = []
    queries: dict[str, tuple[str, str]] = {}
    stats = {"runs": 0, "used": 0, "ungraded": 0, "several_models": 0, "no_model_call": 0,
             "failed_calls": 0, "clipped_scores": 0}
    for ex in read_examples(path):
        stats["runs"] += 1
        if ex.score is None:
            stats["ungraded"] += 1
            continue
        score = float(ex.score)
        if not 0.0 <= score <= 1.0:
            if not clip_scores:
                raise UserError(f"{name}: run {ex.run_id!r} has score {ex.score!r}; expected a "
                                f"number in [0, 1]{CLIP_HINT}")
            score = min(1.0, max(0.0, score))
            stats["clipped_scores"] += 1
        route = [c for c in ex.calls if c.role not in _RUNTIME_ROLES]
        models = {c.model for c in route}
        if not models:
            stats["no_model_call"] += 1
            continue
        if len(models) > 1:
            stats["several_models"] += 1
            continue
        if all(c.error is not None for c in route):
            stats["failed_calls"] += 1
            continue
        by_text = "q-" + hashlib.sha1(ex.query.encode()).hexdigest()[:16]
        qid = ex.query_id or by_text
        text, task = queries.setdefault(qid, (ex.query, ex.task or DEFAULT_TASK))
        if text != ex.query:  # a query id reused for another text: key this one by its text
            qid = by_text
            text, task = queries.setdefault(qid, (ex.query, ex.task or DEFAULT_TASK))
        out.append(Observation(
            run_id=ex.run_id, query_id=qid, query=text, task=task, model=route[0].model,
            score=score, cost_usd=math.fsum(c.cost_usd for c in route),
            latency_s=math.fsum(c.latency_s for c in route),
            input_tokens=sum(c.input_tokens for c in route),
            output_tokens=sum(c.output_tokens for c in route)))
        stats["used"] += 1
    if stats["runs"] and stats["ungraded"] == stats["runs"]:
        raise UserError(
            f"none of the {stats['runs']} runs in {name!r} carries a score (grade), so there is "
            "nothing to learn from; add grades, then export again: call "
            "Orchestra.feedback(run_id, score=...) for each run (the export reads the feedback), "
            "give runs meta={'gold': ...} to grade by exact match, or export with "
            "`orchestra traces export --out FILE --grades grades.json` ({run id or query: score})"
        )
    if not out:
        raise UserError(
            f"no run in {name!r} gives one model's graded outcome (runs {stats['runs']}: "
            f"{stats['ungraded']} ungraded, {stats['several_models']} called several models, "
            f"{stats['no_model_call']} called none, {stats['failed_calls']} only failed calls); "
            "expected graded runs that each called one model (e.g. --policy bandit, knn or mf)"
        )
    return out, stats


def table_from_traces(path: str | Path, *, clip_scores: bool = False) -> Any:
    """The sparse outcome table of a file of exported traces (see the module docstring).

    Args:
        path: a file written by ``orchestra traces export``.
        clip_scores: clip grades outside [0, 1] into it (counted) instead of refusing them.

    Returns:
        An :class:`~orchestra.outcomes.OutcomeTable` with ``meta["feedback"] == "logged"`` and
        ``meta["traces"]``: runs read, used, and skipped by reason.

    Raises:
        UserError: as :func:`observations_from_traces`.
    """
    from orchestra.outcomes.table import OutcomeTable

    obs, stats = observations_from_traces(path, clip_scores=clip_scores)
    cells: dict[tuple[str, str], list[Observation]] = {}
    for o in obs:
        cells.setdefault((o.query_id, o.model), []).append(o)
    rows = []
    for (qid, model), group in cells.items():
        n = len(group)
        rows.append({
            "query_id": qid, "query": group[0].query, "task": group[0].task, "model": model,
            "score": math.fsum(o.score for o in group) / n,
            "cost_usd": math.fsum(o.cost_usd for o in group) / n,
            "latency_s": math.fsum(o.latency_s for o in group) / n,
            "input_tokens": round(sum(o.input_tokens for o in group) / n),
            "output_tokens": round(sum(o.output_tokens for o in group) / n),
        })
    stats = {**stats, "cells": len(rows)}
    return OutcomeTable(rows, meta={"feedback": "logged", "source": str(path), "traces": stats},
                        source=Path(path).name)

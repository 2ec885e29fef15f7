"""Live evaluation: routing policies on your own pool, graded against gold answers.

``orchestra eval --pool P --data SET --policy ...`` (:func:`aevaluate_live`) gives the same
report, plot and AIQ as the replay path (:mod:`orchestra.eval.harness`), with real calls:

1. **References.** Every model of the pool answers every question
   (:func:`orchestra.record.arecord` into ``<work>/singles.jsonl``): the single models, the
   oracle, the hull and AIQ's cost scale (the priciest model's cost on these questions) come
   from that table, as the replay path's come from a recorded one. The file is an ordinary
   outcome table: ``orchestra eval --data <work>/singles.jsonl`` replays it, and
   ``orchestra train`` trains on it.
2. **Policies.** Each policy runs on the live pool through the harness (the same λ sweep,
   shared runs for the learned routers, the same metrics); each run's final answer is graded
   against the gold answers by the set's grader (:class:`GoldGrader`), whatever produced it
   (one model, a vote, a refiner, the policy's own text).
3. **Budget.** ``total_usd`` is a hard limit on the whole evaluation, the references'
   recording and earlier attempts included: the recording reserves each answer's worst case
   (as ``orchestra record`` does); each policy run reserves its per-run USD limit (``budget.usd``,
   required with a total) before it starts, so a started run can never take the total past
   the limit. When the next run does not fit, that policy is reported as failed with the way
   to continue, and the evaluation goes on with the runs it can still reuse.
4. **Resuming.** Every graded run is appended to ``<work>/runs.jsonl`` (flushed) under its key
   (policy spec and λ, or a shared run's query and planned calls); ``resume=True`` reuses those
   runs instead of paying for them again, and continues the recording. An online policy
   (``observe``) does not learn again from reused runs: evaluate it in one go for its learning
   curve.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestra.errors import UserError
from orchestra.eval.data import EvalData
from orchestra.eval.grading import EvalQuery, Grader
from orchestra.eval.harness import ProgressFn, Runner, _record, _Run, aevaluate
from orchestra.eval.specs import PolicySpec
from orchestra.trace.events import Event, Refined

if TYPE_CHECKING:
    from orchestra.backends.base import Backend
    from orchestra.eval.report import EvalReport
    from orchestra.outcomes.table import OutcomeTable
    from orchestra.record.graders import Grader as AnswerGrader
    from orchestra.record.recorder import RecordProgress
    from orchestra.record.sets import LabelledItem
    from orchestra.runtime import Orchestra, RunResult
    from orchestra.spec import Budget, Pool

__all__ = ["GoldGrader", "LiveRunner", "RunJournal", "aevaluate_live", "evaluate_live"]

SINGLES = "singles.jsonl"
RUNS = "runs.jsonl"


class GoldGrader(Grader):
    """Grades a run's final answer text against the question's gold answers.

    Args:
        table: the recorded single-model outcomes of the questions (their order and ids).
        items: the labelled questions, by id.
        grader: the answer grader (:func:`orchestra.record.graders.resolve_grader`).
    """

    def __init__(self, table: OutcomeTable, items: dict[str, LabelledItem],
                 grader: AnswerGrader) -> None:
        super().__init__(table)
        missing = [q.query_id for q in self.queries if q.query_id not in items]
        if missing:
            raise UserError(f"the recorded table has questions the set does not ({missing[:3]}"
                            "...); record the references into a fresh --live-dir")
        self._items = items
        self._grade = grader

    def grade(self, q: EvalQuery, answer: str | None, events: Sequence[Event],
              answer_from: str | None = None) -> tuple[float, bool]:
        """(score of ``answer`` against the gold answers, whether a vote over several outputs
        produced it)."""
        voted = bool(answer) and any(isinstance(ev, Refined) and len(ev.inputs) > 1
                                     and ev.output == answer for ev in events)
        return self._grade(answer or None, self._items[q.query_id]), voted


class RunJournal:
    """Graded runs of an evaluation, one JSON line each, appended and flushed as they finish.

    Args:
        path: the file; read first when ``resume`` (a line cut short by a kill is dropped).
        resume: continue the file; otherwise an existing non-empty file is an error.
    """

    def __init__(self, path: Path, *, resume: bool) -> None:
        self.path = path
        self.runs: dict[str, _Run] = {}
        self.dropped_tail = False
        if path.exists() and path.stat().st_size and not resume:
            raise UserError(f"{str(path)!r} holds runs of an earlier evaluation; continue it "
                            "with --resume, or give another --live-dir")
        if resume and path.exists():
            self._read()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = path.open("a", encoding="utf-8")

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                run = _Run(score=float(rec["score"]), aggregated=bool(rec["aggregated"]),
                           cost=float(rec["cost"]), calls=int(rec["calls"]),
                           rounds=int(rec["rounds"]), stop_reason=str(rec["stop_reason"]),
                           called=tuple(rec["called"]), call_errors=tuple(rec["call_errors"]))
                key = str(rec["key"])
            except (ValueError, KeyError, TypeError) as e:
                if n == len(lines):  # the last line, cut short by a kill
                    self.dropped_tail = True
                    self._truncate_tail(len(lines) - 1)
                    return
                raise UserError(f"{self.path.name} line {n} is not a graded run ({e}); move the "
                                "file aside to start the runs again") from None
            self.runs.setdefault(key, run)

    def _truncate_tail(self, keep: int) -> None:
        text = self.path.read_text(encoding="utf-8").splitlines(keepends=True)[:keep]
        self.path.write_text("".join(text), encoding="utf-8")

    @property
    def spent_usd(self) -> float:
        """What the journaled runs cost."""
        return math.fsum(r.cost for r in self.runs.values())

    def add(self, key: str, run: _Run, trace_id: str) -> None:
        """Record a graded run (flushed and synced before this returns)."""
        self.runs[key] = run
        self._f.write(json.dumps({"key": key, **asdict(run), "trace_id": trace_id}) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


class _TotalSpent(UserError):
    pass


class LiveRunner(Runner):
    """Runs a query on the live pool under the evaluation's total budget, journaling each graded
    run and reusing the journaled ones.

    Args:
        grader: a :class:`GoldGrader`.
        journal: the runs so far.
        total_usd: hard limit on the whole evaluation (None: none).
        spent_usd: what the evaluation spent before the policies' runs (the references and
            failed answers), journaled runs excluded.
        per_run_usd: what each run reserves (its own USD limit); required with a total.
    """

    def __init__(self, grader: Grader, journal: RunJournal, *, total_usd: float | None,
                 spent_usd: float, per_run_usd: float | None) -> None:
        super().__init__(grader)
        if total_usd is not None and per_run_usd is None:
            raise UserError("a total budget (--total-usd) needs a USD limit per run to reserve "
                            "before each run starts; give --budget-usd too")
        self.journal = journal
        self.total_usd, self.per_run_usd = total_usd, per_run_usd
        self.before_usd = spent_usd
        self.session_usd = 0.0
        self.in_flight_usd = 0.0
        self.made = 0
        self.reused = 0
        self.overruns: list[dict[str, Any]] = []

    @property
    def spent_usd(self) -> float:
        """The whole evaluation's spend so far (references, journaled runs, this session)."""
        return self.before_usd + self.journal.spent_usd

    async def run(self, orch: Orchestra, q: EvalQuery, key: str
                  ) -> tuple[_Run, RunResult | None]:
        hit = self.journal.runs.get(key)
        if hit is not None:
            self.reused += 1
            return hit, None
        need = 0.0
        if self.total_usd is not None and self.per_run_usd is not None:
            need = self.per_run_usd
            left = self.total_usd - self.spent_usd - self.in_flight_usd
            if need > left + 1e-12:
                raise _TotalSpent(
                    f"the evaluation's total budget (${self.total_usd:.6g}) is spent: "
                    f"${self.spent_usd:.6g} so far, and the next run reserves its limit "
                    f"${need:.6g}; continue with --resume and a larger --total-usd")
        self.in_flight_usd += need
        try:
            res = await orch.arun(q.text, meta={"query_id": q.query_id, "task": q.task})
        finally:
            self.in_flight_usd -= need
        run = _record(self.grader, q, res)
        self.made += 1
        self.session_usd += res.cost_usd
        if self.per_run_usd is not None and res.cost_usd > self.per_run_usd + 1e-12:
            self.overruns.append({"key": key, "cost_usd": res.cost_usd,
                                  "reserved_usd": self.per_run_usd})
        self.journal.add(key, run, res.trace_id)
        return run, res


def _items_of(data: Sequence[str | Path], *, limit: int | None, seed: int | None,
              ) -> list[LabelledItem]:
    from orchestra.outcomes import load_outcomes
    from orchestra.record.sets import items_from_table, load_labelled, looks_like_outcomes

    items: list[LabelledItem] = []
    seen: set[str] = set()
    for spec in data:
        path = Path(spec).expanduser()
        if path.is_file() and looks_like_outcomes(path):
            # A recorded table (e.g. the test part of `orchestra data split`): its questions.
            found = items_from_table(load_outcomes(path))
            if seed is not None:
                random.Random(seed).shuffle(found)
            found = found[:limit] if limit is not None else found
        else:
            found = load_labelled(spec, limit=limit, seed=seed).items
        for it in found:
            if it.id not in seen:
                seen.add(it.id)
                items.append(it)
    if not items:
        raise UserError(f"no questions in {[str(d) for d in data]}; expected a labelled set")
    return items


async def aevaluate_live(
    pool: Pool | str | Path,
    data: Sequence[str | Path],
    policies: Sequence[str | PolicySpec],
    *,
    work: str | Path,
    resume: bool = False,
    limit: int | None = None,
    seed: int | None = None,
    grader: str | None = None,
    total_usd: float | None = None,
    budget: Budget | None = None,
    lambdas: str | Sequence[float] | None = "auto",
    concurrency: int | None = None,
    max_tokens: int | None = None,
    share_runs: bool = True,
    backend: Backend | None = None,
    progress: ProgressFn | None = None,
    record_progress: Callable[[RecordProgress], None] | None = None,
) -> EvalReport:
    """Evaluate policies live on ``pool`` against the gold answers of ``data``.

    Args:
        pool: a pool, its name or a YAML file.
        data: labelled sets (:func:`orchestra.record.sets.load_labelled`: ``nq``, ``gsm8k``, a
            JSON/JSONL/CSV file with a gold column, ``hf:NAME``), or outcome tables written by
            ``orchestra record`` / ``orchestra data split`` (their questions and gold answers).
        policies: policy specs, as for the replay evaluation.
        work: the folder of the evaluation's files (``singles.jsonl``: the references' recording;
            ``runs.jsonl``: the policies' graded runs).
        resume: continue the files in ``work`` without paying again for what they hold.
        limit / seed: the first ``limit`` questions of each set (after a shuffle with ``seed``).
        grader: ``auto`` (each set's default), a built-in grader or ``module:function``.
        total_usd: hard USD limit on the whole evaluation (needs ``budget.usd``).
        budget: each run's limits (the references' answers get at most ``max_tokens``).
        lambdas: the λ sweep (as :func:`orchestra.eval.harness.evaluate`).
        concurrency: runs in flight (default: 1 when a pool model is local, else 4).
        max_tokens: the most output tokens of each model's answer (references and policies).
        share_runs: as :func:`orchestra.eval.harness.evaluate`.
        backend: how models are called (default: litellm, as :class:`Orchestra` does).
        progress / record_progress: progress of the policies' runs / of the recording.

    Raises:
        UserError: a bad pool, set, grader, budget, or ``work`` holding an earlier evaluation
            without ``resume``.
    """
    from orchestra.backends.priced import priced_pool
    from orchestra.outcomes import load_outcomes
    from orchestra.record.graders import resolve_grader
    from orchestra.record.recorder import arecord
    from orchestra.spec import Pool

    if total_usd is not None and not (math.isfinite(total_usd) and total_usd > 0):
        raise UserError(f"--total-usd {total_usd!r}: expected a positive number of USD")
    per_run = budget.usd if budget is not None else None
    if total_usd is not None and per_run is None:
        raise UserError("a total budget (--total-usd) needs a USD limit per run to reserve "
                        "before each run starts; give --budget-usd too")
    folder = Path(work).expanduser()
    singles_path, runs_path = folder / SINGLES, folder / RUNS
    if not resume and any(p.exists() and p.stat().st_size for p in (singles_path, runs_path)):
        raise UserError(f"{str(folder)!r} holds an earlier live evaluation; continue it with "
                        "--resume, or give another --live-dir")
    the_pool = priced_pool(pool if isinstance(pool, Pool) else Pool.load(pool))
    items = _items_of(data, limit=limit, seed=seed)
    answer_grader = resolve_grader(grader)
    answer_grader.check(items[0])
    if max_tokens is not None:
        the_pool = the_pool.model_copy(update={"models": tuple(
            m.model_copy(update={"max_output_tokens": max_tokens}) for m in the_pool.models)})
    local = any(m.provider == "local" for m in the_pool.models)
    conc = concurrency if concurrency is not None else (1 if local else 4)
    if conc < 1:
        raise UserError(f"--concurrency {conc!r}: expected 1 or more")
    if backend is None:
        the_pool.check_keys([m.name for m in the_pool.models])
        from orchestra.backends.litellm_client import LiteLLMBackend

        backend = LiteLLMBackend()
    folder.mkdir(parents=True, exist_ok=True)
    journal = RunJournal(runs_path, resume=resume)
    try:
        summary = await arecord(
            the_pool, items, singles_path, grader=answer_grader,
            budget_usd=None if total_usd is None else max(total_usd - journal.spent_usd, 1e-12),
            concurrency=conc, resume=singles_path.exists(), backend=backend,
            data=[str(d) for d in data], progress=record_progress)
        if summary.stopped is not None:
            raise UserError(f"recording the references stopped: {summary.stop_detail}")
        if summary.failed:
            first = summary.failures[0] if summary.failures else {}
            raise UserError(f"{summary.failed} reference answers could not be recorded (first: "
                            f"{first.get('model')}: {first.get('error')}); fix the pool, then "
                            "--resume")
        table = load_outcomes(singles_path)
        by_id = {it.id: it for it in items}
        table = table.filter(query_ids=[q for q in table.queries if q in by_id])
        ev_data = EvalData(table=table, name=",".join(str(d) for d in data), split=None,
                           limit=limit, seed=seed if seed is not None else 0)
        runner = LiveRunner(GoldGrader(table, by_id, answer_grader), journal,
                            total_usd=total_usd, spent_usd=summary.total_usd,
                            per_run_usd=per_run)
        report = await aevaluate(ev_data, policies, lambdas=lambdas, backend=backend,
                                 budget=budget, concurrency=conc, apgr=False, progress=progress,
                                 share_runs=share_runs, pool=the_pool, runner=runner)
    finally:
        journal.close()
    report.settings["live"] = {
        "pool": the_pool.name, "work": str(folder), "grader": answer_grader.spec,
        "questions": len(items), "total_usd": total_usd, "per_run_usd": per_run,
        "references_usd": summary.total_usd, "runs_usd": journal.spent_usd,
        "spent_usd": runner.spent_usd, "runs_made": runner.made, "runs_reused": runner.reused,
        "references_recorded_now": summary.recorded, "max_tokens": max_tokens,
        "overruns": runner.overruns,
    }
    return report


def evaluate_live(pool: Pool | str | Path, data: Sequence[str | Path],
                  policies: Sequence[str | PolicySpec], **options: Any) -> EvalReport:
    """:func:`aevaluate_live`, synchronously."""
    return asyncio.run(aevaluate_live(pool, data, policies, **options))

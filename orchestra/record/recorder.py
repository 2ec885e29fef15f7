"""Recording outcomes: every chosen (agent, model) of a pool answers every question of a set.

Each answer is a real run of :class:`~orchestra.runtime.Orchestra` with the ``single:<model>``
policy (one call to that model through the pool's agent, then the answer), so it has a trace and
its cost is charged by the run's ledger. The answer is graded (:mod:`orchestra.record.graders`),
the grade goes into the trace as feedback (:meth:`Orchestra.feedback`), and the row is appended
to the outcome file (:mod:`orchestra.record.files`) at once.

**Budget.** ``budget_usd`` is a hard limit on the whole recording, earlier attempts of a
resumed one included. Before a run starts, its worst case (the one call's prompt tokens × input
price + max output tokens × output price, computed as the ledger does) is reserved against what
is left; the run gets exactly that as its own USD limit, so its ledger can never spend more. A
run whose worst case does not fit is never started: the recording stops there and says so.
Questions go in order, each asked of every pair before the next, so a stopped recording holds
whole questions.

**Resuming.** Rows are appended and flushed as each answer is graded. With ``resume=True`` the
(query, model) pairs already in the file are skipped and what they (and any failed answers)
cost counts toward the budget, so a recording killed at any point continues without paying for
any recorded answer again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestra.backends.base import Backend
from orchestra.backends.priced import priced_pool
from orchestra.errors import OrchestraError, UserError
from orchestra.outcomes.rows import OutcomeRow
from orchestra.policies.baselines import SinglePolicy
from orchestra.prompts import build_messages
from orchestra.record.files import OutcomeFile, Prior
from orchestra.record.graders import Grader, resolve_grader
from orchestra.record.sets import LabelledItem
from orchestra.runtime import Orchestra
from orchestra.spec import Budget, Pool
from orchestra.trace.store import TraceStore

__all__ = ["Pair", "RecordProgress", "RecordSummary", "arecord", "choose_pairs", "record"]

# Reservations carry a hair of slack over the computed worst case, so that float rounding in
# the run's own ledger can never shrink the answer's max_tokens.
_SLACK = 1e-9

Stopped = Literal["budget", "overrun", "interrupted", "error"]


@dataclass(frozen=True)
class Pair:
    """An (agent, model) that answers, and the model name its rows carry.

    Attributes:
        agent: the pool's agent.
        model: the pool's model name.
        label: the ``model`` column of its rows (the model name; ``agent@model`` when the
            recording uses several agents).
    """

    agent: str
    model: str
    label: str


@dataclass(frozen=True)
class RecordProgress:
    """Where a recording stands, after each answer.

    Attributes:
        done: answers finished in this session (recorded or failed).
        todo: answers this session set out to get.
        skipped: pairs already in the file (resumed).
        failed: answers that could not be recorded in this session.
        spent_usd: USD of the whole recording, earlier attempts included.
        budget_usd: the limit, or None.
        elapsed_s: seconds since this session started.
        eta_s: seconds left at the pace so far (None before the first answer).
        last: the last row written.
    """

    done: int
    todo: int
    skipped: int
    failed: int
    spent_usd: float
    budget_usd: float | None
    elapsed_s: float
    eta_s: float | None
    last: OutcomeRow | None = None


@dataclass
class RecordSummary:
    """What a recording did.

    Attributes:
        out: the outcome file.
        pairs: the row model names, in order.
        questions: questions in the sets (after ``limit``).
        todo: answers this session set out to get (pairs not yet in the file).
        skipped: pairs already in the file.
        recorded: rows written in this session.
        failed: answers that could not be recorded (``failures`` has the first ones).
        session_usd / total_usd: USD spent by this session / by the whole recording.
        budget_usd: the limit, or None.
        stopped: why the recording stopped before the end (``budget``: the next answer's worst
            case did not fit; ``overrun``: a provider billed above a reservation;
            ``interrupted``; ``error``), or None when every pair was asked.
        stop_detail: the sentence that says so.
        seconds: wall time of this session's answers (from the first question on).
        setup_s: wall time before the first question (loading the set, the models, litellm).
        per_model: over the whole file, per row model: answers, accuracy (mean score), cost_usd,
            mean latency_s.
        per_task: the same per task, then per model.
        failures: up to 10 failed answers (query_id, model, error).
        dropped_tail: whether a row cut short by a kill was dropped when resuming.
        trace_ids: the run ids of this session's recorded answers, by (query_id, model).
    """

    out: Path
    pairs: list[str]
    questions: int
    todo: int
    skipped: int
    recorded: int = 0
    failed: int = 0
    session_usd: float = 0.0
    total_usd: float = 0.0
    budget_usd: float | None = None
    stopped: Stopped | None = None
    stop_detail: str = ""
    seconds: float = 0.0
    setup_s: float = 0.0
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_task: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    dropped_tail: bool = False
    trace_ids: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    @property
    def seconds_per_answer(self) -> float | None:
        """Wall seconds per answer in this session (None before any)."""
        n = self.recorded + self.failed
        return self.seconds / n if n else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: everything but the trace ids."""
        return {
            "out": str(self.out), "pairs": self.pairs, "questions": self.questions,
            "todo": self.todo, "skipped": self.skipped, "recorded": self.recorded,
            "failed": self.failed, "session_usd": self.session_usd,
            "total_usd": self.total_usd, "budget_usd": self.budget_usd,
            "stopped": self.stopped, "stop_detail": self.stop_detail,
            "seconds": round(self.seconds, 3), "setup_s": round(self.setup_s, 3),
            "seconds_per_answer": (None if self.seconds_per_answer is None
                                   else round(self.seconds_per_answer, 4)),
            "per_model": self.per_model, "per_task": self.per_task,
            "failures": self.failures, "dropped_tail": self.dropped_tail,
        }


def choose_pairs(pool: Pool, models: Sequence[str] | None = None,
                 agent: str | None = None) -> list[Pair]:
    """The (agent, model) pairs to record.

    Args:
        pool: the (priced) pool.
        models: model names, or ``agent@model`` entries (comma-separated entries are split);
            default: every model the agent may use.
        agent: the agent for entries without one (default: the pool's answer agent).

    Raises:
        UserError: an unknown agent or model, a model the agent may not use, or a pair named
            twice.
    """
    default_agent = pool.agent(agent).name if agent else pool.answer_agent.name
    wanted: list[tuple[str, str]] = []
    for entry in [x.strip() for m in models or () for x in m.split(",") if x.strip()]:
        a, _, m = entry.rpartition("@")
        wanted.append((a or default_agent, m))
    if not wanted:
        wanted = [(default_agent, m.name) for m in pool.models_for(default_agent)]
    pairs: list[tuple[str, str]] = []
    for a, m in wanted:
        spec = pool.model(m)
        if spec not in pool.models_for(a):
            raise UserError(f"agent {a!r} may not run on model {m!r} in pool {pool.name!r}; "
                            f"expected one of {[x.name for x in pool.models_for(a)]}")
        if (a, spec.name) in pairs:
            raise UserError(f"--models names {a}@{spec.name} twice; expected each pair once")
        pairs.append((a, spec.name))
    several = len({a for a, _ in pairs}) > 1
    return [Pair(a, m, f"{a}@{m}" if several else m) for a, m in pairs]


def record(pool: Pool | str | Path, items: Sequence[LabelledItem], out: str | Path,
           **options: Any) -> RecordSummary:
    """Record outcomes (sync). See :func:`arecord` for the arguments."""
    return asyncio.run(arecord(pool, items, out, **options))


async def arecord(
    pool: Pool | str | Path,
    items: Sequence[LabelledItem],
    out: str | Path,
    *,
    models: Sequence[str] | None = None,
    agent: str | None = None,
    grader: str | Grader | None = None,
    budget_usd: float | None = None,
    concurrency: int | None = None,
    resume: bool = False,
    max_tokens: int | None = None,
    backend: Backend | None = None,
    store: TraceStore | Literal[False] = False,
    data: Sequence[str] = (),
    progress: Callable[[RecordProgress], None] | None = None,
) -> RecordSummary:
    """Record every chosen (agent, model) of ``pool`` answering every item into ``out``.

    Args:
        pool: a pool, its name or a YAML path.
        items: the questions (:func:`~orchestra.record.sets.load_labelled`).
        out: the outcome file (``.jsonl``, ``.csv`` or ``.parquet``).
        models: which models answer (see :func:`choose_pairs`); default: all of the agent's.
        agent: the answering agent (default: the pool's answer agent).
        grader: ``auto`` (None; each item's default), a built-in name or ``module:function``.
        budget_usd: hard USD limit on the whole recording, earlier attempts included.
        concurrency: answers in flight at once (default: 1 when a local model answers, else 4).
        resume: continue ``out``: skip the pairs in it and count what they cost.
        max_tokens: the most output tokens per answer (default: each model's
            ``max_output_tokens`` in the pool).
        backend: how models are called (default: litellm, as ``Orchestra`` does).
        store: where the traces go (a :class:`TraceStore`), or False for none.
        data: what the items came from, kept in the table's metadata.
        progress: called after each answer with a :class:`RecordProgress`.

    Raises:
        UserError: before any call — a bad pool, model, grader, budget, concurrency or output
            file (an existing one without ``resume``); a resumed file whose questions changed;
            during the recording — a user's grader that fails (the answer's cost is kept).
    """
    t0 = time.perf_counter()
    if not items:
        raise UserError("no questions to record; expected a labelled set with at least one")
    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd > 0):
        raise UserError(f"--budget-usd {budget_usd!r}: expected a positive number of USD")
    if concurrency is not None and concurrency < 1:
        raise UserError(f"--concurrency {concurrency!r}: expected 1 or more")
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"--max-tokens {max_tokens!r}: expected 1 or more output tokens")
    file = OutcomeFile(out, resume=resume)  # an existing file without resume: refused first
    prior = file.read_prior()
    by_id = {it.id: it for it in items}
    for r in prior.rows:
        it = by_id.get(r.query_id)
        if it is not None and r.query != it.prompt:
            raise UserError(
                f"{file.path.name}: question {r.query_id!r} was recorded as {r.query!r:.80} but "
                f"the set now says {it.prompt!r:.80}; expected the same set — record into "
                "another --out")
    the_pool = priced_pool(pool if isinstance(pool, Pool) else Pool.load(pool))
    pairs = choose_pairs(the_pool, models, agent)
    if max_tokens is not None:
        chosen = {p.model for p in pairs}
        the_pool = the_pool.model_copy(update={"models": tuple(
            m.model_copy(update={"max_output_tokens": max_tokens}) if m.name in chosen else m
            for m in the_pool.models)})
    the_grader = grader if isinstance(grader, Grader) else resolve_grader(grader)
    the_grader.check(items[0])
    if backend is None:
        the_pool.check_keys([p.model for p in pairs])
        from orchestra.backends.litellm_client import LiteLLMBackend
        from orchestra.backends.pricing import import_litellm

        backend = LiteLLMBackend()
        # Imported now (~5 s here), so the first answer's latency is the model's alone.
        await asyncio.to_thread(import_litellm)
    for name in sorted({the_pool.model(p.model).id for p in pairs}):
        if name.startswith("local/"):
            # Loaded now, so the first answer's latency is not the model's load time.
            from orchestra.backends.local import load_model

            await asyncio.to_thread(load_model, name)
    done = {(r.query_id, r.model) for r in prior.rows}
    todo = [(it, p) for it in items for p in pairs if (it.id, p.label) not in done]
    skipped = sum(1 for it in items for p in pairs if (it.id, p.label) in done)
    if concurrency is None:
        local = any(the_pool.model(p.model).provider == "local" for p in pairs)
        concurrency = 1 if local else 4
    summary = RecordSummary(out=file.path, pairs=[p.label for p in pairs], questions=len(items),
                            todo=len(todo), skipped=skipped, budget_usd=budget_usd,
                            dropped_tail=prior.dropped_tail)
    rec = _Recording(the_pool, pairs, the_grader, backend, store, file, prior, summary,
                     budget_usd, progress)
    file.open()
    try:
        await rec.run(todo, concurrency)
    except (asyncio.CancelledError, KeyboardInterrupt):
        summary.stopped = "interrupted"
        summary.stop_detail = (f"interrupted: {summary.recorded} answers recorded in "
                               f"{file.path}; continue with --resume")
        raise
    finally:
        t_loop = rec.t_loop or time.perf_counter()
        summary.setup_s = t_loop - t0
        summary.seconds = time.perf_counter() - t_loop
        rec.finish(items, data)
    return summary


class _Recording:
    """The state of one session: what is spent and in flight, the rows, the summary."""

    def __init__(self, pool: Pool, pairs: list[Pair], grader: Grader, backend: Backend,
                 store: TraceStore | Literal[False], file: OutcomeFile, prior: Prior,
                 summary: RecordSummary, budget_usd: float | None,
                 progress: Callable[[RecordProgress], None] | None) -> None:
        self.pool, self.pairs, self.grader, self.backend = pool, pairs, grader, backend
        self.store, self.file, self.prior, self.summary = store, file, prior, summary
        self.budget_usd, self.progress = budget_usd, progress
        self.t_loop: float | None = None
        self.rows: list[OutcomeRow] = list(prior.rows)
        self.prior_usd = prior.spent_usd
        self.session_usd = 0.0
        self.in_flight_usd = 0.0
        self.finished = 0
        self.halt: Stopped | None = None
        self.policies = {p: SinglePolicy(pool, p.model, agent=p.agent) for p in pairs}

    # ------------------------------------------------------------------ the loop
    async def run(self, todo: list[tuple[LabelledItem, Pair]], concurrency: int) -> None:
        s = self.summary
        self.t_loop = time.perf_counter()
        if self.budget_usd is not None and self.prior_usd > self.budget_usd + 1e-12:
            s.stopped = "budget"
            s.stop_detail = (f"the recording already spent ${self.prior_usd:.6g}, above "
                             f"--budget-usd ${self.budget_usd:.6g}; nothing was asked")
            return
        self._report(None)
        sem = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()
        errors: list[BaseException] = []
        try:
            for n, (item, pair) in enumerate(todo):
                await sem.acquire()
                if self.halt is not None or errors:
                    sem.release()
                    break
                worst = self.worst_case(item, pair)
                allowance = worst * (1 + _SLACK) if worst > 0 else 0.0
                left = await self._room_for(allowance, tasks)
                if self.halt is not None or errors:
                    sem.release()
                    break
                if left is not None:
                    sem.release()
                    s.stopped = "budget"
                    s.stop_detail = (
                        f"budget reached: the next answer ({pair.label} on {item.id!r}) may "
                        f"cost up to ${allowance:.6g} and ${max(0.0, left):.6g} is left of "
                        f"--budget-usd ${self.budget_usd:.6g}; {len(todo) - n} answers not "
                        "asked. Raise --budget-usd and run again with --resume to continue")
                    break
                self.in_flight_usd += allowance
                task = asyncio.create_task(self.one(item, pair, allowance))
                tasks.add(task)

                def done(t: asyncio.Task[None], allowance: float = allowance) -> None:
                    tasks.discard(t)
                    self.in_flight_usd -= allowance
                    sem.release()
                    if not t.cancelled() and t.exception() is not None:
                        errors.append(t.exception())  # type: ignore[arg-type]

                task.add_done_callback(done)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            raise
        if errors:
            s.stopped = "error"
            s.stop_detail = f"stopped: {type(errors[0]).__name__}: {errors[0]}"
            raise errors[0]
        if self.halt == "overrun":
            s.stopped = "overrun"
            s.stop_detail = ("stopped: a provider billed more than an answer's reservation (it "
                             "ignored max_tokens or over-billed); see the failures and traces")

    async def _room_for(self, allowance: float, tasks: set[asyncio.Task[None]]) -> float | None:
        """None when ``allowance`` fits in what the budget leaves; else what is left, once no
        answer is in flight (answers in flight hold their worst case and settle lower, so
        they are waited for, one at a time, before the recording says the budget is spent)."""
        while self.budget_usd is not None:
            left = self.budget_usd - self.prior_usd - self.session_usd - self.in_flight_usd
            if allowance <= left + 1e-15:
                return None
            if not tasks or self.halt is not None:
                return left
            await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0)  # the finished answers' done callbacks run first
        return None

    def worst_case(self, item: LabelledItem, pair: Pair) -> float:
        """USD the run's one call may cost at most, as the route node computes it."""
        agent, model = self.pool.agent(pair.agent), self.pool.model(pair.model)
        messages = build_messages(agent, model, item.prompt, query=item.prompt)
        prompt_tokens = self.backend.prompt_tokens_bound(model, messages)
        cap = model.max_output_tokens
        exact = self.backend.cost_bound(model, messages, cap, self._meta(item))
        if exact is not None:
            return float(exact)
        return (prompt_tokens * (model.input_price or 0.0) + cap * (model.output_price or 0.0)
                ) / 1e6

    def _meta(self, item: LabelledItem) -> dict[str, Any]:
        return {"query_id": item.id, "task": item.task, "gold": list(item.gold),
                "recording": self.file.path.name}

    async def one(self, item: LabelledItem, pair: Pair, allowance: float) -> None:
        budget = Budget(usd=allowance if allowance > 0 else None,
                        seconds=self.pool.budget.seconds)
        orch = Orchestra(self.pool, policy=self.policies[pair], budget=budget,
                         backend=self.backend, store=self.store, check_keys=False)
        try:
            result = await orch.arun(item.prompt, meta=self._meta(item))
        except UserError:
            raise
        except OrchestraError as e:
            # The run failed outside a call (its cost is unknown): charge its whole allowance.
            self._failed(item, pair, allowance, f"{type(e).__name__}: {e}", None)
            return
        self.session_usd += result.cost_usd
        if result.overruns:
            self.halt = "overrun"
        call = result.answer_call()
        if call is None or call.get("error") or result.answer is None:
            errs = [c.get("error") for st in result.steps for c in st.get("calls") or []
                    if c.get("error")]
            why = errs[0] if errs else f"no answer (stop reason {result.stop_reason})"
            self._failed(item, pair, result.cost_usd, str(why), result.trace_id, charged=True)
            return
        try:
            score = self.grader(result.answer, item)
        except UserError as e:
            self._failed(item, pair, result.cost_usd, str(e), result.trace_id, charged=True)
            raise
        row = OutcomeRow(
            query_id=item.id, query=item.prompt, task=item.task, model=pair.label, score=score,
            cost_usd=max(0.0, result.cost_usd), latency_s=max(0.0, float(call["latency_s"])),
            input_tokens=result.input_tokens, output_tokens=result.output_tokens,
            response=result.answer)
        self.file.append(row)
        self.rows.append(row)
        self.summary.recorded += 1
        self.summary.trace_ids[(item.id, pair.label)] = result.trace_id
        orch.feedback(result.trace_id, score=score,
                      meta={"grader": self.grader.name_for(item), "gold": list(item.gold),
                            "recording": self.file.path.name})
        self.finished += 1
        self._report(row)

    def _failed(self, item: LabelledItem, pair: Pair, cost: float, error: str,
                trace_id: str | None, *, charged: bool = False) -> None:
        if not charged:
            self.session_usd += cost
        rec = {"query_id": item.id, "model": pair.label, "cost_usd": cost, "error": error,
               "trace_id": trace_id}
        self.file.append_failure(rec)
        self.summary.failed += 1
        if len(self.summary.failures) < 10:
            self.summary.failures.append(rec)
        self.finished += 1
        self._report(None)

    def _report(self, row: OutcomeRow | None) -> None:
        if self.progress is None:
            return
        s = self.summary
        elapsed = time.perf_counter() - (self.t_loop or time.perf_counter())
        eta = elapsed / self.finished * (s.todo - self.finished) if self.finished else None
        self.progress(RecordProgress(
            done=self.finished, todo=s.todo, skipped=s.skipped, failed=s.failed,
            spent_usd=self.prior_usd + self.session_usd, budget_usd=self.budget_usd,
            elapsed_s=elapsed, eta_s=eta, last=row))

    # ------------------------------------------------------------------ the end
    def finish(self, items: Sequence[LabelledItem], data: Sequence[str]) -> None:
        """Rewrite the file with its metadata and fill the summary's totals."""
        s = self.summary
        s.session_usd = self.session_usd
        s.total_usd = self.prior_usd + self.session_usd
        queries = dict(self.prior.queries)
        aliases: dict[str, list[str]] = dict(self.prior.meta.get("gold_aliases") or {})
        graders: dict[str, str] = dict(self.prior.meta.get("graders") or {})
        for it in items:
            queries[it.id] = {"query_id": it.id, "query": it.prompt, "task": it.task,
                              "gold": it.gold[0],
                              "choices": list(it.choices) if it.choices else None}
            if len(it.gold) > 1:
                aliases[it.id] = list(it.gold)
            graders.setdefault(it.task, self.grader.name_for(it))
        models_info: dict[str, dict[str, Any]] = dict(self.prior.models)
        for p in self.pairs:
            m = self.pool.model(p.model)
            models_info[p.label] = {"description": m.description, "input_price": m.input_price,
                                    "output_price": m.output_price}
        recorded = {r.model for r in self.rows}
        meta = {**self.prior.meta, "recorded_by": "orchestra record", "pool": self.pool.name,
                "data": sorted({*self.prior.meta.get("data", []), *data}),
                "grader": self.grader.spec, "graders": graders, "gold_aliases": aliases,
                "pairs": {**self.prior.meta.get("pairs", {}), **{
                    p.label: {"agent": p.agent, "model": p.model,
                              "model_id": self.pool.model(p.model).id,
                              "max_output_tokens": self.pool.model(p.model).max_output_tokens}
                    for p in self.pairs}}}
        self.file.finalise(self.rows, queries=list(queries.values()),
                           models_info={k: v for k, v in models_info.items() if k in recorded},
                           meta=meta)
        s.per_model, s.per_task = _accuracy(self.rows)


def _accuracy(rows: Sequence[OutcomeRow]) -> tuple[dict[str, dict[str, Any]],
                                                    dict[str, dict[str, dict[str, Any]]]]:
    groups: dict[tuple[str, str], list[OutcomeRow]] = defaultdict(list)
    for r in rows:
        groups[(r.task, r.model)].append(r)
        groups[("", r.model)].append(r)

    def stats(rs: Sequence[OutcomeRow]) -> dict[str, Any]:
        lat = [r.latency_s for r in rs if r.latency_s is not None]
        return {"answers": len(rs), "accuracy": round(sum(r.score for r in rs) / len(rs), 4),
                "cost_usd": sum(r.cost_usd for r in rs),
                "mean_latency_s": round(sum(lat) / len(lat), 4) if lat else None}

    per_model = {m: stats(rs) for (t, m), rs in groups.items() if t == ""}
    per_task: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (t, m), rs in groups.items():
        if t:
            per_task[t][m] = stats(rs)
    return per_model, {t: dict(v) for t, v in sorted(per_task.items())}


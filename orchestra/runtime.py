"""The SDK entry point: :class:`Orchestra` runs queries over a pool with a policy and a budget.

    orch = Orchestra("local", policy="ensemble", budget=Budget(usd=0.001))
    result = orch.run("What is the capital of France?")
    result = await orch.arun("...")
    async for event in orch.astream("..."):
        ...

Every run emits typed trace events (:mod:`orchestra.trace.events`) to its listeners and to the
trace store as they happen, so a crash leaves the events so far and the spend recorded. With
``durable=True`` LangGraph's SQLite checkpointer saves each step (its PostgreSQL one with
``durable="postgresql://..."``); :meth:`Orchestra.resume`
continues an interrupted run from its last completed step without paying again for finished calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from orchestra._nodes.common import build_decisions, call_view
from orchestra._nodes.policy_calls import PolicyCalls
from orchestra._state import CallRecord, RunContext, RunState
from orchestra.backends.base import Backend
from orchestra.backends.priced import priced_pool
from orchestra.budget import Ledger, Overrun
from orchestra.durable import DurableRun, RunFile, RunTerms, policy_name, resumed_terms
from orchestra.durable_pg import PgRun, is_database_url
from orchestra.errors import RoutingError, UserError
from orchestra.policies.base import CallView, DecisionView, Feedback, Policy
from orchestra.policies.resolve import resolve_policy
from orchestra.spec import Budget, Pool
from orchestra.trace.emitter import Emitter
from orchestra.trace.events import (
    INTERRUPTED,
    CallFinished,
    ErrorEvent,
    Event,
    FeedbackGiven,
    RunFinished,
    RunStarted,
)
from orchestra.trace.liveness import resume_command
from orchestra.trace.pg_store import open_store
from orchestra.trace.store import MemoryTraceStore, TraceStore

__all__ = ["ChatSession", "Orchestra", "RunResult"]

T = TypeVar("T")

#: How many finished runs an Orchestra keeps in memory for :meth:`Orchestra.feedback`.
_RECENT_RUNS = 4096


def _start_policy(policy: Policy, calls: PolicyCalls) -> Any:
    """The run's decider: what the policy's ``start`` returns, or the policy itself."""
    start = getattr(policy, "start", None)
    if start is None:
        return policy
    try:
        decider = start(calls)
    except UserError:
        raise
    except Exception as e:
        raise RoutingError(f"policy {getattr(policy, 'name', policy)!r} failed to start the "
                           f"run: {type(e).__name__}: {e}") from e
    if not any(callable(getattr(decider, m, None)) for m in ("decide", "adecide")):
        raise RoutingError(f"policy {getattr(policy, 'name', policy)!r}: start() returned "
                           f"{decider!r}, which has no decide(view) or adecide(view)")
    return decider


@dataclass(frozen=True)
class RunResult:
    """What a run produced.

    Attributes:
        answer: the final answer (None when no call succeeded).
        stop_reason: ``answered``, ``budget:<limit>``, ``think_limit`` ...
        trace_id: the run id, to look the trace up (``orchestra traces show ID``).
        steps: per decision ``{round, action, reason, calls: [...]}``.
        events: every event of this invocation.
        overruns: the calls charged more than their reservation (a provider ignored
            ``max_tokens`` or billed more than the worst case): ``call_id, agent, model,
            reserved_usd, charged_usd, excess_usd, reserved_tokens, charged_tokens,
            excess_tokens, reason``. The run stopped at the first (``budget_overrun``); the
            spend may exceed the limit by at most the sum of ``excess_usd``.
        answer_from: the ``call_id`` whose output is the answer (a route call, or the refiner
            call that wrote it); ``"policy"`` for a text the policy wrote itself; ``None``
            without an answer. :meth:`answer_call` gives that call's step entry (its model).
    """

    answer: str | None
    stop_reason: str
    cost_usd: float
    input_tokens: int
    output_tokens: int
    calls: int
    rounds: int
    trace_id: str
    duration_s: float
    steps: list[dict[str, Any]]
    events: list[Event] = field(default_factory=list, repr=False)
    overruns: list[dict[str, Any]] = field(default_factory=list)
    answer_from: str | None = None

    @property
    def status(self) -> Literal["ok", "budget"]:
        return "budget" if self.stop_reason.startswith("budget") else "ok"

    def answer_call(self) -> dict[str, Any] | None:
        """The step entry (``call_id, agent, model, cost_usd``...) of the call the answer came
        from, or None (no answer, or a text the policy wrote)."""
        for s in self.steps:
            for c in s.get("calls") or []:
                if c.get("call_id") == self.answer_from:
                    return dict(c)
        return None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape: answer, cost, tokens, calls, rounds, trace_id, stop_reason, steps,
        overruns, answer_from."""
        return {
            "answer": self.answer,
            "cost_usd": self.cost_usd,
            "tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "calls": self.calls,
            "rounds": self.rounds,
            "trace_id": self.trace_id,
            "stop_reason": self.stop_reason,
            "duration_s": self.duration_s,
            "steps": self.steps,
            "overruns": self.overruns,
            "answer_from": self.answer_from,
        }


def _requests(calls: Sequence[CallRecord]) -> int:
    """Model requests made by these call records (tool follow-ups count)."""
    return sum(int(c.get("requests", 1)) for c in calls)


def _overruns(calls: Sequence[CallRecord]) -> list[dict[str, Any]]:
    """The calls charged above their reservation, as :attr:`RunResult.overruns` lists them."""
    return [{"call_id": c["call_id"], "agent": c["agent"], "model": c["model"], **over}
            for c in calls if (over := c.get("overrun"))]


def _apply_budget(base: Budget, budget: Budget | Mapping[str, Any] | None) -> Budget:
    """``base`` with ``budget`` applied: a :class:`Budget` replaces it, a mapping overrides some
    limits."""
    if budget is None:
        return base
    if isinstance(budget, Budget):
        return budget
    try:
        merged = base.merged(**dict(budget))
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any rejection of the limits is the user's to fix
        raise UserError(f"bad budget {dict(budget)!r}: {e}") from None
    return Budget(**merged.model_dump())


def _trace_journaled(emitter: Emitter, store: TraceStore, records: list[CallRecord],
                     ledger: Ledger) -> None:
    """Emit ``call_finished`` for journaled calls the trace lacks (a kill between the journal's
    commit and the event), so the stored spend matches the ledger's."""
    traced = {e.get("call_id") for e in store.events(emitter.run_id)
              if e["kind"] == "call_finished"}
    names = {f.name for f in dataclasses.fields(CallFinished)} - {"kind", "seq", "ts", "run_id",
                                                                   "budget_left"}
    for rec in records:
        if rec["call_id"] not in traced:
            fields: dict[str, Any] = {k: v for k, v in rec.items() if k in names}
            emitter.emit(CallFinished(run_id=emitter.run_id, budget_left=dict(vars(ledger.left())),
                                      **fields))


async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
    """Await a bookkeeping write whose failure must not hide the run's own outcome."""
    # The run's result (or its own error) matters more than the seconds used.
    with contextlib.suppress(Exception):
        await coro


def _step_call(c: Mapping[str, Any]) -> dict[str, Any]:
    return {"call_id": c["call_id"], "agent": c["agent"], "model": c["model"], "role": c["role"],
            "cost_usd": c["cost_usd"], "latency_s": round(c["latency_s"], 4),
            "input_tokens": c["input_tokens"], "output_tokens": c["output_tokens"],
            "error": c["error"]}


def _steps_from_state(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per decision ``{round, action, reason, scores, note, dropped, merge, calls}``; then a
    ``refine`` step per LLM refiner call and a ``policy_call`` step per call the policy made
    itself (``ctx.complete``), each with its call."""
    by_id = {c["call_id"]: c for c in state.get("calls") or []}
    steps = []
    for s in state.get("steps") or []:
        calls = [_step_call(by_id[p["call_id"]]) for p in s.get("calls") or []
                 if p["call_id"] in by_id]
        steps.append({"round": s["round"], "action": s["action"], "reason": s.get("reason", ""),
                      "scores": s.get("scores") or {}, "note": s.get("note"),
                      "dropped": s.get("dropped") or [], "merge": s.get("merge"), "calls": calls})
    for c in state.get("calls") or []:
        if c["role"] == "refine":
            steps.append({"round": c["round"], "action": "refine", "reason": "llm refiner",
                          "calls": [_step_call(c)]})
        elif c["role"] == "policy":
            steps.append({"round": c["round"], "action": "policy_call",
                          "reason": "the policy's own call", "calls": [_step_call(c)]})
    order = {"policy_call": 0, "refine": 2}
    steps.sort(key=lambda s: (s["round"], order.get(s["action"], 1)))
    return steps


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when an event loop is already running (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["e"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]  # type: ignore[no-any-return]


@functools.cache
def _shared_graph() -> Any:
    """The run graph without a checkpointer: it holds no run state (the pool, policy and budget
    travel in each run's context), so every :class:`Orchestra` in the process shares one and
    a server that builds an Orchestra per request does not compile a graph per request (~20 ms
    of CPU each)."""
    from orchestra._graph import build_graph

    return build_graph()


class Orchestra:
    """Runs queries over a pool with a routing policy under a hard budget.

    Args:
        pool: a :class:`Pool`, a pool name (``"local"``) or a YAML path.
        policy: a policy name, recipe file or object (default: the pool's).
        budget: limits; a :class:`Budget` replaces the pool's default, a mapping overrides some.
        backend: how models are called (default: litellm).
        store: a :class:`TraceStore`, a SQLite path, a ``postgresql://`` URL (a store shared
            by several processes or machines), ``None`` for the default
            (``$ORCHESTRA_TRACE_DB``, else a file under the user's data dir), or ``False`` for
            no store.
        durable: checkpoint every step, one file per run (``True``: in
            ``<data dir>/checkpoints/``; or a folder), or in a PostgreSQL database (a
            ``postgresql://`` URL: a run may then be resumed on another machine), so
            :meth:`resume` can continue an interrupted run on the terms it was started with.
        policy_params: parameters for the policy factory.
        max_think_steps: how many Think actions a run may take.
        check_keys: raise a UserError now when a hosted model's API key is missing.
        on_invalid: what an action the runtime cannot carry out does (an unknown model, an
            empty Route...): ``"fallback"`` records it (an ``invalid`` decision in the trace and
            ``RunResult.steps``) and answers with the best answer so far, or takes the pool's
            default call once before any; ``"raise"`` records it and raises a RoutingError.

    Raises:
        UserError: for an unknown pool/policy, a bad budget or a missing API key, before any call.
    """

    def __init__(
        self,
        pool: Pool | str | Path,
        *,
        policy: str | Path | Policy | None = None,
        budget: Budget | Mapping[str, Any] | None = None,
        backend: Backend | None = None,
        store: TraceStore | str | Path | Literal[False] | None = None,
        durable: bool | str | Path = False,
        policy_params: Mapping[str, Any] | None = None,
        max_think_steps: int = 8,
        check_keys: bool = True,
        on_invalid: Literal["fallback", "raise"] = "fallback",
    ) -> None:
        self.pool = priced_pool(pool if isinstance(pool, Pool) else Pool.load(pool))
        self.budget = _apply_budget(self.pool.budget, budget)
        self.policy = resolve_policy(policy, self.pool, policy_params)
        # As given, for the terms stored with a durable run and for what resume may override.
        self._policy_arg = policy
        self._policy_params = dict(policy_params or {})
        self._budget_arg = budget
        self._check_keys = check_keys and backend is None
        if backend is None:
            from orchestra.backends.litellm_client import LiteLLMBackend

            backend = LiteLLMBackend()
            if check_keys:
                self.pool.check_keys()
        self.backend = backend
        if store is False:
            self.store: TraceStore | None = None
        elif isinstance(store, TraceStore):
            self.store = store
        else:
            self.store = open_store(store)
        # Durable runs: one checkpoint file per run in this folder (orchestra.durable), or
        # shared tables in a PostgreSQL database (orchestra.durable_pg).
        self._legacy_checkpoints: Path | None = None
        self.checkpoint_url: str | None = None
        if is_database_url(durable):
            assert isinstance(durable, str)
            self.checkpoint_url = durable
            self.checkpoint_dir: Path | None = None
        elif durable is True:
            from orchestra._paths import data_home

            self.checkpoint_dir = data_home() / "checkpoints"
            self._legacy_checkpoints = data_home() / "checkpoints.sqlite"
        elif durable:
            self.checkpoint_dir = Path(durable)
            if self.checkpoint_dir.is_file():
                raise UserError(
                    f"durable={str(durable)!r} is a file; durable runs keep one checkpoint file "
                    "per run in a folder: give a folder (or durable=True for the default)")
        else:
            self.checkpoint_dir = None
        if max_think_steps < 0:
            raise UserError(f"max_think_steps must be >= 0 (got {max_think_steps!r})")
        self.max_think_steps = max_think_steps
        if on_invalid not in ("fallback", "raise"):
            raise UserError(f"on_invalid must be 'fallback' or 'raise' (got {on_invalid!r})")
        self.on_invalid: Literal["fallback", "raise"] = on_invalid
        self._graph: Any = None
        # Finished runs' feedback material, for feedback() without a trace store (bounded).
        self._recent: dict[str, Feedback] = {}

    @property
    def durable(self) -> bool:
        """Whether runs are checkpointed (in a folder or a PostgreSQL database)."""
        return self.checkpoint_dir is not None or self.checkpoint_url is not None

    # ------------------------------------------------------------------ public API
    def run(self, query: str, **kwargs: Any) -> RunResult:
        """Run a query to completion (sync). See :meth:`arun` for the arguments."""
        return _run_sync(self.arun(query, **kwargs))

    async def arun(
        self,
        query: str,
        *,
        history: list[dict[str, str]] | None = None,
        meta: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> RunResult:
        """Run a query to completion.

        Args:
            query: the user's query.
            history: earlier chat turns (``{"role", "content"}``), oldest first.
            meta: metadata stored with the run and shown to the policy (task, query_id, gold).
            run_id: choose the run id (default: a new uuid).
            on_event: called with every event as it happens.
        """
        if not isinstance(query, str) or not query.strip():
            raise UserError(f"expected a non-empty query (got {query!r})")
        rid = run_id or uuid.uuid4().hex
        init: RunState = {
            "run_id": rid, "query": query, "history": list(history or []), "meta": dict(meta or {}),
            "notes": [], "steps": [], "calls": [], "rounds": [], "plan": [], "think_steps": 0,
            "final": None,
        }
        return await self._execute(rid, init, on_event=on_event, resumed=False)

    async def astream(self, query: str, **kwargs: Any) -> AsyncIterator[Event]:
        """Run a query, yielding trace events live; the last one is ``run_finished``."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def push(ev: Event) -> None:
            try:
                if asyncio.get_running_loop() is loop:
                    queue.put_nowait(ev)
                    return
            except RuntimeError:
                pass
            loop.call_soon_threadsafe(queue.put_nowait, ev)

        async def runner() -> RunResult:
            try:
                return await self.arun(query, on_event=push, **kwargs)
            finally:
                loop.call_soon(queue.put_nowait, None)

        task = asyncio.create_task(runner())
        try:
            while True:
                ev = await queue.get()
                if ev is None:
                    break
                yield ev
            await task  # re-raise a failure
        finally:
            if not task.done():
                task.cancel()

    def resume(self, run_id: str, **kwargs: Any) -> RunResult:
        """Continue an interrupted durable run (sync). See :meth:`aresume`."""
        return _run_sync(self.aresume(run_id, **kwargs))

    async def aresume(self, run_id: str, *, on_event: Callable[[Event], None] | None = None,
                      budget: Budget | Mapping[str, Any] | None = None) -> RunResult:
        """Continue an interrupted durable run from its last completed step, on its own terms.

        The run keeps the pool (its full spec was stored), the policy and its parameters, the
        budget and ``max_think_steps`` it was started with, whatever this Orchestra was built
        with; this Orchestra gives the backend, the trace store and the checkpoint folder (and
        its pool or policy object, where they are the run's own). Calls whose record was
        journaled before the interruption are never sent again; the budget counts what they
        cost and the seconds the run has used so far.

        Args:
            run_id: the interrupted run.
            on_event: called with every event as it happens.
            budget: limits to change (a mapping overrides some of the stored limits, a
                :class:`Budget` replaces them); by default, the limits this Orchestra was
                given explicitly, if any. The new limits apply to the whole run, spend so far
                included.

        Raises:
            UserError: when the Orchestra is not durable, no checkpoint exists for ``run_id``,
                the run finished, another policy is named explicitly, or another process is
                running or resuming it (:class:`~orchestra.durable.RunBusyError`).
        """
        if not self.durable:
            raise UserError("resume needs a durable Orchestra: pass durable=True (or a folder, "
                            "or a postgresql:// URL)")
        override = budget if budget is not None else self._budget_arg
        return await self._execute(run_id, None, on_event=on_event, resumed=True,
                                   budget=override)

    def chat(self) -> ChatSession:
        """A conversation: each turn is a run that sees the earlier turns."""
        return ChatSession(self)

    # ------------------------------------------------------------------ internals
    def _compiled(self, checkpointer: Any) -> Any:
        from orchestra._graph import build_graph

        if checkpointer is not None:
            return build_graph(checkpointer)
        if self._graph is None:
            self._graph = _shared_graph()
        return self._graph

    async def _execute(self, rid: str, init: RunState | None, *,
                       on_event: Callable[[Event], None] | None, resumed: bool,
                       budget: Budget | Mapping[str, Any] | None = None) -> RunResult:
        own = RunTerms(pool=self.pool, policy=self.policy, budget=self.budget,
                       max_think_steps=self.max_think_steps)
        if not self.durable:
            return await self._invoke(self._compiled(None), rid, init, on_event, own, None)
        # The run's lock is held from here to the end: one process at a time runs or resumes it.
        durable_run: DurableRun
        if self.checkpoint_url is not None:
            durable_run = PgRun(self.checkpoint_url, rid, resume=resumed)
        else:
            assert self.checkpoint_dir is not None
            durable_run = RunFile(self.checkpoint_dir, rid, resume=resumed,
                                  legacy=self._legacy_checkpoints)
        async with durable_run as run_file:
            if resumed:
                terms = resumed_terms(run_file.terms, own, run_id=rid, policy_arg=self._policy_arg,
                                      policy_params=self._policy_params)
                if terms.pool is not self.pool and self._check_keys:
                    terms.pool.check_keys()
                if budget is not None:
                    terms = dataclasses.replace(terms, budget=_apply_budget(terms.budget, budget))
            else:
                assert init is not None
                terms = own
                await run_file.start(own.record(self._policy_arg, self._policy_params), init)
            return await self._invoke(self._compiled(run_file.saver), rid, init, on_event, terms,
                                      run_file)

    async def _invoke(self, graph: Any, rid: str, init: RunState | None,
                      on_event: Callable[[Event], None] | None, terms: RunTerms,
                      run_file: DurableRun | None) -> RunResult:
        config: dict[str, Any] = {"configurable": {"thread_id": rid}, "recursion_limit": 100_000}
        resumed = init is None
        prior: Mapping[str, Any] = {}
        if resumed:
            snap = await graph.aget_state(config)
            prior = snap.values or {}
            if not prior and run_file is not None and run_file.input:
                # Interrupted before its first checkpoint (nothing was sent): start it again.
                init = cast(RunState, run_file.input)
            elif not prior:
                raise UserError(f"no checkpoint for run {rid!r}; was it started with durable=True?")
            if prior.get("final"):
                raise UserError(f"run {rid!r} already finished; nothing to resume")
        state_like = prior or init or {}
        prior_calls = list(state_like.get("calls") or [])
        journaled: list[CallRecord] = []
        if run_file is not None:
            # Calls finished after the last checkpoint: in the journal only. Counted now; their
            # branches find them there instead of sending them again.
            seen = {c["call_id"] for c in prior_calls}
            journaled = [r for cid, r in run_file.finished.items() if cid not in seen]
            prior_calls += journaled
        ledger = Ledger(
            budget=terms.budget,
            spent_usd=sum(c["cost_usd"] for c in prior_calls),
            spent_input_tokens=sum(c["input_tokens"] for c in prior_calls),
            spent_output_tokens=sum(c["output_tokens"] for c in prior_calls),
            calls=_requests(prior_calls),
            rounds=len(state_like.get("rounds") or []),
            elapsed_s=run_file.elapsed_s if run_file is not None else 0.0,
            # A run interrupted after an overrun stays stopped: resume must not spend again.
            overruns=[Overrun.from_dict(c["overrun"], c["call_id"])
                      for c in prior_calls if c.get("overrun")],
        )
        start_seq = self.store.last_seq(rid) + 1 if self.store is not None else 0
        emitter = Emitter(rid, self.store, start_seq)
        collected: list[Event] = []
        emitter.listeners.append(collected.append)
        if on_event is not None:
            emitter.listeners.append(on_event)
        pool, policy = terms.pool, terms.policy
        query = state_like.get("query", "")
        policy_calls = PolicyCalls(rid, pool, state_like.get("meta") or {}, query)
        decider = _start_policy(policy, policy_calls)
        ctx = RunContext(run_id=rid, pool=pool, policy=policy, backend=self.backend,
                         ledger=ledger, emitter=emitter, max_think_steps=terms.max_think_steps,
                         journal=run_file, decider=decider, policy_calls=policy_calls,
                         on_invalid=self.on_invalid)
        policy_calls.bind(ctx)
        emitter.emit(RunStarted(
            run_id=rid, query=query, pool=pool.name, policy=policy_name(policy),
            budget=terms.budget.model_dump(), models=[m.name for m in pool.models],
            agents=[a.name for a in pool.agents], resumed=resumed,
            meta=dict(state_like.get("meta") or {})))
        if journaled and self.store is not None:
            _trace_journaled(emitter, self.store, journaled, ledger)
        t0 = time.perf_counter()
        try:
            if run_file is not None:
                run_file.start_heartbeat(ledger.elapsed)
            # "sync": each step's checkpoint is written before the next step sends anything.
            final_state = await graph.ainvoke(
                None if prior else init, config=config, context=ctx,
                durability="sync" if run_file is not None else None)
        except BaseException as e:
            # Leave the trace and the spend recorded, then re-raise.
            if isinstance(e, (asyncio.CancelledError, KeyboardInterrupt)):
                how = ("resume with: " + resume_command(rid) if run_file is not None
                       else "not durable, so it cannot be resumed")
                emitter.emit(ErrorEvent(run_id=rid, where="run", error_type=INTERRUPTED,
                                        message=f"stopped before it finished ({how})",
                                        fatal=True))
            else:
                emitter.emit(ErrorEvent(run_id=rid, where="run", error_type=type(e).__name__,
                                        message=str(e) or type(e).__name__, fatal=True))
            raise
        finally:
            if run_file is not None:
                await _quietly(run_file.save_elapsed(ledger.elapsed()))
        duration = time.perf_counter() - t0
        if run_file is not None and final_state.get("final"):
            run_file.finished_run()
        final = final_state.get("final") or {"answer": None, "stop_reason": "finished"}
        calls = final_state.get("calls") or []
        cost = sum(c["cost_usd"] for c in calls)
        tin = sum(c["input_tokens"] for c in calls)
        tout = sum(c["output_tokens"] for c in calls)
        stop = final["stop_reason"]
        overruns = _overruns(calls)
        answer_from = final.get("answer_from")
        emitter.emit(RunFinished(
            run_id=rid, answer=final["answer"], stop_reason=stop,
            status="budget" if stop.startswith("budget") else "ok", cost_usd=cost,
            input_tokens=tin, output_tokens=tout, calls=_requests(calls),
            rounds=len(final_state.get("rounds") or []), duration_s=duration, overruns=overruns,
            answer_from=answer_from))
        self._remember(final_state, final, cost)
        return RunResult(
            answer=final["answer"], stop_reason=stop, cost_usd=cost, input_tokens=tin,
            output_tokens=tout, calls=_requests(calls), rounds=len(final_state.get("rounds") or []),
            trace_id=rid, duration_s=duration, steps=_steps_from_state(final_state),
            events=collected, overruns=overruns, answer_from=answer_from,
        )

    # ------------------------------------------------------------------ feedback
    def _remember(self, state: Mapping[str, Any], final: Mapping[str, Any], cost: float) -> None:
        fb = Feedback(
            run_id=state["run_id"], query=state.get("query", ""), answer=final.get("answer"),
            answer_from=final.get("answer_from"),
            calls=tuple(call_view(c) for c in state.get("calls") or []),
            decisions=build_decisions(state.get("steps") or []), cost_usd=cost,
            meta=dict(state.get("meta") or {}))
        self._recent[fb.run_id] = fb
        while len(self._recent) > _RECENT_RUNS:
            self._recent.pop(next(iter(self._recent)))

    def feedback(self, run_id: str, *, score: float | None = None, reward: float | None = None,
                 meta: Mapping[str, Any] | None = None) -> Feedback:
        """Say how a finished run went: the policy's ``observe`` learns from it, and the trace
        keeps it (a ``feedback`` event).

        Args:
            run_id: a finished run of this Orchestra (kept in memory for the last runs) or in
                its trace store.
            score: the answer's quality in [0, 1] (graded against gold, or a user's rating).
            reward: any finite scalar your setting defines (e.g. ``score - λ·cost``).
            meta: anything to keep with the feedback (who rated it, the gold answer...).

        Returns:
            The :class:`~orchestra.policies.base.Feedback` the policy observed.

        Raises:
            UserError: no score or reward, a score outside [0, 1], a non-finite reward, or a run
                that is unknown or has not finished.
        """
        if score is None and reward is None:
            raise UserError("feedback needs a score (0..1) or a reward")
        if score is not None and (not isinstance(score, (int, float)) or isinstance(score, bool)
                                  or not 0.0 <= float(score) <= 1.0):
            raise UserError(f"feedback score must be a number in [0, 1] (got {score!r})")
        if reward is not None and (not isinstance(reward, (int, float)) or isinstance(reward, bool)
                                   or not math.isfinite(float(reward))):
            raise UserError(f"feedback reward must be a finite number (got {reward!r})")
        base = self._recent.get(run_id) or self._feedback_from_store(run_id)
        extra = dict(meta or {})
        fb = dataclasses.replace(
            base, score=None if score is None else float(score),
            reward=None if reward is None else float(reward), meta={**base.meta, **extra})
        observe = getattr(self.policy, "observe", None)
        emitter = Emitter(run_id, self.store,
                          self.store.last_seq(run_id) + 1 if self.store is not None else 0)
        try:
            if observe is not None:
                observe(fb)
        except Exception as e:
            emitter.emit(FeedbackGiven(run_id=run_id, score=fb.score, reward=fb.reward,
                                       meta={**extra, "observe_error": f"{type(e).__name__}: {e}"},
                                       observed=False))
            raise
        emitter.emit(FeedbackGiven(run_id=run_id, score=fb.score, reward=fb.reward, meta=extra,
                                   observed=observe is not None))
        return fb

    def _feedback_from_store(self, run_id: str) -> Feedback:
        if self.store is None or self.store.get_run(run_id) is None:
            raise UserError(f"unknown run {run_id!r}: feedback is for a finished run of this "
                            "Orchestra or one in its trace store (orchestra traces list)")
        return _feedback_from_events(run_id, self.store.events(run_id))


def _feedback_from_events(run_id: str, events: Sequence[Mapping[str, Any]]) -> Feedback:
    """What a stored trace says of a finished run, as :class:`Feedback` (no score yet)."""
    started = next((e for e in events if e["kind"] == "run_started"), None)
    finished = next((e for e in reversed(events) if e["kind"] == "run_finished"), None)
    if started is None or finished is None:
        raise UserError(f"run {run_id!r} has not finished (or its trace is incomplete); "
                        "feedback is for finished runs")
    calls = tuple(
        CallView(agent=e["agent"], model=e["model"], prompt="", output=e.get("output") or "",
                 cost_usd=e.get("cost_usd") or 0.0, input_tokens=e.get("input_tokens") or 0,
                 output_tokens=e.get("output_tokens") or 0, latency_s=e.get("latency_s") or 0.0,
                 error=e.get("error"), call_id=e.get("call_id") or "",
                 role=e.get("role") or "route", round=e.get("round") or 0)
        for e in events if e["kind"] == "call_finished")
    decisions = tuple(
        DecisionView(round=e["round"], action=e["action"], reason=e.get("reason") or "",
                     scores=e.get("scores") or {},
                     calls=tuple(c.get("call_id", "") for c in e.get("calls") or []),
                     note=e.get("note"))
        for e in events if e["kind"] == "policy_decided")
    return Feedback(run_id=run_id, query=started.get("query") or "",
                    answer=finished.get("answer"), answer_from=finished.get("answer_from"),
                    calls=calls, decisions=decisions, cost_usd=finished.get("cost_usd") or 0.0,
                    meta=dict(started.get("meta") or {}))


class ChatSession:
    """A conversation over one :class:`Orchestra`: each turn is a run with the earlier turns as
    history. ``spent_usd`` adds up the turns."""

    def __init__(self, orchestra: Orchestra) -> None:
        self.orchestra = orchestra
        self.history: list[dict[str, str]] = []
        self.results: list[RunResult] = []

    @property
    def spent_usd(self) -> float:
        return sum(r.cost_usd for r in self.results)

    async def asend(self, message: str, **kwargs: Any) -> RunResult:
        result = await self.orchestra.arun(message, history=list(self.history), **kwargs)
        self.results.append(result)
        self.history.append({"role": "user", "content": message})
        self.history.append({"role": "assistant", "content": result.answer or ""})
        return result

    def send(self, message: str, **kwargs: Any) -> RunResult:
        return _run_sync(self.asend(message, **kwargs))

    def reset(self) -> None:
        self.history.clear()
        self.results.clear()


# Re-exported for convenience in tests and notebooks.
MemoryStore = MemoryTraceStore

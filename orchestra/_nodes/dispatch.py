"""The dispatch node: one parallel branch per planned call (LangGraph ``Send`` fan-out).

It sends the call whose worst case the route node reserved, settles the real cost, and records
the output. A provider failure is recorded on the call (the run goes on with the other outputs),
charged when it may have been billed; tool calls are executed (off the event loop, under the
run's seconds limit; a failing tool is reported to the model and kept on the call) and the model
is called again, each follow-up reserved on its own. A reply charged above its reservation is
recorded as the call's ``overrun``; the ledger then refuses every further call, so the run stops
(``budget_overrun``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from langgraph.runtime import Runtime

from orchestra._nodes.common import budget_dict, call_record, plan_call, request_for, reservation_of
from orchestra._state import CallRecord, DispatchInput, PlannedCall, RunContext
from orchestra.backends.base import Completion
from orchestra.budget import CallCost, Reservation
from orchestra.errors import BackendError, UserError
from orchestra.spec import ModelSpec
from orchestra.trace.events import CallFinished, CallStarted

__all__ = ["dispatch_node", "run_call"]


async def run_call(ctx: RunContext, call: PlannedCall, meta: dict[str, Any]) -> CallRecord:
    """Send one reserved call (and its tool follow-ups); return its record."""
    pool = ctx.pool
    model = pool.model(call["model"])
    agent = pool.agent(call["agent"]) if call["role"] != "refine" or call["agent"] in {
        a.name for a in pool.agents} else None
    res = reservation_of(call)
    done = ctx.journal.finished.get(call["call_id"]) if ctx.journal is not None else None
    if done is not None:
        # Finished (and paid) before an interruption: never sent again. The ledger already
        # counts it (a resumed run starts from the journal), so a reservation made now goes.
        if ctx.ledger.owns(res):
            ctx.ledger.release(res)
        return done
    if not ctx.ledger.owns(res):
        # A resumed run: the reservation was made by an earlier process. Make it again.
        again = ctx.ledger.reserve(res.cost, call["call_id"])
        if again is None:
            return call_record(call, output="", input_tokens=0, output_tokens=0, cost_usd=0.0,
                               latency_s=0.0, error="not sent: budget left no room on resume",
                               requests=0)
        res = again
    tools = [t.openai_schema() for t in agent.tools] if agent is not None and agent.tools else None
    ctx.emitter.emit(CallStarted(
        run_id=ctx.run_id, round=call["round"], call_id=call["call_id"], agent=call["agent"],
        model=model.name, model_id=model.id, messages=call["messages"],
        max_tokens=call["max_tokens"], reserved_usd=res.cost.usd, role=call["role"]))

    total_in = total_out = 0
    total_usd = 0.0
    messages = list(call["messages"])
    tool_log: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    output, error = "", None
    steps = 0
    requests = 0
    current = call
    overrun: dict[str, Any] | None = None
    notes: list[str] = []
    while True:
        # Each request gets its own copy: the list grows with tool results afterwards.
        req = request_for(ctx, model, {**current, "messages": list(messages)}, meta, tools)
        requests += 1
        comp: Completion | None = None
        try:
            comp = await ctx.backend.complete(req)
        except BackendError as e:
            error = str(e)
            billed_unknown, usage = e.billed_unknown, e.usage
            if usage is None and not billed_unknown:
                ctx.ledger.release(res, count_call=True)
                break
            charged = _settle(ctx, res, model, usage, None, trusted=not billed_unknown)
        if comp is not None:
            charged = _settle(ctx, res, model, (comp.input_tokens, comp.output_tokens),
                              comp.cost_usd, trusted=comp.usage_trusted)
            output = comp.text
            if comp.usage_note:
                notes.append(comp.usage_note)
        total_in += charged.input_tokens
        total_out += charged.output_tokens
        total_usd += charged.usd
        over = ctx.ledger.overrun_of(res)
        if over is not None:
            # Charged in full; the ledger now refuses every call, so no follow-up either.
            why = (f"output {comp.output_tokens} tokens > max_tokens {req.max_tokens}"
                   if comp is not None and comp.output_tokens > req.max_tokens
                   else "charged above the reservation")
            overrun = {**over.to_dict(), "reason": why}
            break
        if comp is None or not comp.tool_calls or agent is None or steps >= ctx.max_tool_steps:
            break
        # Run the tools, then ask the model again with their results.
        steps += 1
        messages.append({"role": "assistant", "content": comp.text or None, "tool_calls": [
            {"id": tc["id"], "type": "function",
             "function": {"name": tc["name"], "arguments": json.dumps(tc["arguments"])}}
            for tc in comp.tool_calls]})
        for tc in comp.tool_calls:
            result, tool_error = await _run_tool(ctx, agent, tc)
            entry = {"name": tc["name"], "arguments": tc["arguments"], "result": result}
            if tool_error is not None:
                entry["error"] = tool_error
            tool_log.append(entry)
            messages.append({"role": "tool", "tool_call_id": tc["id"], "content": result})
        fit = plan_call(ctx, model, messages, model.max_output_tokens, meta)
        if isinstance(fit, str):
            error = f"tool follow-up not sent: budget:{fit}"
            break
        max_tokens, cost = fit
        new = ctx.ledger.reserve(cost, call["call_id"])
        if new is None:
            limit = ctx.ledger.check(cost)
            error = "tool follow-up not sent: budget" + (f":{limit}" if limit else "")
            break
        res = new
        current = {**call, "max_tokens": max_tokens}

    latency = time.perf_counter() - t0
    usage_note = "; ".join(notes) or None
    record = call_record(call, output=output, input_tokens=total_in, output_tokens=total_out,
                         cost_usd=total_usd, latency_s=latency, error=error, tool_calls=tool_log,
                         requests=requests, overrun=overrun, usage_note=usage_note)
    if ctx.journal is not None:
        # Durable before the event: a kill after call_finished cannot make resume send it again.
        await ctx.journal.record_call(record, ctx.ledger.elapsed())
    ctx.emitter.emit(CallFinished(
        run_id=ctx.run_id, round=call["round"], call_id=call["call_id"], agent=call["agent"],
        model=model.name, model_id=model.id, output=output, input_tokens=total_in,
        output_tokens=total_out, cost_usd=total_usd, latency_s=latency, role=call["role"],
        error=error, tool_calls=tool_log, requests=requests, budget_left=budget_dict(ctx),
        overrun=overrun, usage_note=usage_note))
    return record


def _settle(ctx: RunContext, res: Reservation, model: ModelSpec, usage: tuple[int, int] | None,
            usd: float | None, *, trusted: bool) -> CallCost:
    """Charge a reply: its usage (``usd`` when the provider knows the exact cost), at least the
    whole reservation when the usage is not trusted, the reservation when there is none."""
    if usage is None:
        return ctx.ledger.settle(res, None)
    tin, tout = usage
    actual = CallCost(usd if usd is not None else model.cost(tin, tout), tin, tout)
    return ctx.ledger.settle(res, actual if trusted else actual.at_least(res.cost))


async def _run_tool(ctx: RunContext, agent: Any, tc: dict[str, Any]) -> tuple[str, str | None]:
    """Run one tool call; return what the model gets back and the error (None when it worked).

    A tool's failure never ends the call: the model paid for is kept, the error goes to the model
    and into the call's ``tool_calls``. A sync tool runs in its own daemon thread, so the event
    loop (other branches, the seconds limit) goes on; at the run's seconds limit it is abandoned:
    a thread cannot be killed, so it may go on running in the background, but nothing waits for
    it and its result is dropped. An async tool is cancelled at the limit.
    """
    spec = next((t for t in agent.tools if t.name == tc["name"]), None)
    if spec is None:
        err = f"unknown tool {tc['name']!r}; available: {[t.name for t in agent.tools]}"
        return f"error: {err}", err
    secs = ctx.ledger.seconds_left()
    if secs is not None and secs <= 0:
        err = f"tool {spec.name!r} not run: the run's seconds limit was reached"
        return f"error: {err}", err
    in_thread = False
    try:
        fn = spec.resolve()  # checked when the pool was validated; it may still fail now
        args = tc["arguments"] if isinstance(tc["arguments"], dict) else {}
        if inspect.iscoroutinefunction(fn):
            out = await _within(asyncio.ensure_future(fn(**args)), secs)
        else:
            in_thread = True
            out = await _within(_in_thread(fn, args, spec.name), secs)
            in_thread = False
            if inspect.isawaitable(out):
                out = await _within(asyncio.ensure_future(out), ctx.ledger.seconds_left())
        return (out if isinstance(out, str) else json.dumps(out, default=str)), None
    except _ToolTimeout:
        err = (f"tool {spec.name!r} stopped at the run's seconds limit "
               f"({ctx.ledger.budget.seconds:g} s)")
        if in_thread:
            err += ("; a thread cannot be killed, so it may still be running in the background "
                    "(nothing waits for it; its result is dropped)")
    except UserError as e:
        err = str(e)
    except Exception as e:  # noqa: BLE001 - a tool's failure goes to the model, not up
        err = f"tool {spec.name!r} failed: {type(e).__name__}: {e}"
    return f"error: {err}", err


class _ToolTimeout(Exception):
    pass


class _ToolExit(Exception):
    """A tool raised SystemExit, KeyboardInterrupt or another BaseException in its thread."""


async def _within(fut: asyncio.Future[Any], secs: float | None) -> Any:
    """``fut``'s result, or :class:`_ToolTimeout` after ``secs`` (the future is cancelled)."""
    try:
        done, _ = await asyncio.wait({fut}, timeout=secs)
    except asyncio.CancelledError:  # the run was cancelled: an async tool goes with it
        fut.cancel()
        raise
    if not done:
        fut.cancel()
        raise _ToolTimeout
    return fut.result()


def _in_thread(fn: Callable[..., Any], args: dict[str, Any], name: str) -> asyncio.Future[Any]:
    """Call ``fn(**args)`` in a new daemon thread (not an executor's: ``asyncio.run`` and the
    interpreter wait for those at exit); the future gets its result."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def deliver(ok: bool, value: Any) -> None:
        if fut.done():  # abandoned at the seconds limit, or the call was cancelled
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def target() -> None:
        ok, value = True, None
        try:
            value = context.run(fn, **args)
        except Exception as e:  # noqa: BLE001 - delivered to the awaiting call
            ok, value = False, e
        except BaseException as e:  # noqa: BLE001 - SystemExit etc.: the tool's, not the run's
            ok, value = False, _ToolExit(f"{type(e).__name__}: {e}")
        try:
            loop.call_soon_threadsafe(deliver, ok, value)
        except RuntimeError:  # the loop is closed: the run ended without it
            pass

    threading.Thread(target=target, name=f"orchestra-tool-{name}", daemon=True).start()
    return fut


async def dispatch_node(data: DispatchInput, runtime: Runtime[RunContext]) -> dict[str, Any]:
    record = await run_call(runtime.context, data["call"], data.get("meta") or {})
    return {"calls": [record]}

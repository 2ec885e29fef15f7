"""The dispatch node: one parallel branch per planned call (LangGraph ``Send`` fan-out).

It sends the call whose worst case the route node reserved, settles the real cost, and records
the output. A provider failure is recorded on the call (the run goes on with the other outputs);
tool calls are executed and the model is called again, each follow-up reserved on its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from langgraph.runtime import Runtime

from orchestra.budget import CallCost
from orchestra.errors import BackendError
from orchestra.nodes.common import budget_dict, call_record, plan_call, request_for, reservation_of
from orchestra.state import DispatchInput, RunContext
from orchestra.trace.events import CallFinished, CallStarted

__all__ = ["dispatch_node", "run_call"]


async def run_call(ctx: RunContext, call: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Send one reserved call (and its tool follow-ups); return its record."""
    pool = ctx.pool
    model = pool.model(call["model"])
    agent = pool.agent(call["agent"]) if call["role"] != "refine" or call["agent"] in {
        a.name for a in pool.agents} else None
    res = reservation_of(call)
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
    while True:
        # Each request gets its own copy: the list grows with tool results afterwards.
        req = request_for(ctx, model, {**current, "messages": list(messages)}, meta, tools)
        requests += 1
        try:
            comp = await ctx.backend.complete(req)
        except BackendError as e:
            charged = ctx.ledger.settle(res, None) if getattr(e, "billed_unknown", False) else None
            if charged is None:
                ctx.ledger.release(res, count_call=True)
            else:
                total_in += charged.input_tokens
                total_out += charged.output_tokens
                total_usd += charged.usd
            error = str(e)
            break
        usd = comp.cost_usd if comp.cost_usd is not None else model.cost(comp.input_tokens,
                                                                         comp.output_tokens)
        charged = ctx.ledger.settle(res, CallCost(usd, comp.input_tokens, comp.output_tokens))
        total_in += charged.input_tokens
        total_out += charged.output_tokens
        total_usd += charged.usd
        output = comp.text
        if not comp.tool_calls or agent is None or steps >= ctx.max_tool_steps:
            break
        # Run the tools, then ask the model again with their results.
        steps += 1
        messages.append({"role": "assistant", "content": comp.text or None, "tool_calls": [
            {"id": tc["id"], "type": "function",
             "function": {"name": tc["name"], "arguments": json.dumps(tc["arguments"])}}
            for tc in comp.tool_calls]})
        for tc in comp.tool_calls:
            result = await _run_tool(agent, tc)
            tool_log.append({"name": tc["name"], "arguments": tc["arguments"], "result": result})
            messages.append({"role": "tool", "tool_call_id": tc["id"], "content": result})
        fit = plan_call(ctx, model, messages, model.max_output_tokens, meta)
        if isinstance(fit, str):
            error = f"tool follow-up not sent: budget:{fit}"
            break
        max_tokens, cost = fit
        new = ctx.ledger.reserve(cost, call["call_id"])
        if new is None:
            error = "tool follow-up not sent: budget"
            break
        res = new
        current = {**call, "max_tokens": max_tokens}

    latency = time.perf_counter() - t0
    record = call_record(call, output=output, input_tokens=total_in, output_tokens=total_out,
                         cost_usd=total_usd, latency_s=latency, error=error, tool_calls=tool_log,
                         requests=requests)
    ctx.emitter.emit(CallFinished(
        run_id=ctx.run_id, round=call["round"], call_id=call["call_id"], agent=call["agent"],
        model=model.name, model_id=model.id, output=output, input_tokens=total_in,
        output_tokens=total_out, cost_usd=total_usd, latency_s=latency, role=call["role"],
        error=error, tool_calls=tool_log, requests=requests, budget_left=budget_dict(ctx)))
    return record


async def _run_tool(agent: Any, tc: dict[str, Any]) -> str:
    spec = next((t for t in agent.tools if t.name == tc["name"]), None)
    if spec is None:
        return f"error: unknown tool {tc['name']!r}; available: {[t.name for t in agent.tools]}"
    fn = spec.resolve()
    try:
        args = tc["arguments"] if isinstance(tc["arguments"], dict) else {}
        out = fn(**args)
        if asyncio.iscoroutine(out):
            out = await out
    except Exception as e:  # a tool's failure is reported to the model, not raised
        return f"error: {type(e).__name__}: {e}"
    return out if isinstance(out, str) else json.dumps(out, default=str)


async def dispatch_node(data: DispatchInput, runtime: Runtime[RunContext]) -> dict[str, Any]:
    record = await run_call(runtime.context, data["call"], data.get("meta") or {})
    return {"calls": [record]}

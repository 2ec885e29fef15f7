"""The route node: ask the policy for the next action and reserve the budget for it.

For a :class:`~orchestra.policies.base.Route`, every call's worst case is reserved together
before any call is sent (parallel calls cannot interleave into an overspend); a call that does not
fit is dropped and named in the trace. When nothing fits, or a limit is reached, the run finishes
with the best answer it has and says why. After a call was charged above its reservation (a
provider that ignored ``max_tokens`` or billed more), the run stops at once, without asking the
policy: ``budget_overrun``.
"""

from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from orchestra._nodes.common import budget_dict, build_view, new_call_id, plan_call
from orchestra._nodes.refine import refine_round, round_pending
from orchestra._state import (
    DroppedCall,
    PlannedCall,
    RunContext,
    RunState,
    StepCall,
    StepRecord,
)
from orchestra.budget import CallCost
from orchestra.errors import OrchestraError, RoutingError
from orchestra.policies.base import Answer, Route, RunView, Think
from orchestra.prompts import build_messages
from orchestra.trace.events import PolicyDecided

__all__ = ["route_node"]


def _finish(state: RunState, ctx: RunContext, view: RunView, reason: str,
            text: str | None = None) -> dict[str, Any]:
    answer = text if text is not None else view.best_answer
    return {"final": {"answer": answer, "stop_reason": reason}, "plan": []}


def _stop_reason(ctx: RunContext) -> str | None:
    if ctx.ledger.overruns:  # before any limit: the policy must not get another say
        return OVERRUN
    rl = ctx.ledger.rounds_left()
    if rl is not None and rl <= 0:
        return "budget:rounds"
    ex = ctx.ledger.exhausted()
    return _limit_reason(ex) if ex else None


def _limit_reason(limit: str) -> str:
    return OVERRUN if limit == "overrun" else f"budget:{limit}"


#: The stop reason of a run in which a call was charged more than its reservation.
OVERRUN = "budget_overrun"


async def _decide(ctx: RunContext, view: RunView) -> Any:
    policy = ctx.policy
    adecide = getattr(policy, "adecide", None)
    try:
        if adecide is not None:
            return await adecide(view)
        return policy.decide(view)
    except OrchestraError:
        raise
    except Exception as e:
        raise RoutingError(f"policy {getattr(policy, 'name', policy)!r} failed: {type(e).__name__}: {e}") from e


_APPENDED = ("rounds", "calls", "steps", "notes")


async def route_node(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Refine the round that just finished (if any), then ask the policy for the next action.

    Refining at the head of the next route step keeps each round to two LangGraph supersteps
    (route, dispatch) instead of three; the refine step, its events and its budget are the same.
    """
    ctx = runtime.context
    if not round_pending(state):
        return await _route(state, ctx)
    refined = await refine_round(ctx, state)
    after: RunState = {**state, "rounds": [*(state.get("rounds") or []), *refined.get("rounds", [])],
                       "calls": [*(state.get("calls") or []), *refined.get("calls", [])]}
    decided = await _route(after, ctx)
    merged = dict(decided)
    for key in _APPENDED:
        if key in refined or key in decided:
            merged[key] = list(refined.get(key, [])) + list(decided.get(key, []))
    return merged


async def _route(state: RunState, ctx: RunContext) -> dict[str, Any]:
    view = build_view(state, ctx)
    # A limit that leaves no room for another call still lets the policy answer (free), but
    # nothing else: a Route or a Think then ends the run with the limit as the reason.
    why = _stop_reason(ctx)
    if why == OVERRUN:
        return _finish(state, ctx, view, why)

    t0 = time.perf_counter()
    action = await _decide(ctx, view)
    decide_s = time.perf_counter() - t0
    rnd = view.round
    if why is not None and not isinstance(action, Answer):
        return _finish(state, ctx, view, why)

    if isinstance(action, Think):
        if view.think_steps >= ctx.max_think_steps:
            ctx.emitter.emit(PolicyDecided(
                run_id=ctx.run_id, round=rnd, action="think", reason="think limit reached",
                note=action.note, budget_left=budget_dict(ctx), latency_s=decide_s))
            return _finish(state, ctx, view, "think_limit")
        step: StepRecord = {"round": rnd, "action": "think", "reason": action.reason,
                "scores": dict(action.scores), "note": action.note, "calls": [], "dropped": []}
        ctx.emitter.emit(PolicyDecided(
            run_id=ctx.run_id, round=rnd, action="think", reason=action.reason,
            scores=dict(action.scores), note=action.note, budget_left=budget_dict(ctx),
            latency_s=decide_s))
        return {"notes": [action.note], "think_steps": view.think_steps + 1, "steps": [step],
                "plan": []}

    if isinstance(action, Answer):
        answered: StepRecord = {"round": rnd, "action": "answer", "reason": action.reason,
                "scores": dict(action.scores), "note": None, "calls": [], "dropped": []}
        ctx.emitter.emit(PolicyDecided(
            run_id=ctx.run_id, round=rnd, action="answer", reason=action.reason,
            scores=dict(action.scores), budget_left=budget_dict(ctx), latency_s=decide_s))
        return {**_finish(state, ctx, view, "answered", action.text), "steps": [answered]}

    if not isinstance(action, Route):
        raise RoutingError(
            f"policy {ctx.policy.name!r} returned {action!r}; expected Think, Route or Answer"
        )
    if not action.calls:
        raise RoutingError(f"policy {ctx.policy.name!r} returned a Route with no calls")

    pool = ctx.pool
    meta = dict(state.get("meta") or {})
    planned: list[PlannedCall] = []
    dropped: list[DroppedCall] = []
    costs: list[tuple[CallCost, str]] = []
    for c in action.calls:
        agent = pool.agent(c.agent) if c.agent else pool.answer_agent
        allowed = pool.models_for(agent)
        if c.model is None:
            model = allowed[0]
        else:
            model = pool.model(c.model)
            if model not in allowed:
                raise RoutingError(
                    f"policy {ctx.policy.name!r} routed agent {agent.name!r} to model "
                    f"{model.name!r}, which the agent may not use; allowed: {[m.name for m in allowed]}"
                )
        prompt = c.prompt if c.prompt is not None else state["query"]
        messages = build_messages(agent, model, prompt, query=state["query"],
                                  notes=state.get("notes") or (), history=state.get("history") or ())
        fit = plan_call(ctx, model, messages, c.max_tokens or model.max_output_tokens, meta)
        if isinstance(fit, str):
            dropped.append({"agent": agent.name, "model": model.name, "limit": fit})
            continue
        max_tokens, cost = fit
        call_id = new_call_id()
        planned.append({
            "call_id": call_id, "round": rnd, "role": "route", "agent": agent.name,
            "model": model.name, "model_id": model.id, "prompt": prompt, "messages": messages,
            "max_tokens": max_tokens, "tools": bool(agent.tools),
        })
        costs.append((cost, call_id))

    # All the round's calls reserve together, atomically; a refused one is dropped.
    reservations, refused = ctx.ledger.reserve_many(costs)
    kept = []
    for p, res in zip(planned, reservations, strict=True):
        if res is None:
            dropped.append({"agent": p["agent"], "model": p["model"], "limit": refused or "usd"})
            continue
        p["reservation"] = {"id": res.id, "cost": {"usd": res.cost.usd,
                                                   "input_tokens": res.cost.input_tokens,
                                                   "output_tokens": res.cost.output_tokens}}
        kept.append(p)

    summary: list[StepCall] = [{"call_id": p["call_id"], "agent": p["agent"], "model": p["model"],
                "max_tokens": p["max_tokens"], "reserved_usd": p["reservation"]["cost"]["usd"]}
               for p in kept]
    routed: StepRecord = {"round": rnd, "action": "route", "reason": action.reason, "scores": dict(action.scores),
            "note": None, "calls": summary, "dropped": dropped}
    ctx.emitter.emit(PolicyDecided(
        run_id=ctx.run_id, round=rnd, action="route", reason=action.reason,
        scores=dict(action.scores), calls=[dict(c) for c in summary],
        dropped=[dict(d) for d in dropped], budget_left=budget_dict(ctx),
        latency_s=decide_s))
    if not kept:
        limit = next((d["limit"] for d in dropped if d.get("limit")), "usd")
        out = _finish(state, ctx, view, _limit_reason(limit))
        out["steps"] = [routed]
        return out
    return {"plan": kept, "steps": [routed]}

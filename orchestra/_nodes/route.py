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
    RUNTIME_ROLES,
    DroppedCall,
    PlannedCall,
    RunContext,
    RunState,
    StepCall,
    StepRecord,
)
from orchestra.budget import CallCost
from orchestra.errors import OrchestraError, RoutingError, UserError
from orchestra.policies.base import Answer, Call, Route, RunView, Think
from orchestra.prompts import build_messages
from orchestra.trace.events import PolicyDecided

__all__ = ["MERGES", "route_node"]


def _finish(state: RunState, ctx: RunContext, view: RunView, reason: str,
            text: str | None = None, from_call: str | None = None) -> dict[str, Any]:
    """End the run: with ``text`` (credited to ``from_call``, to the call whose output it is, or
    to the policy), or with the best answer so far (credited to the call its round took it
    from)."""
    calls = state.get("calls") or []
    if text is None and from_call is None:
        answer, source = None, None
        for r in reversed(state.get("rounds") or []):
            if r.get("answer"):
                answer, source = r["answer"], r.get("answer_from")
                break
    elif from_call is not None:
        source = from_call
        answer = text if text is not None else next(
            (c["output"] for c in calls if c["call_id"] == from_call), None)
    else:
        answer = text
        source = next((c["call_id"] for c in reversed(calls)
                       if c["role"] != "policy" and c["error"] is None and c["output"] == text),
                      "policy")
    return {"final": {"answer": answer, "stop_reason": reason, "answer_from": source},
            "plan": []}


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


async def _decide(ctx: RunContext, view: RunView, step: int) -> Any:
    decider: Any = ctx.decider if ctx.decider is not None else ctx.policy
    if ctx.policy_calls is not None:
        ctx.policy_calls.begin(step, view.round)
    adecide = getattr(decider, "adecide", None)
    try:
        if adecide is not None:
            return await adecide(view)
        return decider.decide(view)
    except OrchestraError:
        raise
    except Exception as e:
        raise RoutingError(f"policy {getattr(ctx.policy, 'name', ctx.policy)!r} failed: "
                           f"{type(e).__name__}: {e}") from e


class _Invalid(Exception):
    """The policy's action cannot be carried out (the message says why); recorded as a decision
    of its own, then handled as :attr:`RunContext.on_invalid` says."""


#: The refiners a Route may name in ``merge``.
MERGES = ("llm", "vote", "last")


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
    action = await _decide(ctx, view, len(state.get("steps") or []))
    decide_s = time.perf_counter() - t0
    # The policy's own calls (ctx.complete) are part of this step, whatever it decided.
    made = ctx.policy_calls.drain() if ctx.policy_calls is not None else []
    if made:
        state = {**state, "calls": [*(state.get("calls") or []), *made]}
        why = why or _stop_reason(ctx)
    try:
        out = _act(state, ctx, view, action, why, decide_s)
    except _Invalid as bad:
        out = _invalid(state, ctx, view, action, str(bad), decide_s)
    if made:
        out["calls"] = [*made, *out.get("calls", [])]
    return out


def _invalid(state: RunState, ctx: RunContext, view: RunView, action: Any, reason: str,
             decide_s: float) -> dict[str, Any]:
    """Record an invalid action, then raise (``on_invalid="raise"``) or fall back: answer with
    the best answer so far, or, before any, take the pool's default route once."""
    rnd = view.round
    scores = dict(action.scores) if isinstance(action, (Think, Route, Answer)) else {}
    step: StepRecord = {"round": rnd, "action": "invalid", "reason": reason, "scores": scores,
                        "note": None, "calls": [], "dropped": []}
    ctx.emitter.emit(PolicyDecided(
        run_id=ctx.run_id, round=rnd, action="invalid", reason=reason, scores=scores,
        budget_left=budget_dict(ctx), latency_s=decide_s))
    if ctx.on_invalid == "raise":
        raise RoutingError(f"policy {ctx.policy.name!r}: {reason}")
    if view.best_answer is not None or any(d.action == "invalid" for d in view.decisions):
        return {**_finish(state, ctx, view, "invalid_action"), "steps": [step]}
    fallback = Route([Call()], reason=f"fallback (the pool's default call) after an invalid "
                                       f"action: {reason}")
    out = _act(state, ctx, view, fallback, _stop_reason(ctx), 0.0)
    out["steps"] = [step, *out.get("steps", [])]
    return out


def _act(state: RunState, ctx: RunContext, view: RunView, action: Any, why: str | None,
         decide_s: float) -> dict[str, Any]:
    """Carry out one action: the state update. Raises :class:`_Invalid` before reserving
    anything when the action cannot be carried out."""
    rnd = view.round
    if why is not None and isinstance(action, (Think, Route)):
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
        text = action.text
        if action.from_call is not None:
            source = next((c for c in state.get("calls") or []
                           if c["call_id"] == action.from_call), None)
            if source is None:
                raise _Invalid(f"Answer(from_call={action.from_call!r}) names no call of this run")
            if text is None and (source["error"] is not None or not source["output"].strip()):
                raise _Invalid(f"Answer(from_call={action.from_call!r}): that call has no "
                               f"output ({source['error'] or 'empty'})")
        answered: StepRecord = {"round": rnd, "action": "answer", "reason": action.reason,
                "scores": dict(action.scores), "note": None, "calls": [], "dropped": []}
        ctx.emitter.emit(PolicyDecided(
            run_id=ctx.run_id, round=rnd, action="answer", reason=action.reason,
            scores=dict(action.scores), budget_left=budget_dict(ctx), latency_s=decide_s))
        return {**_finish(state, ctx, view, "answered", text, action.from_call),
                "steps": [answered]}

    if not isinstance(action, Route):
        raise _Invalid(f"returned {action!r}; expected Think, Route or Answer")
    if not action.calls:
        raise _Invalid("returned a Route with no calls")
    merge = action.merge
    if merge is not None:
        if merge not in MERGES:
            raise _Invalid(f"Route(merge={merge!r}): unknown refiner; known: {list(MERGES)}")
        if merge == "llm" and _refiner_agent(ctx) is None:
            raise _Invalid("Route(merge='llm') needs an agent with role 'refine' in the pool "
                           "(or refiner.agent set); use merge='vote' or 'last'")

    pool = ctx.pool
    meta = dict(state.get("meta") or {})
    planned: list[PlannedCall] = []
    dropped: list[DroppedCall] = []
    costs: list[tuple[CallCost, str]] = []
    for c in action.calls:
        if not isinstance(c, Call):
            raise _Invalid(f"Route holds {c!r}; expected Call(...) items")
        if c.role is not None and (not isinstance(c.role, str) or not c.role.strip()
                                   or c.role in RUNTIME_ROLES):
            raise _Invalid(f"Call(role={c.role!r}): a role is a non-empty label other than "
                           f"{sorted(RUNTIME_ROLES)} (the runtime's own)")
        if c.system is not None and not isinstance(c.system, str):
            raise _Invalid(f"Call(system={c.system!r}): expected a string")
        try:
            agent = pool.agent(c.agent) if c.agent else pool.answer_agent
            allowed = pool.models_for(agent)
            model = allowed[0] if c.model is None else pool.model(c.model)
        except UserError as e:
            raise _Invalid(str(e)) from None
        if model not in allowed:
            raise _Invalid(f"routed agent {agent.name!r} to model {model.name!r}, which the "
                           f"agent may not use; allowed: {[m.name for m in allowed]}")
        prompt = c.prompt if c.prompt is not None else state["query"]
        messages = build_messages(agent, model, prompt, query=state["query"],
                                  notes=state.get("notes") or (), history=state.get("history") or (),
                                  system=c.system)
        fit = plan_call(ctx, model, messages, c.max_tokens or model.max_output_tokens, meta)
        if isinstance(fit, str):
            dropped.append({"agent": agent.name, "model": model.name, "limit": fit})
            continue
        max_tokens, cost = fit
        call_id = new_call_id()
        planned.append({
            "call_id": call_id, "round": rnd, "role": c.role or "route", "agent": agent.name,
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
    routed: StepRecord = {"round": rnd, "action": "route", "reason": action.reason,
                          "scores": dict(action.scores), "note": None, "calls": summary,
                          "dropped": dropped, "merge": merge}
    ctx.emitter.emit(PolicyDecided(
        run_id=ctx.run_id, round=rnd, action="route", reason=action.reason,
        scores=dict(action.scores), calls=[dict(c) for c in summary],
        dropped=[dict(d) for d in dropped], budget_left=budget_dict(ctx),
        latency_s=decide_s, merge=merge))
    if not kept:
        limit = next((d["limit"] for d in dropped if d.get("limit")), "usd")
        out = _finish(state, ctx, view, _limit_reason(limit))
        out["steps"] = [routed]
        return out
    return {"plan": kept, "steps": [routed]}


def _refiner_agent(ctx: RunContext) -> Any:
    pool = ctx.pool
    if pool.refiner.agent:
        return pool.agent(pool.refiner.agent)
    refiners = pool.agents_with_role("refine")
    return refiners[0] if refiners else None

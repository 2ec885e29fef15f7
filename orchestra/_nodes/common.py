"""Helpers shared by the nodes: building the policy's view, reserving and settling calls."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from orchestra._state import (
    CallRecord,
    PlannedCall,
    RunContext,
    RunState,
    StepRecord,
    is_route_call,
)
from orchestra.backends.base import CompletionRequest, context_tokens
from orchestra.budget import CallCost, Reservation, max_output_that_fits
from orchestra.policies.base import CallView, DecisionView, RoundView, RunView
from orchestra.spec import ModelSpec

__all__ = [
    "budget_dict", "build_decisions", "build_view", "call_record", "call_view", "new_call_id",
    "plan_call",
]


def new_call_id() -> str:
    return uuid.uuid4().hex[:12]


def budget_dict(ctx: RunContext) -> dict[str, Any]:
    """What is left of the budget, as JSON for events (``vars`` of a flat dataclass: a shallow
    copy, much cheaper than ``dataclasses.asdict``)."""
    return dict(vars(ctx.ledger.left()))


def call_view(c: CallRecord) -> CallView:
    """A call record as a policy sees it."""
    return CallView(
        agent=c["agent"], model=c["model"], prompt=c.get("prompt", ""),
        output=c.get("output", ""), cost_usd=c["cost_usd"], input_tokens=c["input_tokens"],
        output_tokens=c["output_tokens"], latency_s=c["latency_s"], error=c.get("error"),
        call_id=c["call_id"], role=c["role"], round=c["round"])


def build_decisions(steps: Sequence[StepRecord]) -> tuple[DecisionView, ...]:
    """The policy's decisions as its view shows them."""
    return tuple(
        DecisionView(round=s["round"], action=s["action"], reason=s.get("reason", ""),
                     scores=s.get("scores") or {}, calls=tuple(c["call_id"] for c in s["calls"]),
                     note=s.get("note"))
        for s in steps)


def build_view(state: RunState, ctx: RunContext) -> RunView:
    """The frozen view a policy decides from."""
    rounds = []
    calls = state.get("calls") or []
    for r in state.get("rounds") or []:
        cv = tuple(call_view(c) for c in calls if c["round"] == r["index"] and is_route_call(c))
        rounds.append(RoundView(index=r["index"], calls=cv, answer=r.get("answer") or "",
                                refiner=r.get("refiner", ""), conflicts=r.get("conflicts")))
    return RunView(
        query=state["query"],
        history=tuple(state.get("history") or ()),
        rounds=tuple(rounds),
        notes=tuple(state.get("notes") or ()),
        budget_left=ctx.ledger.left(),
        pool=ctx.pool,
        round=len(rounds),
        think_steps=state.get("think_steps", 0),
        meta=dict(state.get("meta") or {}),
        run_id=ctx.run_id,
        decisions=build_decisions(state.get("steps") or []),
        policy_calls=tuple(call_view(c) for c in calls if c["role"] == "policy"),
    )


def plan_call(ctx: RunContext, model: ModelSpec, messages: list[dict[str, Any]],
              want_max_tokens: int, meta: dict[str, Any]) -> tuple[int, CallCost] | str:
    """The max_tokens and worst-case cost of a call that fits what is left, or the name of the
    limit that leaves no room for it.

    ``max_tokens`` is shrunk to what the budget allows, but never below the context's
    ``min_output_tokens`` (a call that cannot say anything useful is not sent). Whether the
    prompt fits the model's context window is judged on the backend's estimate of its tokens
    (:func:`~orchestra.backends.base.context_tokens`); the reservation uses the bound.
    """
    prompt_tokens = ctx.backend.prompt_tokens_bound(model, messages)
    in_price, out_price = model.input_price or 0.0, model.output_price or 0.0
    fits_context = model.context_window - context_tokens(ctx.backend, model, messages,
                                                         prompt_tokens)
    cap = min(want_max_tokens, model.max_output_tokens, fits_context)
    if cap <= 0:
        return "context"
    left = ctx.ledger.left()
    fit = max_output_that_fits(left.usd, left.tokens, prompt_tokens, in_price, out_price, cap)
    floor = min(ctx.min_output_tokens, cap)
    if fit < floor:
        if left.usd is not None and (prompt_tokens * in_price + floor * out_price) / 1e6 > left.usd:
            return "usd"
        return "tokens" if left.tokens is not None else "usd"
    exact = ctx.backend.cost_bound(model, messages, fit, meta)
    usd = exact if exact is not None else (prompt_tokens * in_price + fit * out_price) / 1e6
    return fit, CallCost(usd=usd, input_tokens=prompt_tokens, output_tokens=fit)


def request_for(ctx: RunContext, model: ModelSpec, call: PlannedCall, meta: dict[str, Any],
                tools: list[dict[str, Any]] | None) -> CompletionRequest:
    timeout = model.timeout_s
    secs = ctx.ledger.seconds_left()
    if secs is not None:
        timeout = max(0.001, min(timeout, secs))
    return CompletionRequest(model=model, messages=call["messages"], max_tokens=call["max_tokens"],
                             timeout_s=timeout, tools=tools, meta=meta)


def reservation_of(call: PlannedCall) -> Reservation:
    r = call["reservation"]
    return Reservation(id=r["id"], cost=CallCost(**r["cost"]), label=call["call_id"])


def call_record(call: PlannedCall, *, output: str, input_tokens: int, output_tokens: int,
                cost_usd: float, latency_s: float, error: str | None,
                tool_calls: list[dict[str, Any]] | None = None, requests: int = 1,
                overrun: dict[str, Any] | None = None,
                usage_note: str | None = None) -> CallRecord:
    """A finished call as the state records it. ``requests`` counts the model requests it made
    (1, plus one per tool follow-up); the calls budget counts requests. ``overrun``: what was
    charged above the reservation (:meth:`~orchestra.budget.Overrun.to_dict` and a reason);
    ``usage_note``: what was wrong with the usage the provider reported."""
    return {
        "call_id": call["call_id"], "round": call["round"], "role": call["role"],
        "agent": call["agent"], "model": call["model"], "model_id": call["model_id"],
        "prompt": call["prompt"], "output": output, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "cost_usd": cost_usd, "latency_s": latency_s,
        "error": error, "tool_calls": tool_calls or [], "requests": requests,
        "overrun": overrun, "usage_note": usage_note,
    }

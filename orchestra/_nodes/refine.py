"""The refine node: merge the round's outputs into the round's answer.

``llm``: the refiner agent synthesises the outputs and says where they conflict (one call,
reserved like any other; a round with a single output passes it through; when the budget leaves
no room for the refiner, the vote decides and the trace says so). ``vote``: majority over extracted
short answers, agreeing answers counted together, ties broken as :func:`orchestra.refiners.vote`
says (the agreed core, an answer on the question's topic, then the models' quality priors).
``last``: the last output.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from orchestra._nodes.common import budget_dict, plan_call
from orchestra._nodes.dispatch import run_call
from orchestra._state import CallRecord, PlannedCall, RunContext, RunState, is_route_call
from orchestra.prompts import build_messages, parse_refined, refiner_prompt
from orchestra.refiners import vote
from orchestra.trace.events import Refined

__all__ = ["refine_node", "refine_round", "round_pending"]


def _vote(ctx: RunContext, ok: list[CallRecord], query: str) -> tuple[CallRecord, dict[str, int]]:
    prio = [ctx.pool.model(c["model"]).quality or 0.0 for c in ok]
    idx, counts = vote([c["output"] for c in ok], priority=prio, query=query)
    return ok[idx], counts


def round_pending(state: RunState) -> bool:
    """Whether the current round has dispatched calls that are not refined yet."""
    rnd = len(state.get("rounds") or [])
    return any(c["round"] == rnd and is_route_call(c) for c in state.get("calls") or [])


def _merge_of(state: RunState, rnd: int, default: str) -> str:
    """The refiner the round's route decision chose, or the pool's."""
    for s in reversed(state.get("steps") or []):
        if s["round"] == rnd and s["action"] == "route":
            return s.get("merge") or default
    return default


async def refine_node(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """The refine step as a LangGraph node (see :func:`refine_round`)."""
    return await refine_round(runtime.context, state)


async def refine_round(ctx: RunContext, state: RunState) -> dict[str, Any]:
    """Merge the current round's outputs; returns the state update (round record, refiner call)."""
    rnd = len(state.get("rounds") or [])
    calls = [c for c in state.get("calls") or [] if c["round"] == rnd and is_route_call(c)]
    answerers = {a.name for a in ctx.pool.agents if a.role == "answer"}
    # Only answer-role agents propose answers; a verifier's reply is read by the policy instead.
    ok = [c for c in calls if c["error"] is None and c["output"].strip() and c["agent"] in answerers]
    kind = _merge_of(state, rnd, ctx.pool.refiner.kind)
    conflicts: str | None = None
    votes: dict[str, int] = {}
    extra: list[CallRecord] = []
    refiner_name: str = kind
    source: str | None = None
    if not ok:
        answer = ""
        refiner_name = "none"
    elif len(ok) == 1 or kind == "last":
        answer, source = ok[-1]["output"], ok[-1]["call_id"]
        refiner_name = "pass" if len(ok) == 1 else "last"
    elif kind == "vote":
        chosen, votes = _vote(ctx, ok, state["query"])
        answer, source = chosen["output"], chosen["call_id"]
    else:
        answer, source, conflicts, votes, extra, refiner_name = await _llm_refine(
            ctx, state, rnd, ok)

    ctx.ledger.end_round()
    cost = sum(c["cost_usd"] for c in extra)
    ctx.emitter.emit(Refined(
        run_id=ctx.run_id, round=rnd, refiner=refiner_name,
        inputs=[{"agent": c["agent"], "model": c["model"], "output": c["output"]} for c in ok],
        output=answer, conflicts=conflicts, votes=votes, cost_usd=cost,
        budget_left=budget_dict(ctx)))
    return {
        "rounds": [{"index": rnd, "answer": answer, "refiner": refiner_name,
                    "conflicts": conflicts, "votes": votes, "answer_from": source}],
        "calls": extra,
        "plan": [],
    }


async def _llm_refine(ctx: RunContext, state: RunState, rnd: int, ok: list[CallRecord]
                      ) -> tuple[str, str, str | None, dict[str, int], list[CallRecord], str]:
    """(answer, the call it came from, conflicts, votes, the refiner call, the refiner's name)."""
    pool = ctx.pool
    agent = pool.refiner_agent()
    if agent is None:  # a Route chose merge="llm" in a pool whose refiner is another kind
        agent = pool.agents_with_role("refine")[0]
    model = pool.model(pool.refiner.model) if pool.refiner.model else pool.models_for(agent)[0]
    prompt = refiner_prompt(state["query"], [(f"{c['agent']}@{c['model']}", c["output"]) for c in ok])
    messages = build_messages(agent, model, prompt, query=state["query"],
                              history=state.get("history") or ())
    want = pool.refiner.max_output_tokens or model.max_output_tokens
    meta = dict(state.get("meta") or {})
    # One refiner call per round, with an id a resumed run finds again in the journal.
    call_id = f"refine-{rnd}"
    done = ctx.journal.finished.get(call_id) if ctx.journal is not None else None
    if done is not None:
        record = done
    else:
        fit = plan_call(ctx, model, messages, want, meta)
        res = None if isinstance(fit, str) else ctx.ledger.reserve(fit[1], call_id)
        if res is None or isinstance(fit, str):
            chosen, votes = _vote(ctx, ok, state["query"])
            return (chosen["output"], chosen["call_id"], None, votes, [],
                    "vote (no budget for the llm refiner)")
        call: PlannedCall = {
            "call_id": call_id, "round": rnd, "role": "refine", "agent": agent.name,
            "model": model.name, "model_id": model.id, "prompt": prompt, "messages": messages,
            "max_tokens": fit[0],
            "reservation": {"id": res.id, "cost": {"usd": res.cost.usd,
                                                   "input_tokens": res.cost.input_tokens,
                                                   "output_tokens": res.cost.output_tokens}},
        }
        record = await run_call(ctx, call, meta)
    if record["error"] or not record["output"].strip():
        chosen, votes = _vote(ctx, ok, state["query"])
        return (chosen["output"], chosen["call_id"], None, votes, [record],
                "vote (llm refiner failed)")
    answer, conflicts = parse_refined(record["output"])
    return answer, call_id, conflicts, {}, [record], f"llm:{agent.name}@{model.name}"

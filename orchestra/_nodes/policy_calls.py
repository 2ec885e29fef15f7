"""A policy's own model calls (``ctx.complete``), charged to the run's budget like any call.

The route node hands the policy (its ``start``) a :class:`PolicyCalls`: ``await
ctx.complete(prompt, model=..., system=...)`` plans the call against what is left (the context
window, the USD and token limits), reserves its worst case, sends it through the same path as a
route call (:func:`~orchestra._nodes.dispatch.run_call`: journal, events, settling, overruns)
with role ``policy``, and returns a :class:`~orchestra.policies.base.CallView`. The records go
into the run's state with the decision that made them, so the trace, the spend and a resumed
run all see them; their ids are ``policy-<step>-<n>`` (the decision's index in the run, the
call's index in it), so a durable run that resumes in the middle of a decision finds the calls
it already paid for in the journal instead of sending them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestra._nodes.common import call_record, call_view, plan_call
from orchestra._nodes.dispatch import run_call
from orchestra._state import CallRecord, PlannedCall
from orchestra.errors import UserError
from orchestra.policies.base import CallView
from orchestra.prompts import build_messages

if TYPE_CHECKING:
    from orchestra._state import RunContext
    from orchestra.spec import Pool

__all__ = ["PolicyCalls"]


class PolicyCalls:
    """The :class:`~orchestra.policies.base.PolicyContext` of one run.

    Attributes:
        run_id: the run.
        pool: its pool.
        meta: its metadata (task, query_id... as the caller gave them).
        query: its query.
    """

    def __init__(self, run_id: str, pool: Pool, meta: Mapping[str, Any], query: str) -> None:
        self.run_id = run_id
        self.pool = pool
        self.meta: Mapping[str, Any] = dict(meta)
        self.query = query
        self._ctx: RunContext | None = None
        self._step = 0
        self._round = 0
        self._made: list[CallRecord] = []

    def bind(self, ctx: RunContext) -> None:
        """Attach the run's context (the ledger, backend and emitter the calls go through)."""
        self._ctx = ctx

    def begin(self, step: int, rnd: int) -> None:
        """A decision starts: ``step`` is its index in the run, ``rnd`` the round it decides."""
        self._step, self._round, self._made = step, rnd, []

    def drain(self) -> list[CallRecord]:
        """The records of the calls made since :meth:`begin` (for the state), then forget them."""
        made, self._made = self._made, []
        return made

    async def complete(self, prompt: str, *, model: str | None = None, agent: str | None = None,
                       system: str | None = None, max_tokens: int | None = None) -> CallView:
        """Call a model for the policy; see :class:`~orchestra.policies.base.PolicyContext`.

        Raises:
            UserError: for an unknown agent or model, or a model the agent may not use (the
                policy's mistake; the route step records it as the policy's failure).
        """
        ctx = self._ctx
        if ctx is None:
            raise UserError("ctx.complete() is for use while the run decides (in decide/adecide), "
                            "not in start() or after the run")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f"ctx.complete() needs a non-empty prompt (got {prompt!r})")
        pool = self.pool
        a = pool.agent(agent) if agent else pool.answer_agent
        allowed = pool.models_for(a)
        m = pool.model(model) if model else allowed[0]
        if m not in allowed:
            raise UserError(f"ctx.complete(): agent {a.name!r} may not use model {m.name!r}; "
                            f"allowed: {[x.name for x in allowed]}")
        messages = build_messages(a, m, prompt, query=self.query, system=system)
        call_id = f"policy-{self._step}-{len(self._made)}"
        planned: PlannedCall = {
            "call_id": call_id, "round": self._round, "role": "policy", "agent": a.name,
            "model": m.name, "model_id": m.id, "prompt": prompt, "messages": messages,
            "max_tokens": 0,
        }
        meta = dict(self.meta)
        done = ctx.journal.finished.get(call_id) if ctx.journal is not None else None
        if done is not None:  # paid before an interruption: never sent again
            self._made.append(done)
            return call_view(done)
        fit = plan_call(ctx, m, messages, max_tokens or m.max_output_tokens, meta)
        res = None if isinstance(fit, str) else ctx.ledger.reserve(fit[1], call_id)
        if isinstance(fit, str) or res is None:
            limit = fit if isinstance(fit, str) else (ctx.ledger.check(fit[1]) or "usd")
            record = call_record(planned, output="", input_tokens=0, output_tokens=0,
                                 cost_usd=0.0, latency_s=0.0, requests=0,
                                 error=f"not sent: budget:{limit}")
            self._made.append(record)
            return call_view(record)
        planned["max_tokens"] = fit[0]
        planned["reservation"] = {"id": res.id, "cost": {
            "usd": res.cost.usd, "input_tokens": res.cost.input_tokens,
            "output_tokens": res.cost.output_tokens}}
        record = await run_call(ctx, planned, meta)
        self._made.append(record)
        return call_view(record)

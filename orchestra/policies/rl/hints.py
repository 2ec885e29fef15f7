"""Scorer estimates in the ``rl`` policy's state: what the answer-aware cascade knows, as text.

A 135M-parameter LM that reads a question cannot tell which of eleven models will get it right:
the learned routers answer that from thousands of recorded outcomes. So the policy can be shown
their estimates (Router-R1 shows model descriptors; here the numbers of a trained ``escalate``
artifact, :mod:`orchestra.policies.escalate`): before the first call, each model's P(right) and
cost; after each round, each output's P(right) and what calling one more model would add. The
estimates are rendered at the run's λ as a *net* value per candidate —
``P(right) after the call − P(right) now − λ·cost`` with cost relative to the priciest model's
mean — and shown inside an ``<information>`` block the policy did not write (masked from the
loss like every observation).

:class:`ScorerHints` builds a run's estimate blocks from the run's view through the very
:class:`~orchestra.policies.escalate.policy.EscalatePolicy` decision (one artifact, loaded
once), and also returns that decision as action text: the *suggestion*, which is the teacher of
the supervised warm start (``orchestra train rl --sft-plan teacher``) and is never followed in
serving unless the policy writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestra.errors import UserError

if TYPE_CHECKING:
    from orchestra.policies.base import RunView
    from orchestra.policies.escalate.cascade import Escalator
    from orchestra.policies.escalate.policy import EscalatePolicy
    from orchestra.spec import Pool

__all__ = ["Estimate", "ScorerHints"]


@dataclass(frozen=True)
class Estimate:
    """One decision's estimates: the block shown to the policy and the scorer's own action.

    Attributes:
        text: the ``<information>`` block (ends with a newline).
        suggestion: the cascade's decision as protocol text (``<route>m</route>`` or
            ``<answer>#k</answer>``).
    """

    text: str
    suggestion: str


class ScorerHints:
    """Estimates from a trained ``escalate`` artifact for the runs of one pool.

    Args:
        pool: the pool the ``rl`` policy routes.
        path: the artifact (directory or name under the artifacts folder); ``None``: the one
            trained on the pool's models.
        escalator: an already loaded cascade instead of ``path`` (shared across runs).
        top: candidates shown per decision (best net value first).
        max_calls: calls per run the cascade plans for (the rl policy's turns minus the answer).

    Raises:
        UserError: no usable artifact (the message names ``hints=`` and how to train one).
    """

    def __init__(self, pool: Pool, path: str | None = None, *, escalator: Escalator | None = None,
                 top: int = 3, max_calls: int = 3) -> None:
        from orchestra.policies.escalate.artifact import load_escalator

        if escalator is None:
            if path is None:
                from orchestra.policies.learned.policy import artifact_for_pool

                path = str(artifact_for_pool("escalate", pool.models_for(pool.answer_agent)).path)
            escalator = load_escalator(path)
        if top < 1:
            raise UserError(f"rl hints: top must be >= 1 (got {top!r})")
        self.pool = pool
        self.escalator = escalator
        self.top = top
        self.max_calls = max_calls
        self._by_lam: dict[float, EscalatePolicy] = {}

    @property
    def path(self) -> str | None:
        p = getattr(self.escalator, "path", None)
        return None if p is None else str(p)

    def _policy(self, lam: float) -> EscalatePolicy:
        from orchestra.policies.escalate.policy import EscalatePolicy

        pol = self._by_lam.get(lam)
        if pol is None:
            pol = self._by_lam[lam] = EscalatePolicy(self.pool, escalator=self.escalator, lam=lam,
                                                     max_calls=self.max_calls)
        return pol

    def estimate(self, view: RunView, lam: float, numbered: list[str]) -> Estimate:
        """The estimates for the decision about to be made in ``view`` at cost weight ``lam``;
        ``numbered``: the call ids of the outputs shown so far, in ``[k]`` order."""
        from orchestra.policies.base import Answer, Route

        pol = self._policy(lam)
        action = pol.decide(view)
        s: Mapping[str, Any] = action.scores or {}
        # The artifact's model names -> the pool's (what the policy routes to).
        names = {self.escalator.models[j]: n for j, n in pol.pool_name.items()}
        cands = sorted(((names.get(m, m), c) for m, c in (s.get("candidates") or {}).items()),
                       key=lambda mc: -float(mc[1].get("utility", 0.0)))[: self.top]
        p_right = {names.get(m, m): float(p) for m, p in (s.get("p_correct") or {}).items()}
        lines = ["<information>", "estimates:"]
        if p_right:
            by_model: dict[str, int] = {}
            for r in view.rounds:
                for c in r.calls:
                    if c.call_id in numbered:
                        by_model.setdefault(c.model, numbered.index(c.call_id) + 1)
            shown = sorted((by_model[m], p) for m, p in p_right.items() if m in by_model)
            lines.append("outputs: " + "; ".join(f"[{k}] P(right) {p:.2f}" for k, p in shown))
        for m, c in cands:
            lines.append(f"- {m}: net {float(c.get('utility', 0.0)):+.3f}, P(right) after "
                         f"{float(c.get('p_after', 0.0)):.2f}")
        if not cands:
            lines.append("- no model can be called")
        lines.append("</information>")
        if isinstance(action, Route) and action.calls:
            suggestion = f"<route>{action.calls[0].model}</route>"
        elif isinstance(action, Answer) and action.from_call in numbered:
            suggestion = f"<answer>#{numbered.index(action.from_call) + 1}</answer>"
        elif numbered:
            suggestion = f"<answer>#{len(numbered)}</answer>"
        else:
            cheapest = min(self.pool.models_for(self.pool.answer_agent),
                           key=lambda m: (m.input_price or 0.0) + (m.output_price or 0.0))
            suggestion = f"<route>{cheapest.name}</route>"
        return Estimate("\n".join(lines) + "\n", suggestion)

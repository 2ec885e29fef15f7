"""The ``escalate`` policy: an answer-aware learned cascade (FrugalGPT / AutoMix style).

Round 0 calls the model with the best expected utility; after each round the policy reads every
answer so far, scores each one's P(correct) (from the query, the answer text and agreement with
the other answers), and either answers with the most probable answer (``Answer(from_call=...)``)
or calls the model whose expected gain − λ·cost is best and positive, if its cautious predicted
cost fits the USD left. The probabilities, gains, costs and λ go into the decision's ``scores``.
Everything is derived from the view: no per-run state.

Parameters (``--param key=value`` or a recipe's ``params:``):

* ``path``: the artifact written by ``orchestra train escalate`` (a directory, or a name under
  ``<data home>/artifacts``). Default: the newest escalate artifact there trained on exactly the
  pool's models (``routerbench-escalate`` for the RouterBench replay pool), else a ``UserError``
  naming ``path=`` and ``orchestra train escalate --data <your recorded table>``.
* ``lam``: cost weight λ (cost in units of the priciest model's mean training cost per query);
  default: the artifact's (the cheapest λ whose training quality is within 0.01 of the best).
* ``max_calls``: calls per query at most (default: the artifact's, 3). The run also stops
  calling when the rounds budget would leave no round to answer from.
* ``agent``: the agent to call (default: the pool's answer agent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestra.errors import UserError
from orchestra.policies.base import Action, Answer, Call, Route, RunView
from orchestra.policies.registry import register_policy

if TYPE_CHECKING:
    from orchestra.policies.escalate.cascade import Escalator
    from orchestra.policies.learned.provenance import ArtifactChoice
    from orchestra.spec import Pool

__all__ = ["EscalatePolicy"]


class EscalatePolicy:
    """Answer-aware cascade backed by a trained :class:`~orchestra.policies.escalate.cascade.
    Escalator` (see the module docstring).

    Raises:
        UserError: missing artifact, bad ``lam`` / ``max_calls``, or no pool model known to it.
    """

    kind = "escalate"

    def __init__(self, pool: Pool, path: str | None = None, lam: float | None = None,
                 max_calls: int | None = None, agent: str | None = None,
                 escalator: Escalator | None = None) -> None:
        import numpy as np  # here, not at the top: `orchestra policies list` skips numpy

        from orchestra.policies.escalate.artifact import load_escalator
        from orchestra.policies.learned.policy import artifact_for_pool, parse_lam

        self.agent = pool.agent(agent).name if agent else pool.answer_agent.name
        allowed = pool.models_for(self.agent)
        #: How the artifact was found without ``path=`` (None: given by path= or escalator=).
        self.artifact: ArtifactChoice | None = None
        if escalator is None and path is None:
            self.artifact = artifact_for_pool(self.kind, allowed)
            esc = load_escalator(str(self.artifact.path))
        else:
            esc = escalator if escalator is not None else load_escalator(path)
        self.escalator = esc
        self.pool_name: dict[int, str] = {}
        for j, name in enumerate(esc.models):
            spec = next((m for m in allowed if m.name == name), None) or next(
                (m for m in allowed if m.id == name), None)
            if spec is not None:
                self.pool_name[j] = spec.name
        if not self.pool_name:
            raise UserError(
                f"the escalate artifact at {str(esc.path)!r} knows none of the models agent "
                f"{self.agent!r} may use (artifact: {esc.models}; pool: "
                f"{[m.name for m in allowed]}); train it on outcomes of this pool's models"
            )
        self.column = {n: j for j, n in self.pool_name.items()}
        self.allowed = np.zeros(len(esc.models), dtype=bool)
        self.allowed[list(self.pool_name)] = True
        self.lam = parse_lam(esc.config.get("default_lam", 0.0) if lam is None else lam)
        calls = esc.config.get("max_calls", 3) if max_calls is None else max_calls
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
            raise UserError(f"max_calls must be an integer >= 1 (got {max_calls!r})")
        self.max_calls = calls
        self.name = f"escalate(lam={self.lam:.4g})"

    def default_lambdas(self) -> list[float]:
        """λ values for a sweep: the artifact's compact grid of training operating points."""
        return [float(v) for v in self.escalator.config.get("lambdas") or [self.lam]]

    def decide(self, view: RunView) -> Action:
        esc = self.escalator
        task = view.meta.get("task") if view.meta else None
        q = esc.query(view.query, None if task is None else str(task))
        answers: list[str | None] = [None] * esc.m
        call_ids: dict[int, str] = {}
        tried = ~self.allowed.copy()
        for r in view.rounds:
            for c in r.calls:
                j = self.column.get(c.model)
                if j is None or c.agent != self.agent or c.role in ("refine", "policy"):
                    continue
                tried[j] = True
                if c.error is None:
                    answers[j] = c.output
                    call_ids[j] = c.call_id
        called = sorted(call_ids)
        left = view.budget_left
        # A call must leave a round to answer from (else the run ends on its answer anyway).
        rounds_ok = left.rounds is None or left.rounds >= (2 if called else 1)
        calls_ok = left.calls is None or left.calls >= 1
        n_tried = int(tried.sum() - (~self.allowed).sum())
        can_call = rounds_ok and calls_ok and n_tried < self.max_calls
        again = (can_call and n_tried + 1 < self.max_calls
                 and (left.rounds is None or left.rounds >= 3)
                 and (left.calls is None or left.calls >= 2))
        d = esc.decide(esc.read(q, answers), called, self.lam, usd_left=left.usd,
                       can_call=can_call, can_call_again=again, allowed=~tried)
        scores: dict[str, Any] = {"policy": self.kind, **d.details}
        if d.call is not None:
            name = self.pool_name[d.call]
            cand = d.details.get("candidates", {}).get(esc.models[d.call], {})
            return Route([Call(agent=self.agent, model=name)], scores=scores,
                         reason=f"escalate: call {name} (expected gain "
                                f"{cand.get('gain', 0.0):.3f} - {self.lam:.3g}·cost, cost "
                                f"${cand.get('cost', 0.0):.2g})")
        if d.answer < 0:
            return Answer(reason=f"escalate: no answer and no call possible "
                                 f"({d.details.get('why', '')})", scores=scores)
        return Answer(text=answers[d.answer], from_call=call_ids[d.answer], scores=scores,
                      reason=f"escalate: answer from {self.pool_name[d.answer]} "
                             f"(P(correct) {d.details['p_best']:.2f}; {d.details.get('why', '')})")


register_policy("escalate", EscalatePolicy,
                doc="answer-aware learned cascade: call, read the answers, answer or escalate "
                    "by expected gain - lam·cost (path=, lam=, max_calls=)")

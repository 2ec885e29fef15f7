"""A MasRouter-style team per query: pick a collaboration mode, give each role its own system
prompt and its own model, and say which call's answer is final.

    python examples/team_policy.py

It shows the policy interface v2 (docs/architecture.md, "Policies"):

- ``start(ctx)`` gives each run its own decider (its own state), while one policy instance serves
  every run, concurrent ones included;
- ``await ctx.complete(...)`` is the policy's own model call, reserved and charged on the run's
  budget and traced with role ``policy`` (here: asking a model which mode fits, when the question
  itself gives no cue);
- ``Call(system=..., role=...)`` gives a call a role chosen by the policy; ``Route(merge=...)``
  picks how the round is merged; ``Answer(from_call=...)`` names the call whose answer is final
  (``RunResult.answer_from``, used by graders).

Modes: ``single`` (one solver), ``debate`` (a proponent and a skeptic on different models, then a
judge who reads both) and ``reflection`` (a solver, a critic on another model, then the solver
revises). Runs on the embedded local pool: no API key, no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orchestra import (
    Answer,
    Call,
    Orchestra,
    PolicyContext,
    Pool,
    Route,
    RunView,
    register_policy,
)

MODES = ("single", "debate", "reflection")

#: The roles of each mode, in the order they speak; a list inside is one round in parallel.
ROLES: dict[str, list[list[str]]] = {
    "single": [["solver"]],
    "debate": [["proponent", "skeptic"], ["judge"]],
    "reflection": [["solver"], ["critic"], ["reviser"]],
}

SYSTEM = {
    "solver": "Answer the question with the answer only.",
    "proponent": "Give the answer you believe is right, in a few words, with one reason.",
    "skeptic": "Give the answer a careful skeptic would give, in a few words, with one reason.",
    "judge": "Two answers follow. Reply with the better final answer only.",
    "critic": "Point out the main flaw in the proposed answer in one sentence, or say 'none'.",
    "reviser": "Give the corrected final answer only.",
}

_NUMERIC = re.compile(r"\d|how many|how much|calculate|sum|total|percent", re.IGNORECASE)
_CONTESTED = re.compile(r"\b(why|better|best|should|compare|versus|vs\.?|or)\b", re.IGNORECASE)


def cue_mode(query: str) -> str | None:
    """The mode the question's wording asks for, or None when it gives no cue: arithmetic and
    counting get reflection (a second look catches slips), contested or comparative questions a
    debate."""
    if _NUMERIC.search(query):
        return "reflection"
    if _CONTESTED.search(query):
        return "debate"
    return None


class TeamPolicy:
    """Builds a team per query.

    Args:
        pool: the pool (passed by the runtime).
        ask: when the question gives no cue, ask the cheapest model which mode fits (a policy
            call on the run's budget); otherwise default to ``single``.
    """

    name = "team"

    def __init__(self, pool: Pool, ask: bool = True) -> None:
        models = pool.models_for(pool.answer_agent)
        by_prior = sorted(models, key=lambda m: -(m.quality or 0.0))
        by_price = sorted(models, key=lambda m: (m.input_price or 0) + (m.output_price or 0))
        # A model per role: the strongest prior speaks for the team; the other voice (skeptic,
        # critic) is a different model, so the team does not just agree with itself.
        strong = by_prior[0].name
        other = next((m.name for m in by_price if m.name != strong), strong)
        self.models = {"solver": strong, "proponent": strong, "judge": strong,
                       "reviser": strong, "skeptic": other, "critic": other}
        self.asker = by_price[0].name
        self.ask = ask

    def start(self, ctx: PolicyContext) -> _Team:
        return _Team(self, ctx)


@dataclass
class _Team:
    policy: TeamPolicy
    ctx: PolicyContext
    mode: str | None = None

    async def adecide(self, view: RunView) -> Route | Answer:
        if self.mode is None:  # round 0 (or a resumed run: the first decision says it)
            self.mode, scores = await self._choose_mode(view)
        else:
            scores = {"mode": self.mode}
        plan = ROLES[self.mode]
        if view.round >= len(plan):
            last = view.rounds[-1]
            final = next((c for c in last.calls if c.error is None and c.output.strip()), None)
            if final is None:
                return Answer(reason="the last role failed: best answer so far", scores=scores)
            return Answer(from_call=final.call_id, reason=f"{final.role} has the final word",
                          scores=scores)
        calls = [Call(model=self.policy.models[role], role=role, system=SYSTEM[role],
                      prompt=self._prompt(role, view)) for role in plan[view.round]]
        who = ", ".join(f"{c.role}@{c.model}" for c in calls)
        return Route(calls, merge="last", reason=f"{self.mode}: {who}", scores=scores)

    async def _choose_mode(self, view: RunView) -> tuple[str, dict[str, Any]]:
        earlier = next((d.scores.get("mode") for d in view.decisions if d.scores.get("mode")), None)
        if earlier in MODES:
            return earlier, {"mode": earlier, "by": "earlier decision"}
        cue = cue_mode(view.query)
        if cue is not None or not self.policy.ask:
            mode = cue or "single"
            return mode, {"mode": mode, "by": "cue" if cue else "default"}
        reply = await self.ctx.complete(
            f"Question: {view.query}\nShould one expert answer (single), two experts debate "
            "(debate), or an expert answer and then check the answer (reflection)? "
            "Reply with one word: single, debate or reflection.",
            model=self.policy.asker, max_tokens=8)
        said = reply.output.strip().lower()
        mode = next((m for m in MODES if m in said), "single")
        return mode, {"mode": mode, "by": f"asked {reply.model}", "reply": said[:40],
                      "ask_error": reply.error}

    def _prompt(self, role: str, view: RunView) -> str:
        q = view.query
        if role == "judge":
            answers = "\n".join(f"- {c.role}: {c.output.strip()}" for c in view.rounds[-1].calls
                                if c.error is None)
            return f"Question: {q}\nAnswers:\n{answers}\nThe better final answer:"
        if role == "critic":
            return f"Question: {q}\nProposed answer: {view.rounds[-1].answer.strip()}\nThe flaw:"
        if role == "reviser":
            first, critique = view.rounds[0].answer.strip(), view.rounds[-1].answer.strip()
            return (f"Question: {q}\nFirst answer: {first}\nCritique: {critique}\n"
                    "The corrected final answer:")
        return q


register_policy("team", TeamPolicy, doc="a MasRouter-style team per query (example)")


def main() -> None:
    orch = Orchestra("local", policy="team")
    questions = ["How many legs do three spiders have?",
                 "Which is larger, the Moon or the Earth?",
                 "Who wrote Hamlet?"]
    for question in questions:
        r = orch.run(question)
        print(f"Q: {question}")
        decided = next(s for s in r.steps if s["action"] == "route")
        sc = decided["scores"]
        print(f"   mode {sc['mode']} (by {sc['by']})")
        for s in r.steps:
            calls = ", ".join(f"{c['role']}@{c['model']}" for c in s["calls"])
            print(f"   round {s['round']} {s['action']:<11} {calls}")
        final = r.answer_call()
        source = f"{final['role']}@{final['model']}" if final else r.answer_from
        print(f"A: {r.answer!r}   from {source}; {r.calls} calls, ${r.cost_usd:.2e}")
        print()


if __name__ == "__main__":
    main()

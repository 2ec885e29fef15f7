"""Write your own routing policy, register it by name, and read its decisions in the trace.

    python examples/custom_policy.py

A policy is any object with a ``name`` and ``decide(view) -> Think | Route | Answer``. The
runtime calls ``decide`` before every round with a frozen view of the run (the query, the rounds
so far, notes, the budget left, the pool) and does what it returns:

  Route([Call(agent, model, prompt), ...])  call these in parallel, then refine (merge) them
  Think(note)                               add a note to the context of later calls
  Answer(text=None)                         stop, with the best answer so far

The runtime enforces the budget whatever the policy asks for, so a policy cannot overspend.
This one, "cheap-then-vote": ask the cheapest model; if its answer is short and confident,
accept it; otherwise think a note, then ask every model and let the pool's vote refiner decide.
Runs on the embedded local pool: no API key, no network.
"""

from __future__ import annotations

from typing import Any

from orchestra import Answer, Call, Orchestra, Pool, Route, RunView, Think, register_policy

HEDGES = ("not sure", "i think", "maybe", "possibly", "don't know", "cannot", "unclear")


class CheapThenVote:
    """Cheapest model first; escalate to a vote of every model when its answer looks unsure.

    Args:
        pool: the pool it routes over (passed by the runtime when it builds the policy).
        max_words: answers longer than this count as unsure (a tiny model that rambles is
            usually a tiny model that does not know).
    """

    name = "cheap-then-vote"

    def __init__(self, pool: Pool, max_words: int = 4) -> None:
        models = pool.models_for(pool.answer_agent)
        self.models = sorted(models, key=lambda m: (m.input_price or 0) + (m.output_price or 0))
        self.max_words = max_words

    def decide(self, view: RunView) -> Think | Route | Answer:
        if view.round == 0:  # nothing asked yet
            cheap = self.models[0].name
            return Route([Call(model=cheap)], reason=f"try the cheapest model ({cheap}) first")
        first = view.rounds[0].answer
        # Scores go into the trace next to the decision: why the policy did what it did.
        scores: dict[str, Any] = {"words": len(first.split()), "max_words": self.max_words,
                                  "hedged": any(h in first.lower() for h in HEDGES)}
        if view.round == 1 and scores["words"] <= self.max_words and not scores["hedged"]:
            return Answer(reason="short and confident: accept it", scores=scores)
        if view.round == 1 and not view.notes:
            # A Think costs no call; its note is shown to every later call.
            return Think(note=f"A first attempt answered {first!r}, which may be wrong. "
                              "Reply with the answer only.",
                         reason="long or hedged answer: distrust it", scores=scores)
        if view.round == 1:
            return Route([Call(model=m.name) for m in self.models],
                         reason="ask every model, the refiner votes", scores=scores)
        return Answer(reason="the vote decided")  # the refined answer of the last round


# Registering gives the policy a name that Orchestra(..., policy=...), policy recipes
# (policies/*.yaml) and the CLI (`orchestra run --policy cheap-then-vote`) all understand.
# The factory gets the pool and any policy_params.
register_policy("cheap-then-vote", CheapThenVote, doc="cheapest first; vote when it looks unsure")


def main() -> None:
    orch = Orchestra("local", policy="cheap-then-vote", policy_params={"max_words": 3})
    for question in ["What is the capital of France?", "Who wrote Romeo and Juliet?"]:
        result = orch.run(question)
        print(f"Q: {question}")
        print(f"A: {result.answer}   ({result.calls} calls, ${result.cost_usd:.2e}, "
              f"{result.stop_reason})")
        # The decisions, read back from the trace store (SQLite) where the run was recorded.
        assert orch.store is not None
        for ev in orch.store.events(result.trace_id):
            if ev["kind"] == "policy_decided":
                calls = [c["model"] for c in ev["calls"]]
                print(f"   round {ev['round']} {ev['action']:<6} {ev['reason']}"
                      + (f"  calls={calls}" if calls else "")
                      + (f"  scores={ev['scores']}" if ev["scores"] else ""))
                if ev["note"]:
                    print(f"          note: {ev['note']}")
            elif ev["kind"] == "refined" and ev["votes"]:
                print(f"   round {ev['round']} votes  {ev['votes']} -> {ev['output']!r}")
        print()


if __name__ == "__main__":
    main()

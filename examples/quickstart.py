"""Quickstart: answer a question with the embedded local pool. No API key, no network.

    python examples/quickstart.py

The "local" pool (agents/local.yaml) holds two tiny models that run in this process through
llama.cpp: SmolLM2-135M (a chat model) and Gemma-3-270M (a base model prompted with examples).
They are weak, but real: every call below is an actual generation, priced and charged to a
budget like a hosted model would be. Their prices are nominal (a few millionths of a dollar),
so that budgets mean something offline.

What this shows, top to bottom:
  1. Orchestra("local").run(question): the answer, what it cost, and every step of the run.
  2. The same question under another policy (cascade) and a hard budget.
  3. astream(): the run's trace events, printed live as they happen.
"""

from __future__ import annotations

import asyncio

from orchestra import Budget, Orchestra, RunResult

QUESTION = "What is the capital of France?"


def usd(x: float) -> str:
    # Local prices are nominal and tiny; scientific notation keeps them readable.
    return f"${x:.2e}"


def show(result: RunResult) -> None:
    """Print a run's answer, totals and steps."""
    print(f"  answer      : {result.answer}")
    print(f"  stop reason : {result.stop_reason}")
    print(f"  cost        : {usd(result.cost_usd)}  ({result.calls} calls, {result.rounds} rounds, "
          f"{result.input_tokens}+{result.output_tokens} tokens, {result.duration_s:.1f}s)")
    print("  steps:")
    # One step per policy decision. A "route" step lists the calls it sent (in parallel);
    # an "answer" step ends the run; "think" adds a note without calling a model.
    for step in result.steps:
        print(f"    round {step['round']}  {step['action']:<6}  {step['reason']}")
        for c in step["calls"]:
            print(f"        {c['agent'] + '@' + c['model']:<22} tokens {c['input_tokens']:>3} in "
                  f"/ {c['output_tokens']:>2} out   {usd(c['cost_usd'])}   {c['latency_s']:.2f}s"
                  + (f"   ERROR {c['error']}" if c["error"] else ""))
    # Every run is stored (SQLite under $ORCHESTRA_HOME or your user data dir), so you can
    # look at it again later: `orchestra traces show <id>` or the trace viewer.
    print(f"  trace id    : {result.trace_id}   (orchestra traces show {result.trace_id[:8]})")


def main() -> None:
    # 1. The pool's defaults: its policy ("ensemble": both models in parallel, then a vote
    #    merges their answers) and its budget. The first call loads the models (a few seconds).
    orch = Orchestra("local")
    print(f"1. Orchestra('local'), policy {orch.policy.name}, budget {orch.budget.usd} USD")
    result = orch.run(QUESTION)
    show(result)

    # 2. Cascade (FrugalGPT-style): ask the cheapest model, let a verifier agent judge the
    #    answer, and escalate to the next model only while the verifier is unsure. Budget
    #    limits are hard: a call whose worst-case cost does not fit is never sent.
    #    Two models = answer, verify, answer, verify: 4 rounds, and a 5th to read the last verdict.
    budget = Budget(usd=0.00002, calls=5, rounds=5)
    cascade = Orchestra("local", policy="cascade", budget=budget)
    print(f"\n2. policy cascade, budget {budget.usd} USD / {budget.calls} calls / "
          f"{budget.rounds} rounds")
    show(cascade.run(QUESTION))

    # 3. Streaming: astream() yields typed trace events (run_started, policy_decided,
    #    call_started, call_finished, refined, run_finished) while the run goes on. The CLI,
    #    the trace store and the viewer all consume this same stream.
    print("\n3. astream(), events as they happen (policy cheapest)")
    asyncio.run(stream(Orchestra("local", policy="cheapest")))


async def stream(orch: Orchestra) -> None:
    async for ev in orch.astream("Name a primary color."):
        if ev.kind == "policy_decided":
            print(f"  [{ev.seq}] {ev.kind:<15} {ev.action}: {ev.reason}")
        elif ev.kind == "call_started":
            print(f"  [{ev.seq}] {ev.kind:<15} {ev.agent}@{ev.model}, reserved "
                  f"{usd(ev.reserved_usd)} for at most {ev.max_tokens} tokens")
        elif ev.kind == "call_finished":
            print(f"  [{ev.seq}] {ev.kind:<15} {ev.model} said {ev.output!r} "
                  f"({usd(ev.cost_usd)}, {ev.latency_s:.2f}s)")
        elif ev.kind == "refined":
            print(f"  [{ev.seq}] {ev.kind:<15} refiner {ev.refiner!r} -> {ev.output!r}")
        elif ev.kind == "run_finished":
            print(f"  [{ev.seq}] {ev.kind:<15} {ev.stop_reason}: {ev.answer!r}, "
                  f"{usd(ev.cost_usd)} in {ev.calls} call(s)")
        else:
            print(f"  [{ev.seq}] {ev.kind}")


if __name__ == "__main__":
    main()

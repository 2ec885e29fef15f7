"""A pool of your own, in YAML, compared under two policies. No API key, no network.

    python examples/yaml_pool.py

examples/pools/trivia.yaml defines the pool: the two embedded local models with this pool's own
prices and descriptions, a trivia agent with few-shot examples, a vote refiner, and a default
policy and budget. We load it by path, then answer the same questions with

  - "cheapest": one call to the cheapest model (the pool's default policy), and
  - "ensemble": both models in parallel, their answers merged by the vote refiner,

and print a small table: what each policy answered and what it cost.
"""

from __future__ import annotations

from pathlib import Path

from orchestra import Orchestra, Pool

# Resolve the file next to this script, so the example runs from any working directory.
POOL_FILE = Path(__file__).resolve().parent / "pools" / "trivia.yaml"
QUESTIONS = [
    "What is the capital of Japan?",
    "Who wrote Romeo and Juliet?",
    "How many sides does a triangle have?",
]
POLICIES = ["cheapest", "ensemble"]


def main() -> None:
    # Pool.load validates the whole file up front (a bad field raises UserError naming it).
    pool = Pool.load(POOL_FILE)
    print(f"pool {pool.name!r} from {POOL_FILE.name}: {pool.description}")
    for m in pool.models:
        print(f"  model {m.name:<6} {m.id:<28} ${m.input_price}/${m.output_price} per 1M "
              f"tokens in/out, quality {m.quality}")
    for a in pool.agents:
        print(f"  agent {a.name} ({len(a.examples)} few-shot examples): {a.description}")
    print(f"  refiner {pool.refiner.kind}, default policy {pool.policy!r}, default budget "
          f"{pool.budget.model_dump(exclude_none=True)}")

    # One Orchestra per policy over the same pool: the pool's default budget applies to both,
    # so the comparison is fair. A path works as well as a Pool: Orchestra(POOL_FILE, ...).
    runners = {p: Orchestra(pool, policy=p) for p in POLICIES}
    results = {q: {p: orch.run(q) for p, orch in runners.items()} for q in QUESTIONS}

    # The table: answer, cost (nominal micro-dollars) and calls per policy.
    def cells(answer: str, cost: str, calls: object) -> str:
        short = answer if len(answer) <= 28 else answer[:27] + "…"
        return f"| {short:<28}{cost:>7}{calls:>6} "

    def row(first: str, rest: list[str]) -> str:
        return (f"{first:<38}" + "".join(rest)).rstrip()

    print()
    header = row("question", [cells(f"{p} answer", "µ$", "calls") for p in POLICIES])
    print(header)
    print("-" * len(header))
    for q, by_policy in results.items():
        print(row(q, [cells(r.answer or "-", f"{r.cost_usd * 1e6:.3f}", r.calls)
                      for r in by_policy.values()]))
    print("-" * len(header))
    totals = {p: sum(results[q][p].cost_usd for q in QUESTIONS) for p in POLICIES}
    print(row("total", [cells("", f"{totals[p] * 1e6:.3f}", "") for p in POLICIES]))
    # Where the two models disagree, the vote's tie goes to the higher quality prior ("big").
    print(f"\nensemble cost {totals['ensemble'] / totals['cheapest']:.1f}x what cheapest cost: "
          "it pays for both models on every question;\nin exchange the stronger model's answer "
          "wins where the two disagree.")


if __name__ == "__main__":
    main()

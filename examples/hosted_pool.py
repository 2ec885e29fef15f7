"""A pool of hosted models (OpenAI + Anthropic), defined in Python, routed by a cascade.

    export OPENAI_API_KEY=sk-...  ANTHROPIC_API_KEY=sk-ant-...
    python examples/hosted_pool.py

Without the keys (as in CI) it still runs: it prints the prices, shows the UserError orchestra
raises for the missing keys *before any model is called*, explains how to run it for real, and
exits 0. With the keys it answers one question for well under a cent.
"""

from __future__ import annotations

import sys

from orchestra import AgentSpec, Budget, ModelSpec, Orchestra, Pool, RefinerSpec, UserError
from orchestra.backends.priced import priced_pool

# Models are litellm ids. Leaving input_price/output_price unset takes them from litellm's
# cost map (bundled with litellm, read offline); set them to override, e.g. for a discount.
# quality is a prior in [0, 1] that simple policies may use; the cascade orders by price.
MODELS = [
    ModelSpec(name="gpt-4.1-mini", id="openai/gpt-4.1-mini", max_output_tokens=256,
              context_window=1_000_000, description="Cheap, fast, good at everyday questions.",
              quality=0.75),
    ModelSpec(name="claude-haiku", id="anthropic/claude-haiku-4-5", max_output_tokens=256,
              context_window=200_000, description="Fast and cheap, careful writing.",
              quality=0.8),
    ModelSpec(name="claude-sonnet", id="anthropic/claude-sonnet-4-5", max_output_tokens=512,
              context_window=200_000, description="Strong at reasoning, code and synthesis.",
              quality=0.92),
]
AGENTS = [
    AgentSpec(name="assistant", description="Answers the question.",
              system_prompt="You are a precise assistant. Answer in one short sentence. "
                            "Today is {date}."),
    # The cascade needs a verify-role agent: it judges each answer SURE/UNSURE, and the policy
    # escalates to the next pricier model while it is unsure. The cheapest model judges.
    AgentSpec(name="verifier", role="verify", models=("gpt-4.1-mini",),
              system_prompt="You are a strict grader. Reply SURE if the proposed answer is "
                            "correct and complete, otherwise UNSURE."),
]
# A cascade over 3 models takes up to 7 rounds: answer + verify per model, then one to read the
# last verdict. The budget caps the whole run at one cent, whatever the policy decides. A cascade
# sends one call per round, so there is nothing to merge: the "last" refiner passes it through
# (the default, "llm", would need a refine-role agent).
POOL = Pool(name="hosted-demo", models=tuple(MODELS), agents=tuple(AGENTS),
            refiner=RefinerSpec(kind="last"), policy="cascade", budget=Budget(usd=0.01, rounds=7))


def main() -> int:
    # priced() fills the prices from litellm's cost map (a UserError if litellm does not know
    # a model and you gave no price). USD per 1M tokens:
    print(f"pool {POOL.name!r}, prices from litellm's cost map (USD per 1M tokens):")
    for m in priced_pool(POOL).models:
        print(f"  {m.name:<14} {m.id:<30} input ${m.input_price:>6.2f}   "
              f"output ${m.output_price:>6.2f}")

    # Orchestra checks, before any call, that every hosted model's API key is set.
    try:
        orch = Orchestra(POOL)  # the pool's defaults: policy cascade, budget $0.01
    except UserError as e:
        print(f"\nUserError: {e}")
        print(
            "\nThis is the expected outcome without API keys: the configuration is checked\n"
            "before anything is sent, so nothing was called and nothing was spent.\n"
            "To run this example for real:\n"
            "  export OPENAI_API_KEY=sk-...        # https://platform.openai.com/api-keys\n"
            "  export ANTHROPIC_API_KEY=sk-ant-... # https://console.anthropic.com/\n"
            "  python examples/hosted_pool.py\n"
            "To try orchestra with no key at all, use the embedded pool: "
            "python examples/quickstart.py"
        )
        return 0

    result = orch.run("What is the boiling point of water at sea level, in Celsius?")
    print(f"\nanswer: {result.answer}")
    print(f"cost ${result.cost_usd:.6f} of ${orch.budget.usd}, {result.calls} calls, "
          f"stop reason {result.stop_reason}, trace {result.trace_id}")
    for step in result.steps:
        calls = ", ".join(f"{c['agent']}@{c['model']} ${c['cost_usd']:.6f}" for c in step["calls"])
        print(f"  round {step['round']} {step['action']:<6} {step['reason']}  {calls}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

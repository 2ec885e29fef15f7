"""The context-window check uses the backend's token estimate, not the byte bound.

A byte bound over-counts English about 4×: a 1,260-word prompt (~7,900 bytes) was refused on a
4,096-token model although it is ~1,700 tokens. The budget still reserves the bound. The model
is served over loopback HTTP by :class:`~orchestra.testing_server.FakeOpenAIServer` (real litellm).
"""

from __future__ import annotations

from pathlib import Path

from orchestra import Orchestra
from orchestra.backends.base import utf8_token_bound
from orchestra.backends.litellm_client import LiteLLMBackend
from orchestra.spec import Pool
from orchestra.testing_server import FakeOpenAIServer

WORDS = ["the", "committee", "reviewed", "several", "proposals", "about", "regional", "transport", "funding", "and", "asked", "each", "applicant", "to", "explain", "expected", "costs", "benefits", "and", "timelines"]


def prompt(n_words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n_words)) + ". Summarise this."


def test_a_prompt_that_fits_the_window_is_sent_and_one_that_does_not_is_refused(
        tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        f = tmp_path / "fake.yaml"
        f.write_text(server.pool_yaml(["a"], policy="single:a"))
        pool = Pool.load(str(f))
        backend = LiteLLMBackend(backoff_s=0.0)
        long = prompt(1_260)
        messages = [{"role": "user", "content": long}]
        model = pool.model("a")
        assert utf8_token_bound(messages) > model.context_window  # what used to refuse it
        estimate = backend.prompt_tokens_estimate(model, messages)
        assert 1_260 <= estimate < 2_600

        orch = Orchestra(pool, backend=backend, store=False)
        r = orch.run(long)
        assert r.stop_reason == "answered" and r.answer and len(server.requests) == 1
        # The reservation still covers the bound: the cautious worst case is kept for money.
        started = next(e for e in r.events if e.kind == "call_started")
        sent = [{"role": "system", "content": "Answer briefly."}, *messages]
        assert started.reserved_usd >= utf8_token_bound(sent) * 1.0 / 1e6  # input $1 per M

        r = orch.run(prompt(4_000))  # ~5,300 tokens: does not fit 4,096
        assert r.stop_reason == "budget:context" and len(server.requests) == 1

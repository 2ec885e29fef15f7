"""Public test doubles: real backends that answer from Python instead of a provider.

They count tokens with a simple whitespace tokenizer and report the same counts as usage, so
budgets, costs and traces behave exactly as with a real model. Use them in your own tests::

    backend = FunctionBackend(lambda req: "Paris")
    Orchestra(pool, backend=backend).run("What is the capital of France?")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestra.backends.base import Completion, CompletionRequest
from orchestra.backends.words import count_tokens, prompt_tokens
from orchestra.errors import BackendError
from orchestra.spec import AgentSpec, Budget, ModelSpec, Pool, RefinerSpec

__all__ = [
    "CallRecord",
    "FunctionBackend",
    "ScriptedBackend",
    "count_tokens",
    "last_user_message",
    "make_pool",
    "prompt_tokens",
]


_prompt_tokens = prompt_tokens


def last_user_message(request: CompletionRequest) -> str:
    """The content of the last user message of a request."""
    for m in reversed(request.messages):
        if m.get("role") == "user":
            return str(m.get("content") or "")
    return ""


@dataclass(frozen=True)
class CallRecord:
    """A call a test backend received."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int


Reply = str | Completion | BaseException


@dataclass
class FunctionBackend:
    """A backend whose replies come from ``fn(request)`` (sync or async).

    Args:
        fn: returns the output text, a full :class:`Completion`, or raises / returns an
            exception to simulate a provider failure.
        latency_s: seconds each call takes (``asyncio.sleep``), or a function of the request.
        truncate: cut outputs to ``max_tokens`` words, as a provider would.

    Attributes:
        calls: every request received, in order (thread-safe).
    """

    fn: Callable[[CompletionRequest], Reply | Awaitable[Reply]]
    latency_s: float | Callable[[CompletionRequest], float] = 0.0
    truncate: bool = True
    calls: list[CallRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def prompt_tokens_bound(self, model: ModelSpec, messages: list[dict[str, Any]]) -> int:
        return _prompt_tokens(messages)

    def cost_bound(self, model: ModelSpec, messages: list[dict[str, Any]], max_tokens: int,
                   meta: dict[str, Any]) -> float | None:
        return None

    async def complete(self, request: CompletionRequest) -> Completion:
        with self._lock:
            self.calls.append(CallRecord(request.model.name, request.messages, request.max_tokens))
        delay = self.latency_s(request) if callable(self.latency_s) else self.latency_s
        if delay:
            await asyncio.sleep(delay)
        out = self.fn(request)
        if asyncio.iscoroutine(out) or isinstance(out, Awaitable):
            out = await out  # type: ignore[misc]
        if isinstance(out, BaseException):
            if isinstance(out, BackendError):
                raise out
            raise BackendError(
                f"{request.model.name} failed: {type(out).__name__}: {out}", model=request.model.id
            ) from out
        if isinstance(out, Completion):
            return out
        text = str(out)
        words = text.split()
        if self.truncate and len(words) > request.max_tokens:
            text = " ".join(words[: request.max_tokens])
        return Completion(
            text=text,
            input_tokens=_prompt_tokens(request.messages),
            output_tokens=min(count_tokens(text), request.max_tokens),
            finish_reason="stop",
        )

    def calls_to(self, model: str) -> list[CallRecord]:
        """The calls a model received."""
        return [c for c in self.calls if c.model == model]


class ScriptedBackend(FunctionBackend):
    """Replies from a script: per model name, a fixed reply or a sequence consumed in order.

    A model missing from the script, or whose sequence ran out, fails with a clear error.
    """

    def __init__(self, script: Mapping[str, Reply | Sequence[Reply]], *,
                 latency_s: float | Mapping[str, float] = 0.0) -> None:
        self._script: dict[str, Any] = {
            k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in script.items()
        }
        self._pos: dict[str, int] = {}
        lat = latency_s

        def latency(req: CompletionRequest) -> float:
            if isinstance(lat, Mapping):
                return float(lat.get(req.model.name, 0.0))
            return float(lat)

        super().__init__(fn=self._reply, latency_s=latency)

    def _reply(self, req: CompletionRequest) -> Reply:
        name = req.model.name
        if name not in self._script:
            raise AssertionError(f"ScriptedBackend has no reply for model {name!r}")
        entry = self._script[name]
        if not isinstance(entry, list):
            return entry  # type: ignore[no-any-return]
        with self._lock:
            i = self._pos.get(name, 0)
            self._pos[name] = i + 1
        if i >= len(entry):
            raise AssertionError(f"ScriptedBackend ran out of replies for model {name!r}")
        return entry[i]  # type: ignore[no-any-return]


def make_pool(
    prices: Sequence[tuple[float, float]] = ((0.1, 0.2), (1.0, 2.0), (10.0, 30.0)),
    *,
    names: Sequence[str] | None = None,
    max_output_tokens: int = 64,
    refiner: str = "vote",
    budget: Budget | None = None,
    policy: str = "cheapest",
    qualities: Sequence[float] | None = None,
    provider: str = "test",
) -> Pool:
    """A pool of ``<provider>/…`` models (``test/…`` by default) with the given (input, output)
    prices per 1M tokens.

    It has an ``assistant`` answer agent on every model, a ``verifier`` and a ``refiner``.
    """
    names = list(names or [f"m{i}" for i in range(len(prices))])
    models = tuple(
        ModelSpec(
            name=n, id=f"{provider}/{n}", input_price=p[0], output_price=p[1],
            max_output_tokens=max_output_tokens, context_window=4096,
            description=f"test model {n}",
            quality=(qualities[i] if qualities is not None else None),
        )
        for i, (n, p) in enumerate(zip(names, prices, strict=True))
    )
    agents = (
        AgentSpec(name="assistant", description="answers questions"),
        AgentSpec(name="verifier", role="verify",
                  system_prompt="Judge whether the answer is correct. Reply SURE or UNSURE."),
        AgentSpec(name="refiner", role="refine",
                  system_prompt="Merge the answers into one; note conflicts."),
    )
    return Pool(
        name="test", models=models, agents=agents, refiner=RefinerSpec(kind=refiner),  # type: ignore[arg-type]
        budget=budget or Budget(usd=1.0, rounds=4), policy=policy,
    )

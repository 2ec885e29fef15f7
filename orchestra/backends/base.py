"""The backend interface: how the runtime calls a model.

The runtime never talks to a provider directly: it hands a :class:`CompletionRequest` to a
:class:`Backend`. :class:`~orchestra.backends.litellm_client.LiteLLMBackend` is the real one (every
provider litellm knows, the embedded local models and replayed outcomes included); the test doubles
in :mod:`orchestra.testing` are others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from orchestra.spec import ModelSpec

__all__ = ["Backend", "Completion", "CompletionRequest", "context_tokens", "utf8_token_bound"]


@dataclass(frozen=True)
class CompletionRequest:
    """One call: a model, chat messages and limits.

    Attributes:
        model: the model's spec (id, prices, mode).
        messages: OpenAI-style chat messages.
        max_tokens: the most output tokens the provider may produce (the budget reserved this).
        timeout_s: give up after this many seconds.
        tools: OpenAI-format tool schemas, if the agent has tools.
        stop: stop sequences.
        meta: run metadata (``query_id`` ...) some backends use (replay).
    """

    model: ModelSpec
    messages: list[dict[str, Any]]
    max_tokens: int
    timeout_s: float = 120.0
    tools: list[dict[str, Any]] | None = None
    stop: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """A model's reply.

    Attributes:
        text: the output text ("" when the model only called tools).
        input_tokens / output_tokens: usage as the provider reported it.
        cost_usd: the provider's cost when it knows it better than usage × price (replay);
            ``None`` → computed from the model's prices.
        tool_calls: ``[{"id", "name", "arguments"}]`` when the model called tools.
        finish_reason: the provider's finish reason.
        usage_trusted: False when the provider's usage could not be trusted (missing, negative):
            the runtime then charges at least the call's whole reservation.
        usage_note: what was wrong with the reported usage, for the trace.
    """

    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage_trusted: bool = True
    usage_note: str | None = None


@runtime_checkable
class Backend(Protocol):
    """Calls models. Implementations must be safe to call concurrently.

    A backend may also define ``prompt_tokens_estimate(model, messages) -> int``: its best
    estimate of the prompt's tokens, used only to decide whether a prompt fits the model's
    context window (:func:`context_tokens`); without it the bound is used for that too. The
    bound stays what the budget reserves.
    """

    async def complete(self, request: CompletionRequest) -> Completion:
        """Run one call; raise :class:`~orchestra.errors.BackendError` on failure."""
        ...

    def prompt_tokens_bound(self, model: ModelSpec, messages: list[dict[str, Any]]) -> int:
        """An upper bound on the prompt tokens ``messages`` will be billed as."""
        ...

    def cost_bound(self, model: ModelSpec, messages: list[dict[str, Any]], max_tokens: int,
                   meta: dict[str, Any]) -> float | None:
        """An exact or tighter worst-case USD for this call, when the backend knows one
        (replayed outcomes); None → prompt bound × input price + max_tokens × output price."""
        ...


# Chat templates wrap each message in a few special tokens; 8 per message and 16 per prompt is
# more than any template in litellm's list uses.
_PER_MESSAGE = 8
_PER_PROMPT = 16


def utf8_token_bound(messages: list[dict[str, Any]]) -> int:
    """A provable upper bound on prompt tokens for byte-level BPE tokenizers.

    Every token of a byte-level BPE vocabulary (GPT, Claude, Llama 3, Mistral, Qwen...) covers at
    least one byte, so a text never has more tokens than UTF-8 bytes; chat-template tokens are
    bounded per message. It over-estimates by ~4× on English, which makes reservations cautious,
    never wrong. Backends that know the exact tokenizer (local, replay) give exact counts instead.
    """
    n = _PER_PROMPT
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, list):  # multi-part content
            content = " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
        n += len(str(content).encode("utf-8")) + _PER_MESSAGE
        if m.get("tool_calls"):
            n += len(str(m["tool_calls"]).encode("utf-8"))
    return n


def context_tokens(backend: Backend, model: ModelSpec, messages: list[dict[str, Any]],
                   bound: int) -> int:
    """The prompt tokens to check against ``model``'s context window: the backend's estimate
    when it has one (never above ``bound``), else ``bound``.

    A byte bound over-counts English about 4×, so checking the window with it refused prompts
    that fit (1,260 words on a 4,096-token model). An estimate that falls short costs nothing:
    the provider refuses the over-long prompt before generating, unbilled.
    """
    estimate = getattr(backend, "prompt_tokens_estimate", None)  # optional, see Backend
    if estimate is None:
        return bound
    return min(bound, int(estimate(model, messages)))

"""The real backend: every call goes through ``litellm.acompletion``.

- Retries with exponential backoff on errors that are not billed (rate limits, connection errors,
  5xx before generation). A timeout is not retried: the provider may have billed it, so the
  runtime keeps the whole reservation as spent (see :class:`~orchestra.budget.Ledger`). So is any
  failure that is not a provider's refusal with a 4xx/5xx status (a reply litellm could not read).
- Never trusts a reply's usage blindly (:func:`read_usage`): usage that is missing, negative or
  not a count is *untrusted* (the runtime then charges at least the reservation); where the
  provider's tokenizer is known exactly (an in-process provider's ``billed_tokens`` hook), counts
  below the real ones are raised to them. A reply without a usable answer (no choices, no message, non-text content) is a
  :class:`~orchestra.errors.BackendError` that carries the usage billed for it.
- Every provider exception is wrapped once, here, into :class:`~orchestra.errors.BackendError`
  naming the model and the cause.
- In-process providers (``local/…`` embedded models, ``replay/…`` recorded outcomes) register
  :class:`ProviderHooks` that give exact prompt token counts and cost bounds.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestra.backends.base import Completion, CompletionRequest, utf8_token_bound
from orchestra.backends.pricing import import_litellm
from orchestra.errors import BackendError
from orchestra.spec import ModelSpec

__all__ = ["LiteLLMBackend", "ProviderHooks", "read_usage", "register_provider_hooks"]


@dataclass(frozen=True)
class ProviderHooks:
    """What an in-process provider tells the budget about its calls.

    Attributes:
        setup: registers the provider with litellm (idempotent), called before the first call.
        prompt_tokens: exact prompt token count for (model id without prefix, messages).
        cost_bound: exact worst-case USD for (model id, messages, max_tokens, meta), or None.
        billed_tokens: the exact (input, output) tokens a reply is billed, for (model id,
            messages, output text), when the provider's tokenizer is known exactly; a reply
            whose usage reports fewer is charged these counts.
    """

    setup: Callable[[], None]
    prompt_tokens: Callable[[str, list[dict[str, Any]]], int] | None = None
    cost_bound: Callable[[str, list[dict[str, Any]], int, dict[str, Any]], float | None] | None = None
    billed_tokens: Callable[[str, list[dict[str, Any]], str], tuple[int, int]] | None = None


_HOOKS: dict[str, ProviderHooks] = {}
_HOOK_LOADERS: dict[str, Callable[[], ProviderHooks]] = {}


def register_provider_hooks(provider: str, loader: Callable[[], ProviderHooks]) -> None:
    """Register (lazily) the hooks of an in-process litellm provider."""
    _HOOK_LOADERS[provider] = loader
    _HOOKS.pop(provider, None)


def _hooks(provider: str) -> ProviderHooks | None:
    if provider not in _HOOKS and provider in _HOOK_LOADERS:
        _HOOKS[provider] = _HOOK_LOADERS[provider]()
    return _HOOKS.get(provider)


def _local_hooks() -> ProviderHooks:
    from orchestra.backends import local

    return ProviderHooks(setup=local.register_local_provider, prompt_tokens=local.count_prompt_tokens)


register_provider_hooks("local", _local_hooks)

#: How long past its own timeout a litellm call may take before it is abandoned (a provider
#: that ignores ``timeout`` must not hold a run past its seconds limit).
_GRACE_S = 1.0

#: Chat-template tokens per message (and once per prompt) in the context-window estimate.
_TEMPLATE_TOKENS = 8


@functools.cache
def _cl100k() -> Any:
    """litellm's bundled ``cl100k_base`` encoding (no download), or None if it cannot load."""
    import_litellm()
    try:
        from litellm.litellm_core_utils.default_encoding import encoding
    except Exception:  # noqa: BLE001 - the byte bound is then used instead
        return None
    return encoding


_TRANSIENT_NAMES = (
    "RateLimitError", "APIConnectionError", "ServiceUnavailableError", "InternalServerError",
)
#: Failures of a reply that arrived (a 200 litellm could not validate): possibly billed.
_READ_FAILURE_NAMES = ("APIResponseValidationError", "JSONSchemaValidationError")


def _billed_unknown(e: BaseException, name: str) -> bool:
    """Whether a failed call may have been billed: a timeout, or anything that is not a
    provider's refusal with an HTTP error status (4xx/5xx, request timeout 408 excepted)."""
    if name in ("Timeout", "TimeoutError") or isinstance(e, asyncio.TimeoutError):
        return True
    if name in _TRANSIENT_NAMES:
        return False
    if name in _READ_FAILURE_NAMES:
        return True
    status = getattr(e, "status_code", None)
    return not (isinstance(status, int) and 400 <= status <= 599 and status != 408)


class LiteLLMBackend:
    """Calls models through litellm.

    Args:
        max_retries: attempts after the first for transient, unbilled errors.
        backoff_s: first backoff; doubles each retry, with jitter.
    """

    def __init__(self, *, max_retries: int = 3, backoff_s: float = 0.5) -> None:
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._ready: set[str] = set()

    def _prepare(self, model: ModelSpec) -> Any:
        litellm = import_litellm()
        hooks = _hooks(model.provider)
        if hooks is not None and model.provider not in self._ready:
            hooks.setup()
            self._ready.add(model.provider)
        return litellm

    def prompt_tokens_bound(self, model: ModelSpec, messages: list[dict[str, Any]]) -> int:
        hooks = _hooks(model.provider)
        if hooks is not None and hooks.prompt_tokens is not None:
            return hooks.prompt_tokens(model.id.split("/", 1)[1], messages)
        return utf8_token_bound(messages)

    def prompt_tokens_estimate(self, model: ModelSpec, messages: list[dict[str, Any]]) -> int:
        """Exact where the provider's hooks count tokens (local, replay); otherwise the
        ``cl100k_base`` count (litellm bundles it: offline) plus 15% for other tokenizers and
        the chat template's tokens. Used to check the context window, never to reserve."""
        hooks = _hooks(model.provider)
        if hooks is not None and hooks.prompt_tokens is not None:
            return hooks.prompt_tokens(model.id.split("/", 1)[1], messages)
        encoding = _cl100k()
        if encoding is None:
            return utf8_token_bound(messages)
        n = 0
        for m in messages:
            content = m.get("content") or ""
            if isinstance(content, list):  # multi-part content
                content = " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p)
                                   for p in content)
            n += len(encoding.encode(str(content), disallowed_special=()))
            if m.get("tool_calls"):
                n += len(encoding.encode(str(m["tool_calls"]), disallowed_special=()))
        return math.ceil(n * 1.15) + _TEMPLATE_TOKENS * (len(messages) + 1)

    def cost_bound(self, model: ModelSpec, messages: list[dict[str, Any]], max_tokens: int,
                   meta: dict[str, Any]) -> float | None:
        hooks = _hooks(model.provider)
        if hooks is not None and hooks.cost_bound is not None:
            return hooks.cost_bound(model.id.split("/", 1)[1], messages, max_tokens, meta)
        return None

    async def complete(self, request: CompletionRequest) -> Completion:
        model = request.model
        litellm = self._prepare(model)
        kwargs: dict[str, Any] = {
            "model": model.id,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "timeout": request.timeout_s,
            "num_retries": 0,
            **model.params,
        }
        if request.stop:
            kwargs["stop"] = request.stop
        if request.tools:
            kwargs["tools"] = request.tools
            # Our tools are plain functions run by the runtime, never MCP-gateway tools; without
            # this flag litellm imports its MCP handler (an extra package) for any call with tools.
            kwargs["_skip_mcp_handler"] = True
        if model.api_base:
            kwargs["api_base"] = model.api_base
        if model.api_key_env:
            kwargs["api_key"] = os.environ.get(model.api_key_env)
        if request.meta and model.provider in _HOOK_LOADERS:
            kwargs["metadata"] = dict(request.meta)
        # request.timeout_s bounds the whole call, retries and backoff included: it is what is
        # left of the run's seconds limit (or the model's own timeout).
        deadline = time.monotonic() + request.timeout_s
        attempt = 0
        while True:
            try:
                kwargs["timeout"] = max(0.001, deadline - time.monotonic())
                resp = await asyncio.wait_for(litellm.acompletion(**kwargs),
                                              kwargs["timeout"] + _GRACE_S)
            except Exception as e:  # every provider error is wrapped exactly once, here
                name = type(e).__name__
                transient = name in _TRANSIENT_NAMES
                delay = self.backoff_s * (2**attempt) * (0.5 + random.random())
                out_of_time = time.monotonic() + delay >= deadline
                if transient and attempt < self.max_retries and not out_of_time:
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                timed_out = name in ("Timeout", "TimeoutError") or isinstance(e, asyncio.TimeoutError)
                msg = str(e).strip().splitlines()[0] if str(e).strip() else name
                if transient and out_of_time and not timed_out:
                    msg += f"; no time left to retry within {request.timeout_s:.3g} s"
                raise BackendError(
                    f"{model.name} ({model.id}) failed: {name}: {msg[:300]}"
                    + (f" (after {attempt} retries)" if attempt else ""),
                    model=model.id,
                    transient=transient or timed_out,
                    # The runtime then charges the reservation.
                    billed_unknown=_billed_unknown(e, name),
                ) from e
            return _to_completion(resp, request, _hooks(model.provider))


def read_usage(resp: Any, request: CompletionRequest, hooks: ProviderHooks | None,
               text: str) -> tuple[int, int, bool, str | None]:
    """What a reply should be charged, in tokens, never trusting its usage blindly.

    Returns:
        ``(input_tokens, output_tokens, trusted, note)``: ``trusted`` is False when the usage is
        missing, negative, not an integer count, or claims a zero-token prompt (what litellm
        reports when a provider sent none) or zero tokens for a non-empty text; the runtime then
        charges at least the reservation. Where the provider's tokenizer is known exactly
        (``hooks.billed_tokens``), counts below the real ones are raised to them (``note`` says
        so).
    """
    usage = getattr(resp, "usage", None)
    raw = (getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None))
    counts = [v if isinstance(v, int) and not isinstance(v, bool) else None for v in raw]
    notes: list[str] = []
    if usage is None or None in counts:
        notes.append("no usage reported" if usage is None else f"usage not a count {raw!r}")
    elif min(c for c in counts if c is not None) < 0:
        notes.append(f"negative usage {raw[0]}+{raw[1]} tokens")
    elif counts[0] == 0:
        notes.append("usage claims a 0-token prompt")
    elif counts[1] == 0 and text:
        notes.append("usage claims 0 output tokens for a non-empty reply")
    trusted = not notes
    tin, tout = (counts[0] or 0, counts[1] or 0) if trusted else (0, 0)
    if hooks is not None and hooks.billed_tokens is not None:
        ein, eout = hooks.billed_tokens(request.model.id.split("/", 1)[1], request.messages, text)
        if trusted and (tin < ein or tout < eout):
            notes.append(f"usage understated: {tin}+{tout} tokens reported, {ein}+{eout} counted")
        tin, tout = max(tin, ein), max(tout, eout)
    return tin, tout, trusted, "; ".join(notes) or None


def _to_completion(resp: Any, request: CompletionRequest,
                   hooks: ProviderHooks | None) -> Completion:
    model = request.model
    choices = getattr(resp, "choices", None)
    problem: str | None = None
    text = ""
    tool_calls: list[dict[str, Any]] = []
    choice = choices[0] if isinstance(choices, list) and choices else None
    msg = getattr(choice, "message", None)
    if choice is None:
        problem = "no choices"
    elif msg is None:
        problem = "no message"
    elif msg.content is not None and not isinstance(msg.content, str):
        problem = f"content is {type(msg.content).__name__}, not text"
    else:
        text = (msg.content or "").strip()
        try:
            for tc in getattr(msg, "tool_calls", None) or []:
                args = tc.function.arguments
                try:
                    parsed = json.loads(args) if isinstance(args, str) else dict(args or {})
                except json.JSONDecodeError:
                    parsed = {"_raw": args}
                tool_calls.append({"id": tc.id, "name": tc.function.name, "arguments": parsed})
        except (AttributeError, TypeError, ValueError) as e:
            problem = f"unreadable tool calls ({type(e).__name__})"
    tin, tout, trusted, note = read_usage(resp, request, hooks, text)
    if problem is not None:
        # A reply arrived, so it was billed: its usage, or (untrusted) the whole reservation.
        raise BackendError(
            f"{model.name} ({model.id}) failed: the reply held no usable answer ({problem})"
            + (f"; {note}" if note else ""),
            model=model.id, billed_unknown=not trusted, usage=(tin, tout),
        )
    # In-process providers that know a call's exact cost (replay: the recorded cost) put it here.
    exact_cost = (getattr(resp, "_hidden_params", None) or {}).get("orchestra_cost_usd")
    return Completion(
        text=text,
        input_tokens=tin,
        output_tokens=tout,
        cost_usd=None if exact_cost is None else float(exact_cost),
        tool_calls=tool_calls,
        finish_reason=getattr(choice, "finish_reason", None),
        usage_trusted=trusted,
        usage_note=note,
    )

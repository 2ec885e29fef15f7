"""Durable runs in PostgreSQL (``Orchestra(durable="postgresql://...")``, orchestra/durable_pg.py)
on a real server the tests start (tests/pg_server.py; a fresh database per test, skipped with the
reason where the server cannot start): a run killed with SIGKILL mid-run resumes from its
checkpoint without paying its journaled calls again; one process at a time holds a run; a
finished run keeps only its mark ("used before", "already finished")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pg_server import fresh_database
from test_durable_runs import ProcessKilled, answer, finished_ids, kill_at, slow_b, two_models

from orchestra import Orchestra, UserError
from orchestra.durable import RunBusyError
from orchestra.testing import FunctionBackend
from orchestra.testing_server import FakeOpenAIServer
from orchestra.trace.pg_store import PostgresTraceStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


@pytest.fixture
def url(postgres_server_url: str) -> str:
    """A fresh database for the durable runs and the traces of one test."""
    return fresh_database(postgres_server_url, "durable")


def rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, args).fetchall())


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


_RUNNER = """
import sys
from orchestra import Orchestra

pool, url = sys.argv[1], sys.argv[2]
Orchestra(pool, policy_params={"k": 2, "layers": 3}, store=url, durable=url,
          check_keys=False).run("q", run_id="killed")
"""


def test_a_run_killed_mid_run_resumes_from_postgres_without_paying_twice(
        url: str, tmp_path: Path) -> None:
    store = PostgresTraceStore(url)
    with FakeOpenAIServer(hold=["b"]) as server:
        pool = tmp_path / "fake.yaml"
        pool.write_text(server.pool_yaml(["a", "b"]))
        first = subprocess.Popen([sys.executable, "-c", _RUNNER, str(pool), url], text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # a answers, b is held: kill the run the moment a's call_finished is stored.
            wait_for(lambda: finished_ids(store, "killed") or first.poll() is not None, 120,
                     "a's call_finished")
            assert first.poll() is None, first.communicate()[1][-2000:]
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
            assert store.get_run("killed")["status"] == "running"  # type: ignore[index]
            # What survived the kill: the run's terms and its journal, in PostgreSQL.
            assert rows(url, "SELECT count(*) FROM orchestra_run WHERE run_id = 'killed'") == [(1,)]
            assert rows(url, "SELECT count(*) > 0 FROM checkpoints WHERE thread_id = 'killed'"
                        ) == [(True,)]
            journaled = rows(url, "SELECT record FROM orchestra_calls WHERE run_id = 'killed'")
            assert [json.loads(r[0])["model"] for r in journaled] == ["a"]

            box: dict[str, Any] = {}
            resumer = threading.Thread(target=lambda: box.setdefault("r", Orchestra(
                "local", store=url, durable=url, check_keys=False).resume("killed")))
            resumer.start()  # on the stored terms: the fake pool, k=2, layers=3
            wait_for(lambda: len(server.requests_to("b")) == 2, 120, "the resumed b request")
            # The killed process's lock went with its connection; the resumer holds it now.
            with pytest.raises(RunBusyError, match=rf"in use by process {os.getpid()} .*resume"):
                Orchestra("local", store=False, durable=url, check_keys=False).resume("killed")
        finally:
            server.release()
        resumer.join(300)
    result = box["r"]
    assert result.stop_reason == "answered" and result.rounds == 3 and result.calls == 6
    finished = [e for e in store.events("killed") if e["kind"] == "call_finished"]
    assert len(finished) == len({e["call_id"] for e in finished}) == 6
    # Nothing paid twice: every request is a recorded call, except b's, killed in flight.
    assert len(server.requests_to("a")) == sum(e["model"] == "a" for e in finished) == 3
    assert len(server.requests) == 6 + 1
    started = [e for e in store.events("killed") if e["kind"] == "run_started"]
    assert [s["resumed"] for s in started] == [False, True] and started[1]["pool"] == "fake"
    # Finished: the checkpoints, journal and terms are gone, the mark stays.
    assert rows(url, "SELECT count(*) FROM checkpoints WHERE thread_id = 'killed'") == [(0,)]
    assert rows(url, "SELECT count(*) FROM orchestra_calls") == [(0,)]
    assert rows(url, "SELECT count(*) FROM orchestra_run") == [(0,)]
    assert rows(url, "SELECT run_id FROM orchestra_finished") == [("killed",)]
    store.close()


def test_a_call_whose_call_finished_was_stored_is_never_sent_again(url: str) -> None:
    store = PostgresTraceStore(url)
    first = FunctionBackend(answer, latency_s=slow_b)
    o = Orchestra(two_models(), policy="ensemble", policy_params={"k": 2, "layers": 2},
                  backend=first, store=store, durable=url)
    with pytest.raises(ProcessKilled):
        o.run("q", run_id="r1", on_event=kill_at(1))
    assert len(first.calls) == 2 and len(finished_ids(store, "r1")) == 1
    again = FunctionBackend(answer)
    r = Orchestra(two_models(), backend=again, store=store, durable=url).resume("r1")
    assert r.stop_reason == "answered" and r.rounds == 2 and r.calls == 4
    assert len(again.calls) == 3  # round 0's unfinished call, then round 1's two
    ids = finished_ids(store, "r1")
    assert len(ids) == len(set(ids)) == 4
    assert store.get_run("r1")["cost_usd"] == pytest.approx(r.cost_usd)  # type: ignore[index]
    store.close()


def test_one_process_at_a_time_holds_a_run(url: str) -> None:
    o = Orchestra(two_models(), policy="ensemble", backend=FunctionBackend(answer, latency_s=slow_b),
                  store=url, durable=url)
    with pytest.raises(ProcessKilled):
        o.run("q", run_id="r5", on_event=kill_at(1))
    gate, sent = threading.Event(), threading.Event()

    async def blocked(req: Any) -> str:
        import asyncio

        sent.set()
        await asyncio.get_running_loop().run_in_executor(None, gate.wait)
        return answer(req)

    first = FunctionBackend(blocked)
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.setdefault("r", Orchestra(
        two_models(), backend=first, store=url, durable=url).resume("r5")))
    t.start()
    try:
        assert sent.wait(60)
        second = FunctionBackend(answer)
        with pytest.raises(RunBusyError, match=rf"run 'r5' is in use by process {os.getpid()} "
                                               r"on .* \(resume since"):
            Orchestra(two_models(), backend=second, store=url, durable=url).resume("r5")
        with pytest.raises(RunBusyError):  # a new run with that id waits its turn too
            Orchestra(two_models(), backend=second, store=url, durable=url).run(
                "q", run_id="r5")
    finally:
        gate.set()
        t.join(60)
    assert box["r"].stop_reason == "answered" and not second.calls and len(first.calls) == 1
    assert rows(url, "SELECT count(*) FROM orchestra_holders") == [(0,)]


def test_a_finished_run_id_is_used_before_and_already_finished(url: str) -> None:
    o = Orchestra(two_models(), backend=FunctionBackend(answer), store=False, durable=url)
    assert o.durable and o.checkpoint_dir is None
    o.run("q", run_id="same")
    assert rows(url, "SELECT count(*) FROM checkpoints") == [(0,)]
    assert rows(url, "SELECT count(*) FROM orchestra_finished WHERE run_id = 'same'") == [(1,)]
    with pytest.raises(UserError, match="was used before"):
        o.run("q", run_id="same")
    with pytest.raises(UserError, match="already finished"):
        o.resume("same")
    with pytest.raises(UserError, match=r"no checkpoint for run 'nope' in 'postgresql://"):
        o.resume("nope")
    # Ids that are not plain names are fine: they are stored as given, the lock is a hash.
    assert o.run("q", run_id="Run/With Spaces?").trace_id == "Run/With Spaces?"


def test_an_unreachable_database_is_a_user_error_naming_it(tmp_path: Path) -> None:
    o = Orchestra(two_models(), backend=FunctionBackend(answer), store=False,
                  durable=f"postgresql://me:secret@/db?host={tmp_path}")
    with pytest.raises(UserError, match=r"cannot open the durable run store "
                                        r"'postgresql://me:\*\*\*@/db"):
        o.run("q")

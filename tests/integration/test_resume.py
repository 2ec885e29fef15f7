"""Crash mid-run, then resume from the SQLite checkpoint without paying again for finished calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra import Budget, Orchestra
from orchestra.backends.base import CompletionRequest
from orchestra.testing import FunctionBackend, make_pool
from orchestra.trace.store import SQLiteTraceStore


class ProcessKilled(Exception):
    """Stands in for the process dying mid-call (not a provider error: nothing catches it)."""


def test_crash_leaves_trace_and_spend_then_resume_skips_finished_calls(tmp_path: Path) -> None:
    pool = make_pool(prices=[(1.0, 2.0), (1.0, 2.0)], names=["a", "b"])
    db = tmp_path / "traces.sqlite"
    ckpt = tmp_path / "ckpt.sqlite"
    params = {"k": 2, "layers": 3}

    def crashing(req: CompletionRequest) -> str:
        # Round 0 (2 calls) and round 1 (2 calls) succeed; the first call of round 2 crashes.
        if len(crash_backend.calls) >= 5:
            raise ProcessKilled("power cut")
        return f"answer from {req.model.name}"

    crash_backend = FunctionBackend(crashing)
    o = Orchestra(pool, policy="ensemble", policy_params=params, backend=crash_backend,
                  store=SQLiteTraceStore(db), durable=ckpt, budget=Budget(usd=1.0))
    with pytest.raises(ProcessKilled):
        o.run("q", run_id="run-1")

    store = SQLiteTraceStore(db)
    row = store.get_run("run-1")
    assert row is not None and row["status"] == "error"
    finished = [e for e in store.events("run-1") if e["kind"] == "call_finished"]
    assert len(finished) >= 4  # the calls made before the crash are in the trace...
    spent_before = sum(e["cost_usd"] for e in finished)
    assert spent_before > 0 and row["cost_usd"] == pytest.approx(spent_before)  # ...and their spend

    healthy = FunctionBackend(lambda req: f"answer from {req.model.name}")
    o2 = Orchestra(pool, policy="ensemble", policy_params=params, backend=healthy,
                   store=store, durable=ckpt, budget=Budget(usd=1.0))
    result = o2.resume("run-1")
    assert result.stop_reason == "answered" and result.rounds == 3
    # Rounds 0 and 1 came from the checkpoint; only round 2's calls were sent again.
    assert len(healthy.calls) == 2
    assert result.calls == 6
    events = store.events("run-1")
    assert [e["seq"] for e in events] == list(range(len(events)))  # one trace, numbered on
    assert store.get_run("run-1")["status"] == "ok"  # type: ignore[index]
    # Total cost is the six calls once each: nothing paid twice.
    per_call = [e["cost_usd"] for e in events if e["kind"] == "call_finished" and not e["error"]]
    assert result.cost_usd == pytest.approx(sum(per_call[:4]) + sum(per_call[-2:]))


def test_resume_needs_a_durable_orchestra(tmp_path: Path) -> None:
    from orchestra import UserError

    o = Orchestra(make_pool(), backend=FunctionBackend(lambda r: "x"), store=False)
    with pytest.raises(UserError, match="durable"):
        o.resume("whatever")
    o = Orchestra(make_pool(), backend=FunctionBackend(lambda r: "x"), store=False,
                  durable=tmp_path / "c.sqlite")
    done = o.run("q")
    with pytest.raises(UserError, match="already finished"):
        o.resume(done.trace_id)
    with pytest.raises(UserError, match="no checkpoint"):
        o.resume("never-ran")

"""The standing fault suite: budgets stay hard against a misbehaving litellm provider.

Every run here goes through the real :class:`~orchestra.backends.litellm_client.LiteLLMBackend`
and ``litellm.acompletion`` to ``faulty/<model>`` (:mod:`orchestra.backends.faulty`), an
in-process ``litellm.CustomLLM`` that injects one fault per request (timeouts, 429, 5xx,
malformed 200s, no choices, lying usage, ignored ``max_tokens``) and keeps its own invoice.

Two layers:

1. One regression test per way a provider used to break the budget (each failed before the fix),
   plus the ledger's own defences and budgets that are infinite or huge.
2. A hypothesis property over random pools, parallel fan-out policies, limits and fault mixes,
   checked against the provider's invoice, the trace store and the run's result
   (:func:`orchestra.backends.faulty.audit_run`, which ``benchmarks/faults.py`` uses too):

   - the recorded spend is never below what the provider billed;
   - the spend exceeds a limit only by overruns recorded for exactly that excess;
   - an overrun stops the run at once (``budget_overrun``, no call sent after it);
   - no event is lost: the store holds exactly the run's events, and its summary agrees.

``benchmarks/faults.py`` runs the same provider over ≥ 10,000 runs.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orchestra.backends import faulty
from orchestra.backends.litellm_client import LiteLLMBackend
from orchestra.budget import CallCost, Ledger, max_output_that_fits
from orchestra.errors import UserError
from orchestra.policies.base import Action, Call, Route, RunView
from orchestra.runtime import Orchestra, RunResult
from orchestra.spec import Budget, Pool
from orchestra.testing import FunctionBackend, make_pool
from orchestra.trace.store import SQLiteTraceStore, TraceStore

# Examples of the property; raise it for a long bug hunt (ORCHESTRA_PROP_EXAMPLES=50).
_N = int(os.environ.get("ORCHESTRA_PROP_EXAMPLES", "1"))
_TOL = 1e-12
QUERY = "What is six times seven? Answer with a number."

# A malformed reply's non-text content makes litellm's own logging warn; that is the fault.
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")


def _pool(n: int = 3, *, refiner: str = "vote", max_output_tokens: int = 64,
          prices: tuple[tuple[float, float], ...] = ((1.0, 2.0), (0.5, 1.0), (2.0, 4.0))) -> Pool:
    pool = make_pool(prices[:n], provider=faulty.PROVIDER, refiner=refiner,
                     max_output_tokens=max_output_tokens)
    faulty.register_prices(pool.models)
    return pool


def _run(pool: Pool, plan: faulty.FaultPlan, budget: Budget, store: TraceStore | None = None,
         policy: Any = "ensemble", params: dict[str, Any] | None = None) -> RunResult:
    orch = Orchestra(pool, policy=policy, policy_params=params, budget=budget,
                     backend=LiteLLMBackend(backoff_s=0.0), store=store or False)
    return orch.run(QUERY, meta={"fault_plan": plan.id})


def _billed_usd(pool: Pool, plan: faulty.FaultPlan) -> float:
    return plan.billed_usd(lambda m: (pool.model(m).input_price or 0.0,
                                      pool.model(m).output_price or 0.0))


def _finished(result: RunResult) -> list[Any]:
    return [e for e in result.events if e.kind == "call_finished"]


def _reserved(result: RunResult) -> dict[str, float]:
    return {e.call_id: e.reserved_usd for e in result.events  # type: ignore[union-attr]
            if e.kind == "call_started"}


def _single(model: str = "m0") -> Any:
    return f"single:{model}"


@pytest.fixture(autouse=True, scope="module")
def _litellm() -> None:
    """Import litellm once, up front (not inside a hypothesis strategy: it seeds ``random``)."""
    faulty.register_faulty_provider()


@pytest.fixture
def plans() -> Iterator[list[faulty.FaultPlan]]:
    made: list[faulty.FaultPlan] = []
    yield made
    for p in made:
        faulty.drop_plan(p)


def _plan(plans: list[faulty.FaultPlan], *script: str, weights: dict[str, float] | None = None,
          seed: int = 0) -> faulty.FaultPlan:
    p = faulty.new_plan(weights or {"ok": 1.0}, seed=seed, script=script)
    plans.append(p)
    return p


# ==========================================================================================
# 1. Regressions, one per fault
# ==========================================================================================


def test_an_honest_provider_is_charged_its_usage(plans: list[faulty.FaultPlan]) -> None:
    pool = _pool()
    plan = _plan(plans, "ok", "ok", "ok")
    r = _run(pool, plan, Budget(usd=1.0, rounds=1), params={"k": 3})
    assert r.stop_reason == "answered" and r.overruns == []
    assert r.cost_usd == pytest.approx(_billed_usd(pool, plan), rel=1e-12)
    assert r.input_tokens + r.output_tokens == plan.billed_tokens
    assert all(e.usage_note is None and e.overrun is None for e in _finished(r))


@pytest.mark.parametrize("variant", range(3))
def test_negative_usage_cannot_lower_the_spend(plans: list[faulty.FaultPlan], variant: int) -> None:
    """Usage of -5 prompt or -1e6 output tokens used to be charged as is (cost -0.99999) and
    refilled the budget; untrusted usage is now charged the whole reservation."""
    pool = _pool()
    plan = _plan(plans, "usage_negative", seed=variant)
    r = _run(pool, plan, Budget(usd=1.0), policy=_single())
    (call,) = _finished(r)
    assert call.cost_usd == pytest.approx(_reserved(r)[call.call_id])
    assert call.input_tokens >= 0 and call.output_tokens >= 0
    assert r.cost_usd >= _billed_usd(pool, plan) > 0
    assert "negative usage" in (call.usage_note or "")


def test_missing_usage_charges_the_reservation(plans: list[faulty.FaultPlan]) -> None:
    pool = _pool()
    for seed in range(4):  # usage None, or litellm's zeros
        plan = _plan(plans, "usage_missing", seed=seed)
        r = _run(pool, plan, Budget(usd=1.0), policy=_single())
        (call,) = _finished(r)
        assert call.cost_usd == pytest.approx(_reserved(r)[call.call_id])
        assert call.output_tokens == 64 and r.cost_usd >= _billed_usd(pool, plan)
        assert call.usage_note in ("no usage reported", "usage claims a 0-token prompt")


def test_understated_usage_is_raised_to_the_counted_tokens(plans: list[faulty.FaultPlan]) -> None:
    pool = _pool()
    for seed in range(6):
        plan = _plan(plans, "usage_understated", seed=seed)
        r = _run(pool, plan, Budget(usd=1.0), policy=_single())
        (call,) = _finished(r)
        assert r.cost_usd >= _billed_usd(pool, plan) - _TOL
        assert call.input_tokens + call.output_tokens >= plan.billed_tokens
        assert call.usage_note


def test_a_reply_without_choices_is_charged_its_usage(plans: list[faulty.FaultPlan]) -> None:
    """A 200 with usage but no choice used to be recorded as $0."""
    pool = _pool()
    plan = _plan(plans, "no_choices")
    r = _run(pool, plan, Budget(usd=1.0), policy=_single())
    (call,) = _finished(r)
    (bill,) = plan.bills
    assert "no usable answer (no choices)" in (call.error or "")
    assert (call.input_tokens, call.output_tokens) == (bill.input_tokens, bill.output_tokens)
    assert call.cost_usd == pytest.approx(_billed_usd(pool, plan)) and call.cost_usd > 0
    assert r.answer is None


def test_a_malformed_reply_is_charged(plans: list[faulty.FaultPlan]) -> None:
    pool = _pool()
    errors = set()
    for seed in range(6):  # no message at all (litellm fails on it), or non-text content
        plan = _plan(plans, "malformed", seed=seed)
        r = _run(pool, plan, Budget(usd=1.0), policy=_single())
        (call,) = _finished(r)
        errors.add("no usable answer" in (call.error or ""))
        assert call.error and call.cost_usd >= _billed_usd(pool, plan) > 0
    assert errors == {True, False}


def test_transient_errors_are_retried_and_not_charged(plans: list[faulty.FaultPlan]) -> None:
    pool = _pool()
    plan = _plan(plans, "rate_limit", "server_error", "ok")
    r = _run(pool, plan, Budget(usd=1.0), policy=_single())
    (call,) = _finished(r)
    assert call.error is None and r.answer
    assert r.cost_usd == pytest.approx(_billed_usd(pool, plan))
    plan = _plan(plans, weights={"rate_limit": 1.0})
    r = _run(pool, plan, Budget(usd=1.0), policy=_single())
    (call,) = _finished(r)
    assert "RateLimitError" in (call.error or "") and call.cost_usd == 0 and plan.bills == []


def test_retries_and_their_backoff_stay_within_the_seconds_limit(
        plans: list[faulty.FaultPlan]) -> None:
    """A provider that answers 429 to everything: the backoff (0.4 s, 0.8 s, 1.6 s, ...) used to
    run past ``--timeout`` (4.6 s for a 3 s limit); now the retries stop when no time is left."""
    pool = _pool(1)
    plan = _plan(plans, weights={"rate_limit": 1.0})
    orch = Orchestra(pool, policy=_single(), budget=Budget(usd=1.0, seconds=1.0),
                     backend=LiteLLMBackend(max_retries=6, backoff_s=0.4), store=False)
    r = orch.run(QUERY, meta={"fault_plan": plan.id})
    (call,) = _finished(r)
    assert "no time left to retry within" in (call.error or "") and call.cost_usd == 0
    # Backoffs of 0.2-0.6 s, then 0.4-1.2 s, ... leave room for at most 4 requests in 1 s;
    # retrying regardless of the limit makes all 7 (and takes ~25 s).
    assert 1 <= len(plan.faults) <= 4


def test_a_timeout_is_charged_the_whole_reservation(plans: list[faulty.FaultPlan]) -> None:
    pool = _pool()
    plan = _plan(plans, "timeout")
    r = _run(pool, plan, Budget(usd=1.0), policy=_single())
    (call,) = _finished(r)
    assert "Timeout" in (call.error or "")
    assert call.cost_usd == pytest.approx(_reserved(r)[call.call_id])
    assert call.cost_usd >= _billed_usd(pool, plan)


def test_overstated_usage_is_charged_as_reported(plans: list[faulty.FaultPlan]) -> None:
    """The provider invoices what it reports: charged in full; an overrun when that is above
    the reservation, none otherwise."""
    pool = _pool()
    seen = set()
    for seed in range(8):
        plan = _plan(plans, "usage_overstated", seed=seed)
        r = _run(pool, plan, Budget(usd=1.0, rounds=2), policy=_single())
        call = _finished(r)[0]
        assert call.cost_usd == pytest.approx(_billed_usd(pool, plan))
        above = call.cost_usd > _reserved(r)[call.call_id]
        seen.add(above)
        assert bool(r.overruns) == above == (r.stop_reason == "budget_overrun")
    assert seen == {True, False}


def test_a_reply_above_its_reservation_is_charged_recorded_and_stops_the_run(
        plans: list[faulty.FaultPlan], tmp_path: Path) -> None:
    """A provider that ignored max_tokens used to take the spend past the limit silently
    ("answered", no trace of it). Now: charged in full, recorded everywhere, run stopped."""
    pool = _pool(refiner="llm")
    plan = _plan(plans, "ignore_max_tokens", "ignore_max_tokens")
    store = SQLiteTraceStore(tmp_path / "t.sqlite")
    # Room for several rounds: only the overrun stops the run.
    budget = Budget(usd=0.002, rounds=4)
    r = _run(pool, plan, budget, store, params={"k": 2, "layers": 3})
    billed = _billed_usd(pool, plan)
    assert r.stop_reason == "budget_overrun" and r.status == "budget"
    assert r.cost_usd == pytest.approx(billed) and len(plan.bills) == 2  # nothing sent after
    assert len(r.overruns) == 2
    reserved = _reserved(r)
    for o, call in zip(sorted(r.overruns, key=lambda o: o["call_id"]),
                       sorted(_finished(r), key=lambda e: e.call_id), strict=True):
        assert o["call_id"] == call.call_id and call.overrun is not None
        assert o["reserved_usd"] == pytest.approx(reserved[call.call_id])
        assert o["charged_usd"] == pytest.approx(call.cost_usd)
        assert o["excess_usd"] == pytest.approx(call.cost_usd - reserved[call.call_id])
        assert o["excess_usd"] > 0 and o["excess_tokens"] > 0
        assert {k: v for k, v in call.overrun.items()} == {
            k: v for k, v in o.items() if k not in ("call_id", "agent", "model")}
    assert all("> max_tokens" in o["reason"] for o in r.overruns)
    # The limit may be exceeded only by the recorded excess.
    assert r.cost_usd <= budget.usd + sum(o["excess_usd"] for o in r.overruns) + _TOL  # type: ignore[operator]
    # ... and it shows: --json, run_finished, the store's summary.
    assert r.to_dict()["overruns"] == r.overruns
    assert r.events[-1].kind == "run_finished" and r.events[-1].overruns == r.overruns
    row = store.get_run(r.trace_id)
    assert row is not None and row["overruns"] == r.overruns
    assert row["stop_reason"] == "budget_overrun" and row["status"] == "budget"
    # The llm refiner was not called: nothing is sent after an overrun.
    refined = next(e for e in r.events if e.kind == "refined")
    assert refined.refiner.startswith("vote")  # type: ignore[union-attr]


def test_an_overrun_in_a_tool_loop_sends_no_follow_up(plans: list[faulty.FaultPlan]) -> None:
    """The ledger refuses every reservation after an overrun, whatever is left."""
    led = Ledger(Budget(usd=1.0))
    r = led.reserve(CallCost(0.01, 10, 10))
    assert r is not None
    led.settle(r, CallCost(0.02, 10, 30))
    assert led.exhausted() == "overrun" and led.reserve(CallCost(0.0, 0, 0)) is None


def test_the_store_summary_of_an_older_database_gains_the_overruns_column(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, started_at REAL, finished_at REAL,
            query TEXT, pool TEXT, policy TEXT, status TEXT, stop_reason TEXT, answer TEXT,
            cost_usd REAL DEFAULT 0, input_tokens INTEGER DEFAULT 0,
            output_tokens INTEGER DEFAULT 0, calls INTEGER DEFAULT 0, rounds INTEGER DEFAULT 0,
            duration_s REAL, budget TEXT, meta TEXT);
        CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
            kind TEXT NOT NULL, round INTEGER, data TEXT NOT NULL, PRIMARY KEY (run_id, seq));
        INSERT INTO runs(run_id, query, status) VALUES ('old', 'q', 'ok');
    """)
    conn.close()
    ro = SQLiteTraceStore(db, readonly=True)  # readable as it is
    assert ro.get_run("old")["query"] == "q"  # type: ignore[index]
    ro.close()
    s = SQLiteTraceStore(db)
    pool = _pool()
    r = Orchestra(pool, policy=_single(), backend=FunctionBackend(lambda req: "42"),
                  store=s).run(QUERY)
    assert s.get_run(r.trace_id)["overruns"] == []  # type: ignore[index]
    assert s.get_run("old")["query"] == "q"  # type: ignore[index]


class TestLedgerDefences:
    """Whatever a backend reports, a settlement never lowers the spend."""

    @pytest.mark.parametrize("actual", [
        CallCost(-0.99999, 10, 10), CallCost(0.001, -5, 10), CallCost(0.001, 10, -10**6),
        CallCost(math.nan, 10, 10), CallCost(-math.inf, -1, -1),
    ])
    def test_negative_or_nonfinite_fields_are_charged_as_reserved(self, actual: CallCost) -> None:
        led = Ledger(Budget(usd=1.0, tokens=1000))
        res = led.reserve(CallCost(0.01, 20, 20))
        assert res is not None
        charged = led.settle(res, actual)
        assert charged.usd >= 0 and charged.input_tokens >= 0 and charged.output_tokens >= 0
        assert led.spent_usd >= 0.001 and led.spent_tokens >= 20
        left = led.left().usd
        assert left is not None and left <= 1.0  # nothing refilled

    def test_a_custom_backend_reporting_negative_usage_cannot_refill_the_budget(self) -> None:
        from orchestra.backends.base import Completion

        pool = _pool()
        backend = FunctionBackend(lambda req: Completion(text="42", input_tokens=-5,
                                                         output_tokens=-10**6))
        budget = Budget(usd=0.0003, rounds=20)

        class Always:
            name = "always"

            def decide(self, view: RunView) -> Action:
                return Route([Call(agent="assistant", model="m0")])

        r = Orchestra(pool, policy=Always(), budget=budget, backend=backend,
                      store=False).run(QUERY)
        assert r.cost_usd <= 0.0003 + _TOL and r.cost_usd > 0
        assert r.input_tokens >= 0 and r.output_tokens >= 0
        assert r.stop_reason.startswith("budget:")


class TestInfiniteAndHugeBudgets:
    @pytest.mark.parametrize("field", ["usd", "seconds"])
    def test_infinite_limits_are_refused_up_front(self, field: str) -> None:
        backend = FunctionBackend(lambda req: "42")
        with pytest.raises(UserError, match=rf"budget {field} must be a finite number \(got inf\)"
                                            r".*leave it unset for no limit"):
            Orchestra(_pool(), budget={field: math.inf}, backend=backend, store=False)
        with pytest.raises(UserError, match="finite"):
            Budget(**{field: math.inf})  # type: ignore[arg-type]
        assert backend.calls == []

    def test_the_cli_refuses_an_infinite_budget_with_exit_2(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        from orchestra.cli import main

        pool = tmp_path / "p.yaml"
        pool.write_text(json.dumps(_pool().model_dump(mode="json", exclude_none=True)))
        with pytest.raises(SystemExit) as e:
            main(["run", "--pool", str(pool), "--budget-usd", "inf", "--no-durable",
                  "--no-trace", "hi"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "inf" in err and "leave it unset for no limit" in err

    @pytest.mark.parametrize("usd", [1e303, 1.7e308])
    def test_a_huge_budget_runs(self, usd: float, plans: list[faulty.FaultPlan]) -> None:
        """1e303 used to fail with OverflowError in budget.py after the run started."""
        assert max_output_that_fits(usd, None, 10, 1.0, 2.0, 77) == 77
        assert max_output_that_fits(usd, None, 10, 1e-9, 1e-9, 77) == 77
        pool = _pool()
        r = _run(pool, _plan(plans), Budget(usd=usd, rounds=2), params={"k": 3, "layers": 2})
        assert r.stop_reason == "answered" and r.calls == 6


# ==========================================================================================
# 2. The property: random pools, fan-out, limits and faults
# ==========================================================================================

# A mix of a few fault kinds, with honest replies in between (or an honest provider).
_fault_weights = st.just({"ok": 1.0}) | st.dictionaries(
    st.sampled_from(faulty.FAULT_KINDS), st.floats(0.05, 1.0), min_size=1, max_size=5,
).map(lambda w: {**w, "ok": w.get("ok", 0.0) + 0.2})


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    # (Interesting values first: hypothesis often draws a strategy's simplest value.)
    n = draw(st.sampled_from([3, 4, 2, 1]))
    prices = tuple((draw(st.sampled_from([0.1, 0.5, 1.0, 3.0])),
                    draw(st.sampled_from([0.2, 1.0, 2.0, 15.0]))) for _ in range(n))
    max_out = draw(st.sampled_from([16, 32, 64]))
    pool = _pool(n, refiner=draw(st.sampled_from(["vote", "llm", "last"])),
                 max_output_tokens=max_out, prices=prices)
    worst = max(m.cost(60, max_out) for m in pool.models)  # about one call's worst case
    policy = draw(st.sampled_from(["ensemble"] * 4 + ["cascade", "single"]))
    params: dict[str, Any] | None = None
    if policy == "ensemble":  # parallel fan-out: k calls at once, per layer
        params = {"k": draw(st.integers(2, 4) | st.just(1)),
                  "layers": draw(st.integers(1, 3))}
    elif policy == "single":
        policy = f"single:{draw(st.sampled_from([m.name for m in pool.models]))}"
    budget = Budget(
        usd=draw(st.none() | st.floats(0.5, 40.0).map(lambda f: f * worst)),
        rounds=draw(st.sampled_from([None, 4, 3, 2, 1])),
        tokens=draw(st.sampled_from([None, None, 4000, 1000, 400, 150])),
        calls=draw(st.sampled_from([None, None, 20, 12, 8, 5, 3, 2, 1])),
    )
    if budget.rounds is None and budget.usd is None and budget.calls is None:
        budget = budget.merged(rounds=3)
    return {"pool": pool, "policy": policy, "params": params, "budget": budget,
            "weights": draw(_fault_weights), "seed": draw(st.integers(0, 2**32 - 1))}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteTraceStore]:
    s = SQLiteTraceStore(tmp_path_factory.mktemp("faults") / "traces.sqlite")
    yield s
    s.close()


@given(scenarios())
@settings(max_examples=max(1, 400 * _N), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
def test_budgets_stay_hard_against_a_faulty_provider(shared_store: SQLiteTraceStore,
                                                     scenario: dict[str, Any]) -> None:
    s = scenario
    plan = faulty.new_plan(s["weights"], seed=s["seed"])
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Pydantic serializer warnings")
            result = _run(s["pool"], plan, s["budget"], shared_store, s["policy"], s["params"])
        audit = faulty.audit_run(s["pool"], s["budget"], plan, result, shared_store)
        assert audit.violations == {}, (audit.violations, plan.faults, result.stop_reason)
        assert audit.recorded_usd >= audit.billed_usd - _TOL - 1e-9 * audit.billed_usd
    finally:
        faulty.drop_plan(plan)
    event(f"stop: {result.stop_reason}")
    event("overrun" if result.overruns else "no overrun")
    event(f"requests: {min(len(plan.faults), 8)}{'+' if len(plan.faults) >= 8 else ''}")

"""Budgets are hard limits: property-based tests of the ledger and of whole runs.

Three layers:

1. Plain unit tests of :class:`~orchestra.budget.Ledger` and
   :func:`~orchestra.budget.max_output_that_fits` edge cases.
2. A stateful hypothesis machine that drives one ``Ledger`` with reserve / reserve_many /
   settle / release in random orders (and bursts of the same from several threads at once),
   checking ``spent + reserved <= limit`` after every step and against a reference model.
3. Whole runs: random pools, limits, policies (every baseline and a random-action policy) and a
   misbehaving backend (random output lengths and latencies, failures, failures that may have
   been billed, tool calls). Every run is checked from four independent angles: the
   :class:`RunResult`, the trace events in a :class:`MemoryTraceStore`, the backend's own bill
   (what a provider would invoice) and the run's ledger, which is swapped for a subclass that
   checks the invariant after every reservation, settlement and release.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

import orchestra.runtime as runtime_mod
from orchestra.backends.base import Completion, CompletionRequest
from orchestra.budget import BudgetLeft, CallCost, Ledger, Reservation, max_output_that_fits
from orchestra.errors import BackendError
from orchestra.policies.base import Action, Answer, Call, Route, RunView, Think
from orchestra.policies.resolve import resolve_policy
from orchestra.prompts import build_messages
from orchestra.runtime import Orchestra, RunResult
from orchestra.spec import AgentSpec, Budget, ModelSpec, Pool, RefinerSpec, ToolSpec
from orchestra.testing import FunctionBackend
from orchestra.trace.store import MemoryTraceStore

# Examples per property; raise it for a long bug hunt (ORCHESTRA_PROP_EXAMPLES=5000).
_N = int(os.environ.get("ORCHESTRA_PROP_EXAMPLES", "1"))

# The ledger compares USD with an absolute epsilon of 1e-12 (float rounding); sums taken in a
# different order (records, events) may differ from the ledger's by a few ulps.
_EPS = 1e-12


def _usd_ok(spent: float, limit: float | None) -> bool:
    return limit is None or spent <= limit + _EPS + 1e-12 * limit


# ==========================================================================================
# 1. Plain unit tests
# ==========================================================================================


def _cost(usd: float = 0.0, inp: int = 0, out: int = 0) -> CallCost:
    return CallCost(usd=usd, input_tokens=inp, output_tokens=out)


class TestMaxOutputThatFits:
    def test_no_limits_gives_the_cap(self) -> None:
        assert max_output_that_fits(None, None, 1000, 5.0, 5.0, 77) == 77

    def test_zero_prices_are_never_limited_by_usd(self) -> None:
        # Free models fit in any USD budget, even an empty one.
        assert max_output_that_fits(0.0, None, 10, 0.0, 0.0, 50) == 50
        assert max_output_that_fits(1e-9, None, 10_000, 0.0, 0.0, 50) == 50

    def test_zero_output_price_is_limited_by_the_prompt_only(self) -> None:
        assert max_output_that_fits(10e-6, None, 10, 1.0, 0.0, 50) == 50  # prompt costs 1e-5
        assert max_output_that_fits(9e-6, None, 10, 1.0, 0.0, 50) == 0  # prompt does not fit

    def test_usd_exhausted(self) -> None:
        assert max_output_that_fits(0.0, None, 10, 1.0, 1.0, 50) == 0
        assert max_output_that_fits(0.0, None, 0, 0.0, 1.0, 50) == 0

    def test_tokens_exhausted(self) -> None:
        assert max_output_that_fits(None, 5, 10, 1.0, 1.0, 50) == 0  # prompt alone is too long
        assert max_output_that_fits(None, 10, 10, 1.0, 1.0, 50) == 0  # room for the prompt only
        assert max_output_that_fits(None, 0, 0, 1.0, 1.0, 50) == 0

    def test_tokens_exact_fit(self) -> None:
        assert max_output_that_fits(None, 15, 10, 1.0, 1.0, 50) == 5
        assert max_output_that_fits(None, 60, 10, 1.0, 1.0, 50) == 50  # cap binds

    @pytest.mark.parametrize("k", [1, 15, 16, 17, 99, 100, 1_000, 123_457])
    @pytest.mark.parametrize("in_price,out_price", [(0.0, 3.0), (1.0, 2.0), (0.15, 0.6),
                                                    (3.0, 15.0), (1e5, 1e5)])
    def test_usd_exact_fit_gets_every_token(self, k: int, in_price: float, out_price: float) -> None:
        # Room for exactly k output tokens after a 10-token prompt: float rounding must not
        # cost the last token (nor grant one more).
        usd = (10 * in_price + k * out_price) / 1e6
        got = max_output_that_fits(usd, None, 10, in_price, out_price, 10**9)
        assert got == k
        assert (10 * in_price + got * out_price) / 1e6 <= usd + _EPS

    def test_cap_binds_before_usd(self) -> None:
        assert max_output_that_fits(1.0, 10**9, 10, 1.0, 1.0, 64) == 64

    @given(
        usd_left=st.none() | st.floats(0, 10, allow_nan=False),
        tokens_left=st.none() | st.integers(0, 10**6),
        prompt=st.integers(0, 10**5),
        in_price=st.sampled_from([0.0, 0.01, 0.5, 3.0, 75.0, 1e5]),
        out_price=st.sampled_from([0.0, 0.01, 0.5, 3.0, 75.0, 1e5]),
        cap=st.integers(1, 10**5),
    )
    @settings(max_examples=max(1, 300 * _N), deadline=None)
    def test_result_always_fits_and_is_maximal(
        self, usd_left: float | None, tokens_left: int | None, prompt: int, in_price: float,
        out_price: float, cap: int,
    ) -> None:
        n = max_output_that_fits(usd_left, tokens_left, prompt, in_price, out_price, cap)
        assert 0 <= n <= cap
        if n > 0:  # a positive answer is a call that fits every limit
            if tokens_left is not None:
                assert prompt + n <= tokens_left
            if usd_left is not None:
                assert (prompt * in_price + n * out_price) / 1e6 <= usd_left + _EPS
        # Maximal: one more token would break a limit, or the cap binds.
        bigger = n + 1
        breaks = bigger > cap
        if tokens_left is not None:
            breaks |= prompt + bigger > tokens_left
        if usd_left is not None:
            breaks |= (prompt * in_price + bigger * out_price) / 1e6 > usd_left
        assert breaks


class TestLedger:
    def test_reserve_settle_and_left(self) -> None:
        led = Ledger(Budget(usd=1.0, tokens=100, calls=3))
        r = led.reserve(_cost(0.25, 10, 20))
        assert r is not None
        left = led.left()
        assert (left.usd, left.tokens, left.calls) == (0.75, 70, 2)
        charged = led.settle(r, _cost(0.1, 10, 5))
        assert charged == _cost(0.1, 10, 5)
        assert (led.spent_usd, led.spent_tokens, led.calls) == (0.1, 15, 1)
        assert led.left().usd == pytest.approx(0.9)
        assert led.overruns == []

    def test_exact_fit_is_accepted(self) -> None:
        led = Ledger(Budget(usd=0.5, tokens=30, calls=1))
        assert led.reserve(_cost(0.5, 10, 20)) is not None
        assert led.exhausted() == "calls"

    def test_too_large_reservation_is_refused_and_changes_nothing(self) -> None:
        led = Ledger(Budget(usd=1.0, tokens=100))
        assert led.reserve(_cost(1.0 + 1e-9, 1, 1)) is None
        assert led.reserve(_cost(0.1, 60, 41)) is None
        assert led.check(_cost(2.0)) == "usd"
        assert led.check(_cost(0.0, 101, 0)) == "tokens"
        assert led.reserved_usd == 0.0
        assert led.left().tokens == 100

    def test_usd_exhausted(self) -> None:
        led = Ledger(Budget(usd=0.3))
        r = led.reserve(_cost(0.3, 1, 1))
        assert r is not None
        led.settle(r, None)  # unknown usage: the whole reservation is charged
        assert led.spent_usd == 0.3
        assert led.exhausted() == "usd"
        assert led.reserve(_cost(1e-6)) is None
        # A free call still fits the ledger (the runtime stops on exhausted() before asking).
        assert led.reserve(_cost(0.0, 1, 1)) is not None

    def test_tokens_exhausted(self) -> None:
        led = Ledger(Budget(tokens=10))
        r = led.reserve(_cost(0.0, 4, 6))
        assert r is not None
        led.settle(r, _cost(0.0, 4, 6))
        assert led.exhausted() == "tokens"
        assert led.reserve(_cost(0.0, 1, 0)) is None

    def test_calls_limit_counts_released_calls_that_were_sent(self) -> None:
        led = Ledger(Budget(calls=2))
        a, b = led.reserve(_cost()), led.reserve(_cost())
        assert a is not None and b is not None
        assert led.reserve(_cost()) is None  # two outstanding
        led.release(a)  # not sent: frees the slot
        c = led.reserve(_cost())
        assert c is not None
        led.release(b, count_call=True)  # sent and failed: counts
        led.settle(c, _cost())
        assert led.calls == 2
        assert led.exhausted() == "calls"

    def test_reserve_many_partial_fit_skips_the_big_one(self) -> None:
        led = Ledger(Budget(usd=1.0))
        got, refused = led.reserve_many([(_cost(0.6), "a"), (_cost(0.6), "b"), (_cost(0.3), "c")])
        assert [g is not None for g in got] == [True, False, True]
        assert refused == "usd"
        assert led.reserved_usd == pytest.approx(0.9)
        assert {g.label for g in got if g is not None} == {"a", "c"}

    def test_reserve_many_all_or_nothing(self) -> None:
        led = Ledger(Budget(usd=1.0, calls=5))
        got, refused = led.reserve_many([(_cost(0.6), "a"), (_cost(0.6), "b")],
                                        all_or_nothing=True)
        assert got == [] and refused == "usd"
        assert led.reserved_usd == 0.0 and led.left().calls == 5
        got, refused = led.reserve_many([(_cost(0.5), "a"), (_cost(0.5), "b")],
                                        all_or_nothing=True)
        assert len(got) == 2 and all(g is not None for g in got) and refused is None

    def test_reserve_many_counts_calls_in_the_batch(self) -> None:
        led = Ledger(Budget(calls=2))
        got, refused = led.reserve_many([(_cost(), str(i)) for i in range(4)])
        assert [g is not None for g in got] == [True, True, False, False]
        assert refused == "calls"

    def test_double_settle_and_release_raise(self) -> None:
        led = Ledger(Budget(usd=1.0))
        r = led.reserve(_cost(0.1))
        assert r is not None
        led.settle(r, _cost(0.05))
        with pytest.raises(ValueError, match="already settled"):
            led.settle(r, _cost(0.05))
        with pytest.raises(ValueError, match="already settled"):
            led.release(r)
        r2 = led.reserve(_cost(0.1))
        assert r2 is not None
        led.release(r2)
        with pytest.raises(ValueError, match="already settled"):
            led.settle(r2, None)
        assert led.spent_usd == 0.05 and led.calls == 1

    def test_negative_reservation_raises(self) -> None:
        led = Ledger(Budget(usd=1.0))
        with pytest.raises(ValueError, match="non-negative"):
            led.reserve(_cost(-0.1))
        with pytest.raises(ValueError, match="non-negative"):
            led.reserve(_cost(0.0, -1, 0))

    def test_settle_above_the_reservation_is_recorded_as_an_overrun(self) -> None:
        led = Ledger(Budget(usd=1.0))
        r = led.reserve(_cost(0.1, 1, 1))
        assert r is not None
        led.settle(r, _cost(0.2, 1, 1))
        assert led.spent_usd == 0.2  # the books record the truth
        assert [(o.excess_usd, o.excess_tokens) for o in led.overruns] == [(pytest.approx(0.1), 0)]
        assert led.overrun_of(r) is led.overruns[0]
        # ... and the run must stop: nothing more fits, whatever is left.
        assert led.exhausted() == "overrun"
        assert led.reserve(_cost(0.01, 1, 1)) is None
        assert led.reserve_many([(_cost(0.0), "free")]) == ([None], "overrun")

    def test_seconds_exhausted_refuses_reservations(self) -> None:
        led = Ledger(Budget(seconds=1.0), elapsed_s=5.0)
        assert led.exhausted() == "seconds"
        assert led.reserve(_cost()) is None

    def test_rounds(self) -> None:
        led = Ledger(Budget(rounds=2))
        assert led.rounds_left() == 2
        led.end_round()
        led.end_round()
        assert led.rounds_left() == 0 and led.left().rounds == 0

    def test_owns(self) -> None:
        led = Ledger(Budget())
        r = led.reserve(_cost(0.1))
        assert r is not None and led.owns(r)
        assert not led.owns(Reservation(r.id, _cost(0.2)))
        led.settle(r, None)
        assert not led.owns(r)


# ==========================================================================================
# 2. Stateful machine: one ledger, random operations, bursts from several threads
# ==========================================================================================

# USD amounts are multiples of 1/1024: sums of them are exact in binary floating point, so the
# reference model can demand exact agreement with the ledger.
_Q = 1 / 1024


def _exact_costs(max_units: int = 64, max_tok: int = 40) -> st.SearchStrategy[CallCost]:
    return st.builds(
        lambda u, i, o: CallCost(usd=u * _Q, input_tokens=i, output_tokens=o),
        st.integers(0, max_units), st.integers(0, max_tok), st.integers(0, max_tok),
    )


_exact_budgets = st.builds(
    Budget,
    usd=st.none() | st.integers(1, 400).map(lambda u: u * _Q),
    tokens=st.none() | st.integers(1, 600),
    calls=st.none() | st.integers(1, 30),
)


def _check_invariant(led: Ledger) -> list[str]:
    """Violations of ``spent + reserved <= limit`` (read under the ledger's lock)."""
    with led._lock:
        r_usd, r_tok, r_calls = led._reserved_totals()
        b = led.budget
        bad = []
        if b.usd is not None and led.spent_usd + r_usd > b.usd + _EPS:
            bad.append(f"usd {led.spent_usd} + {r_usd} > {b.usd}")
        if b.tokens is not None and led.spent_tokens + r_tok > b.tokens:
            bad.append(f"tokens {led.spent_tokens} + {r_tok} > {b.tokens}")
        if b.calls is not None and led.calls + r_calls > b.calls:
            bad.append(f"calls {led.calls} + {r_calls} > {b.calls}")
        return bad


class LedgerMachine(RuleBasedStateMachine):
    """The ledger against a reference model (what is spent, what is outstanding)."""

    reservations = Bundle("reservations")

    @initialize(budget=_exact_budgets)
    def start(self, budget: Budget) -> None:
        self.led = Ledger(budget)
        self.spent = [0.0, 0, 0]  # usd, input tokens, output tokens
        self.calls = 0
        self.outstanding: dict[int, Reservation] = {}
        self.finished: list[Reservation] = []

    # ---- reference model
    def _fits(self, cost: CallCost, extra: Sequence[CallCost] = ()) -> bool:
        b = self.led.budget
        held = [*self.outstanding.values()]
        r_usd = sum(r.cost.usd for r in held) + sum(c.usd for c in extra)
        r_tok = sum(r.cost.tokens for r in held) + sum(c.tokens for c in extra)
        n = len(held) + len(extra)
        return ((b.calls is None or self.calls + n + 1 <= b.calls)
                and (b.usd is None or self.spent[0] + r_usd + cost.usd <= b.usd)
                and (b.tokens is None or self.spent[1] + self.spent[2] + r_tok + cost.tokens
                     <= b.tokens))

    # ---- rules
    @rule(target=reservations, cost=_exact_costs())
    def reserve(self, cost: CallCost) -> Any:
        expect = self._fits(cost)
        got = self.led.reserve(cost, "one")
        assert (got is not None) == expect, (cost, self.led)
        if got is None:
            return multiple()
        self.outstanding[got.id] = got
        return got

    @rule(target=reservations, costs=st.lists(_exact_costs(), min_size=1, max_size=6),
          all_or_nothing=st.booleans())
    def reserve_many(self, costs: list[CallCost], all_or_nothing: bool) -> Any:
        expect: list[bool] = []
        taken: list[CallCost] = []
        for c in costs:
            ok = self._fits(c, taken)
            expect.append(ok)
            if ok:
                taken.append(c)
        got, refused = self.led.reserve_many([(c, f"b{i}") for i, c in enumerate(costs)],
                                             all_or_nothing=all_or_nothing)
        if all_or_nothing and not all(expect):
            assert got == [] and refused is not None
            return multiple()
        assert [g is not None for g in got] == expect
        assert (refused is None) == all(expect)
        kept = [g for g in got if g is not None]
        for g in kept:
            self.outstanding[g.id] = g
        return multiple(*kept)

    @rule(res=consumes(reservations), data=st.data())
    def settle(self, res: Reservation, data: st.DataObject) -> None:
        actual = data.draw(st.none() | st.builds(
            lambda u, i, o: CallCost(u * _Q, i, o),
            st.integers(0, round(res.cost.usd / _Q)), st.integers(0, res.cost.input_tokens),
            st.integers(0, res.cost.output_tokens)))
        charged = self.led.settle(res, actual)
        assert charged == (res.cost if actual is None else actual)
        self.spent[0] += charged.usd
        self.spent[1] += charged.input_tokens
        self.spent[2] += charged.output_tokens
        self.calls += 1
        del self.outstanding[res.id]
        self.finished.append(res)

    @rule(res=consumes(reservations), count_call=st.booleans())
    def release(self, res: Reservation, count_call: bool) -> None:
        self.led.release(res, count_call=count_call)
        self.calls += count_call
        del self.outstanding[res.id]
        self.finished.append(res)

    @precondition(lambda self: bool(self.finished))
    @rule(data=st.data(), how=st.sampled_from(["settle", "settle-none", "release"]))
    def finishing_twice_raises(self, data: st.DataObject, how: str) -> None:
        res = data.draw(st.sampled_from(self.finished))
        with pytest.raises(ValueError, match="already settled or released"):
            if how == "release":
                self.led.release(res)
            else:
                self.led.settle(res, None if how == "settle-none" else _cost())

    @rule(threads=st.integers(2, 6), ops=st.integers(5, 40), seed=st.integers(0, 2**32 - 1))
    def concurrent_burst(self, threads: int, ops: int, seed: int) -> None:
        """Several threads reserve, settle and release at once while a watcher checks the
        invariant under the ledger's lock; every reservation is finished by its thread.

        The burst runs on a clone of the current ledger (same spend, same outstanding
        reservations): thread interleavings are not reproducible, and hypothesis needs the
        machine's own state to be.
        """
        src = self.led
        with src._lock:
            led = Ledger(src.budget, spent_usd=src.spent_usd,
                         spent_input_tokens=src.spent_input_tokens,
                         spent_output_tokens=src.spent_output_tokens, calls=src.calls)
            led._reserved = dict(src._reserved)
            led._ids = itertools.count(max(src._reserved, default=-1) + 10**6)
        totals = [[0.0, 0, 0, 0] for _ in range(threads)]  # usd, in, out, calls
        violations: list[str] = []
        stop = threading.Event()
        start = threading.Barrier(threads + 1)

        def watcher() -> None:
            start.wait()
            while not stop.is_set():
                violations.extend(_check_invariant(led))
                time.sleep(0)  # let the workers run between checks

        def worker(i: int) -> None:
            rng = random.Random(seed * 31 + i)
            held: list[Reservation] = []
            start.wait()
            for _ in range(ops):
                costs = [(CallCost(rng.randint(0, 32) * _Q, rng.randint(0, 20), rng.randint(0, 20)),
                          f"t{i}") for _ in range(rng.randint(1, 4))]
                got, _ = led.reserve_many(costs, all_or_nothing=rng.random() < 0.3)
                held.extend(g for g in got if g is not None)
                while held and (rng.random() < 0.6 or len(held) > 3):
                    res = held.pop(rng.randrange(len(held)))
                    self._finish_randomly(led, res, rng, totals[i])
            for res in held:
                self._finish_randomly(led, res, rng, totals[i])

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        w = threading.Thread(target=watcher)
        for t in [*workers, w]:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        w.join()
        assert not violations, violations[:5]
        assert not _check_invariant(led)
        assert led.overruns == []
        # Every thread finished its own reservations; what was outstanding before still is.
        assert set(led._reserved) == set(src._reserved)
        # Conservation: the clone's books are the start plus what the threads charged.
        assert led.spent_usd == src.spent_usd + sum(t[0] for t in totals)  # exact: 1/1024ths
        assert led.spent_input_tokens == src.spent_input_tokens + sum(t[1] for t in totals)
        assert led.spent_output_tokens == src.spent_output_tokens + sum(t[2] for t in totals)
        assert led.calls == src.calls + sum(t[3] for t in totals)

    @staticmethod
    def _finish_randomly(led: Ledger, res: Reservation, rng: random.Random,
                         acc: list[Any]) -> None:
        u = rng.random()
        if u < 0.2:
            counted = rng.random() < 0.5
            led.release(res, count_call=counted)
            acc[3] += counted
            return
        if u < 0.35:
            actual = None
        else:
            actual = CallCost(rng.randint(0, round(res.cost.usd / _Q)) * _Q,
                              rng.randint(0, res.cost.input_tokens),
                              rng.randint(0, res.cost.output_tokens))
        charged = led.settle(res, actual)
        acc[0] += charged.usd
        acc[1] += charged.input_tokens
        acc[2] += charged.output_tokens
        acc[3] += 1

    # ---- invariants, checked after every step
    @invariant()
    def within_limits(self) -> None:
        assert not _check_invariant(self.led)

    @invariant()
    def matches_the_model(self) -> None:
        led = self.led
        assert led.overruns == []
        assert led.spent_usd == self.spent[0]  # exact: binary fractions
        assert (led.spent_input_tokens, led.spent_output_tokens) == (self.spent[1], self.spent[2])
        assert led.calls == self.calls
        with led._lock:
            assert set(led._reserved) == set(self.outstanding)
        left = led.left()
        b = led.budget
        for name in ("usd", "tokens", "calls"):
            v = getattr(left, name)
            assert (v is None) == (getattr(b, name) is None)
            assert v is None or v >= 0


LedgerMachine.TestCase.settings = settings(
    max_examples=max(1, 40 * _N), stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerMachine = LedgerMachine.TestCase


# ==========================================================================================
# 3. Whole runs
# ==========================================================================================


@dataclass
class CheckedLedger(Ledger):
    """A ledger that checks ``spent + reserved <= limit`` after every change.

    The runtime builds its ledger inside ``Orchestra._invoke``; the tests swap this subclass in
    for the name ``Ledger`` in :mod:`orchestra.runtime` and read it back from ``instances``.
    """

    instances: ClassVar[list[CheckedLedger]] = []

    def __post_init__(self) -> None:
        self.violations: list[str] = []
        self.changes = 0
        CheckedLedger.instances.append(self)

    def _after(self, what: str) -> None:
        self.changes += 1
        self.violations.extend(f"after {what}: {v}" for v in _check_invariant(self))

    def reserve_many(self, costs: list[tuple[CallCost, str]], *,
                     all_or_nothing: bool = False) -> tuple[list[Reservation | None], str | None]:
        out = super().reserve_many(costs, all_or_nothing=all_or_nothing)
        self._after("reserve_many")
        return out

    def settle(self, reservation: Reservation, actual: CallCost | None) -> CallCost:
        out = super().settle(reservation, actual)
        self._after("settle")
        return out

    def release(self, reservation: Reservation, *, count_call: bool = False) -> None:
        super().release(reservation, count_call=count_call)
        self._after("release")


def _add(a: Any = 0, b: Any = 0) -> Any:
    return a + b


_ADD = ToolSpec(name="add", description="add two numbers", function=_add,
                parameters={"type": "object", "properties": {"a": {"type": "number"},
                                                             "b": {"type": "number"}}})
_PRICES = st.sampled_from([0.0, 0.0, 0.01, 0.15, 1.0, 3.0, 15.0, 75.0, 1_000.0, 100_000.0])


@st.composite
def pools(draw: st.DrawFn) -> Pool:
    n = draw(st.integers(1, 6))
    models = []
    for i in range(n):
        window = draw(st.sampled_from([128, 512, 4096, 32_768]))
        models.append(ModelSpec(
            name=f"m{i}", id=f"test/m{i}", input_price=draw(_PRICES), output_price=draw(_PRICES),
            context_window=window, max_output_tokens=draw(st.integers(1, min(window - 1, 800))),
            quality=draw(st.none() | st.floats(0, 1)),
        ))
    names = [m.name for m in models]
    # An answerer restricted to some models, so policies meet agents that may not use them all.
    some = tuple(draw(st.lists(st.sampled_from(names), min_size=1, max_size=n, unique=True)))
    agents = (
        AgentSpec(name="assistant", description="answers", tools=(_ADD,)),
        AgentSpec(name="expert", description="answers carefully", models=some,
                  system_prompt="You are an expert on {query}. Notes: {notes}"),
        AgentSpec(name="verifier", role="verify",
                  system_prompt="Judge whether the answer is correct. Reply SURE or UNSURE."),
        AgentSpec(name="refiner", role="refine",
                  system_prompt="Merge the answers into one; note conflicts."),
    )
    refiner = RefinerSpec(
        kind=draw(st.sampled_from(["llm", "vote", "last"])),
        model=draw(st.none() | st.sampled_from(names)),
        max_output_tokens=draw(st.none() | st.integers(1, 400)),
    )
    return Pool(name="prop", models=tuple(models), agents=agents, refiner=refiner,
                budget=Budget(usd=1.0))


@st.composite
def budgets(draw: st.DrawFn, pool: Pool) -> Budget:
    """Any subset of limits, tiny to large. USD is absolute or a multiple of a typical call to
    the pool (60 prompt + 100 output tokens), so runs with a few calls are common."""
    typical = sum(m.cost(60, 100) for m in pool.models) / len(pool.models)
    usd = draw(st.sampled_from(["none", "absolute", "relative", "relative"]))
    if usd == "none" or (usd == "relative" and typical == 0):
        usd_limit = None
    elif usd == "absolute":
        usd_limit = draw(st.sampled_from([1e-9, 1e-7, 1e-5, 1e-3, 0.1, 10.0]) | st.floats(1e-9, 1.0))
    else:
        usd_limit = typical * draw(st.sampled_from([0.2, 0.7, 1.0, 1.5, 3.0, 8.0, 30.0]))
    return Budget(
        usd=usd_limit,
        tokens=draw(st.sampled_from([None, None, 1, 40, 200, 1_000, 5_000, 50_000])),
        calls=draw(st.none() | st.integers(1, 25)),
        rounds=draw(st.none() | st.integers(1, 6)),
        seconds=draw(st.sampled_from([None, None, None, 0.002, 0.02, 0.2, 2.0])),
    )


@dataclass(frozen=True)
class Behaviour:
    """How the fake provider misbehaves (decided per request from a hash, so it is the same
    whatever order parallel calls arrive in)."""

    seed: int
    p_fail: float
    p_billed_unknown: float
    p_tool: float
    max_words: int
    max_latency_ms: float


_behaviours = st.builds(
    Behaviour, seed=st.integers(0, 2**32 - 1), p_fail=st.sampled_from([0.0, 0.1, 0.4]),
    p_billed_unknown=st.sampled_from([0.0, 0.1, 0.4]), p_tool=st.sampled_from([0.0, 0.3]),
    max_words=st.sampled_from([0, 5, 60, 2_000]), max_latency_ms=st.sampled_from([0.0, 1.0, 5.0]),
)

_WORDS = ["42", "A", "B", "the", "answer", "is", "forty-two", "Paris", "SURE", "UNSURE", "7"]


class ProviderBackend(FunctionBackend):
    """A misbehaving provider that keeps its own bill, independent of the runtime's ledger.

    At every call it also checks, through the run's ledger, that the request it receives is
    covered by an outstanding reservation (no call is ever sent unreserved).
    """

    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__(fn=self._reply, latency_s=self._latency)
        self.b = behaviour
        self.billed_usd = 0.0
        self.billed_tokens = 0
        self.unreserved: list[str] = []

    def _rng(self, req: CompletionRequest, salt: str) -> random.Random:
        key = repr((self.b.seed, salt, req.model.name, req.max_tokens, req.messages)).encode()
        return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))

    def _latency(self, req: CompletionRequest) -> float:
        return self._rng(req, "latency").uniform(0, self.b.max_latency_ms) / 1000

    def _reply(self, req: CompletionRequest) -> Any:
        rng = self._rng(req, "reply")
        u = rng.random()
        if u < self.b.p_fail:
            # A plain provider failure (raised as an exception object the backend wraps).
            return rng.choice([ConnectionError("connection reset"),
                               BackendError("rate limited", model=req.model.id, transient=True)])
        if u < self.b.p_fail + self.b.p_billed_unknown:
            return BackendError("timed out; the provider may have billed it", model=req.model.id,
                                transient=True, billed_unknown=True)
        if req.tools and rng.random() < self.b.p_tool:
            calls = [{"id": f"t{k}", "name": rng.choice(["add", "nope"]),
                      "arguments": rng.choice([{"a": 1, "b": 2}, {"a": "x"}, {}])}
                     for k in range(rng.randint(1, 3))]
            return Completion(text="", tool_calls=calls,
                              input_tokens=self.prompt_tokens_bound(req.model, req.messages),
                              output_tokens=rng.randint(0, req.max_tokens))
        # Often longer than max_tokens: FunctionBackend truncates, as a provider would.
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, self.b.max_words)))

    async def complete(self, request: CompletionRequest) -> Completion:
        prompt = self.prompt_tokens_bound(request.model, request.messages)
        worst = request.model.cost(prompt, request.max_tokens)
        led = CheckedLedger.instances[-1]
        with led._lock:
            covered = any(r.cost.input_tokens >= prompt
                          and r.cost.output_tokens >= request.max_tokens
                          and r.cost.usd >= worst - _EPS for r in led._reserved.values())
        if not covered:
            self.unreserved.append(f"{request.model.name} max_tokens={request.max_tokens}")
        try:
            comp = await super().complete(request)
        except BackendError as e:
            if e.billed_unknown:  # the invoice may include the whole call
                with self._lock:
                    self.billed_usd += worst
                    self.billed_tokens += prompt + request.max_tokens
            raise
        assert comp.output_tokens <= request.max_tokens
        with self._lock:
            self.billed_usd += request.model.cost(comp.input_tokens, comp.output_tokens)
            self.billed_tokens += comp.input_tokens + comp.output_tokens
        return comp


class RandomActionPolicy:
    """Random Think / Answer / Route actions; routes fan out to 1–8 random (agent, model) calls
    with random max_tokens and prompts (some longer than a small model's context window)."""

    name = "random-actions"

    def __init__(self, pool: Pool, seed: int, max_decisions: int) -> None:
        self.pool = pool
        self.rng = random.Random(seed)
        self.max_decisions = max_decisions
        self.decisions = 0

    def decide(self, view: RunView) -> Action:
        rng = self.rng
        self.decisions += 1
        if self.decisions > self.max_decisions:
            return Answer(reason="enough")
        u = rng.random()
        if u < 0.15:
            return Think(note=" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 30))))
        if u < 0.22:
            return Answer(text=rng.choice([None, "forty-two"]), reason="random answer")
        calls = []
        for _ in range(rng.randint(1, 8)):
            agent = rng.choice([None, *(a.name for a in self.pool.agents)])
            spec = self.pool.agent(agent) if agent else self.pool.answer_agent
            model = rng.choice([None, *(m.name for m in self.pool.models_for(spec))])
            prompt = rng.choice([None, "What is 6 x 7?", "word " * rng.randint(1, 3000)])
            max_tokens = rng.choice([None, 1, 2, 16, rng.randint(1, 5000)])
            calls.append(Call(agent=agent, model=model, prompt=prompt, max_tokens=max_tokens))
        return Route(calls, reason="random fan-out")


class Recording:
    """Delegates to a policy and keeps every view it saw and action it returned."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)
        self.views: list[RunView] = []
        self.actions: list[Action] = []

    def decide(self, view: RunView) -> Action:
        action = self.inner.decide(view)
        self.views.append(view)
        self.actions.append(action)
        return action


@st.composite
def policies(draw: st.DrawFn, pool: Pool) -> Any:
    kind = draw(st.sampled_from(["single", "cheapest", "strongest", "random", "cascade", "cascade",
                                 "ensemble", "ensemble", "custom", "custom", "custom"]))
    if kind == "custom":
        return RandomActionPolicy(pool, draw(st.integers(0, 2**32 - 1)), draw(st.integers(1, 14)))
    if kind == "single":
        return resolve_policy(f"single:{draw(st.sampled_from(pool.models)).name}", pool)
    params: dict[str, Any] = {}
    if kind == "random":
        params["seed"] = draw(st.integers(0, 1000))
    elif kind == "cascade":
        params["verifier_model"] = draw(st.sampled_from(["same", "cheapest"]))
        params["max_models"] = draw(st.none() | st.integers(1, 3))
    elif kind == "ensemble":
        params["k"] = draw(st.integers(1, 6))
        params["layers"] = draw(st.integers(1, 3))
        params["select"] = draw(st.sampled_from(["strongest", "cheapest"]))
    return resolve_policy(kind, pool, params)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Pool, Any, Budget, Behaviour, int, list[dict[str, str]]]:
    pool = draw(pools())
    policy = draw(policies(pool))
    history = draw(st.sampled_from([[], [{"role": "user", "content": "hi"},
                                         {"role": "assistant", "content": "hello there"}]]))
    return (pool, policy, draw(budgets(pool)), draw(_behaviours), draw(st.integers(0, 4)), history)


def _could_fit(call: Call, view: RunView, backend: ProviderBackend, min_output: int = 16) -> bool:
    """Whether the smallest version of ``call`` the runtime would send (``min_output`` output
    tokens, or the cap when lower) fits comfortably in what was left when the policy decided."""
    pool = view.pool
    agent = pool.agent(call.agent) if call.agent else pool.answer_agent
    model = pool.model(call.model) if call.model else pool.models_for(agent)[0]
    prompt = call.prompt if call.prompt is not None else view.query
    messages = build_messages(agent, model, prompt, query=view.query, notes=view.notes,
                              history=view.history)
    p = backend.prompt_tokens_bound(model, messages)
    cap = min(call.max_tokens or model.max_output_tokens, model.max_output_tokens,
              model.context_window - p)
    if cap <= 0:
        return False
    left: BudgetLeft = view.budget_left
    out = min(min_output, cap)
    if left.calls is not None and left.calls < 1:
        return False
    if left.tokens is not None and p + out > left.tokens:
        return False
    # "Comfortably": the runtime shaves a relative 1e-9 off the USD room for float safety.
    return left.usd is None or model.cost(p, out) <= left.usd * (1 - 1e-6)


def _run(pool: Pool, policy: Any, budget: Budget, behaviour: Behaviour, max_think: int,
         history: list[dict[str, str]]) -> tuple[RunResult, CheckedLedger, ProviderBackend,
                                                 MemoryTraceStore, Recording]:
    backend = ProviderBackend(behaviour)
    store = MemoryTraceStore()
    recording = Recording(policy)
    CheckedLedger.instances.clear()
    with patch.object(runtime_mod, "Ledger", CheckedLedger):
        orch = Orchestra(pool, policy=recording, budget=budget, backend=backend, store=store,
                         max_think_steps=max_think)
        result = orch.run("What is six times seven? Answer with a number.", history=history)
    assert len(CheckedLedger.instances) == 1
    return result, CheckedLedger.instances[0], backend, store, recording


@given(scenarios())
@settings(max_examples=max(1, 300 * _N), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_runs_never_overspend(scenario: tuple[Any, ...]) -> None:
    pool, policy, budget, behaviour, max_think, history = scenario
    result, led, backend, store, rec = _run(pool, policy, budget, behaviour, max_think, history)
    b = budget

    # -- the ledger: invariant at every change, nothing left reserved, no overrun
    assert not led.violations, led.violations[:5]
    assert led.changes > 0 or result.calls == 0
    assert not led._reserved, "a reservation was neither settled nor released"
    assert result.overruns == [] and led.overruns == []
    assert not backend.unreserved, f"calls sent without a covering reservation: {backend.unreserved}"

    # -- spend from the RunResult
    tokens = result.input_tokens + result.output_tokens
    assert _usd_ok(result.cost_usd, b.usd), (result.cost_usd, b.usd)
    assert b.tokens is None or tokens <= b.tokens
    assert b.calls is None or result.calls <= b.calls
    assert b.rounds is None or result.rounds <= b.rounds

    # -- spend recomputed from the stored trace
    events = store.events(result.trace_id)
    finished = [e for e in events if e["kind"] == "call_finished"]
    ev_usd = math.fsum(e["cost_usd"] for e in finished)
    ev_tokens = sum(e["input_tokens"] + e["output_tokens"] for e in finished)
    assert _usd_ok(ev_usd, b.usd)
    assert b.tokens is None or ev_tokens <= b.tokens
    # A call record counts its model requests (tool follow-ups included); the limit counts those.
    requests = sum(int(e.get("requests", 1)) for e in finished)
    assert b.calls is None or requests <= b.calls
    assert ev_usd == pytest.approx(result.cost_usd, rel=1e-9, abs=1e-15)
    assert ev_tokens == tokens and requests == result.calls
    assert len([e for e in events if e["kind"] == "call_started"]) == len(finished)
    refined = [e for e in events if e["kind"] == "refined"]
    assert len(refined) == result.rounds
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["kind"] == "run_started" and events[-1]["kind"] == "run_finished"
    assert events[-1]["stop_reason"] == result.stop_reason
    summary = store.get_run(result.trace_id)
    assert summary is not None and summary["cost_usd"] == result.cost_usd

    # -- what the provider would invoice (every request it received, tool follow-ups included)
    assert _usd_ok(backend.billed_usd, b.usd), (backend.billed_usd, b.usd)
    assert b.tokens is None or backend.billed_tokens <= b.tokens
    assert b.calls is None or len(backend.calls) <= b.calls
    # ... and the books agree with the invoice.
    assert led.spent_usd == pytest.approx(backend.billed_usd, rel=1e-9, abs=1e-15)
    assert led.spent_tokens == backend.billed_tokens
    assert led.calls == len(backend.calls)
    assert led.spent_usd == pytest.approx(result.cost_usd, rel=1e-9, abs=1e-15)

    # -- the run ended, and says why
    stop = result.stop_reason
    event(f"stop: {stop}")
    event(f"provider calls: {min(len(backend.calls), 10)}{'+' if len(backend.calls) >= 10 else ''}")
    if result.calls:
        event("some call failed" if any(e["error"] for e in finished) else "no call failed")
    assert stop in ("answered", "think_limit") or stop.startswith("budget:"), stop
    last = events[-2] if len(events) >= 2 else None
    if stop == "answered":
        assert isinstance(rec.actions[-1], Answer)
    elif stop == "think_limit":
        assert isinstance(rec.actions[-1], Think)
        assert rec.views[-1].think_steps >= max_think
    elif (last is not None and last["kind"] == "policy_decided" and last["action"] == "route"
          and not last["calls"]):
        # Stopped because none of the calls the policy asked for fit: check each one.
        action = rec.actions[-1]
        assert isinstance(action, Route)
        assert stop == f"budget:{last['dropped'][0]['limit']}"
        if any(d["limit"] == "seconds" for d in last["dropped"]):
            # The clock ran out between the decision and the reservation.
            assert b.seconds is not None and led.elapsed() >= b.seconds
        else:
            for call in action.calls:
                assert not _could_fit(call, rec.views[-1], backend), (
                    call, rec.views[-1].budget_left)
    else:
        # A limit left no room for another call: the policy was still asked (it may answer for
        # free) but wanted a call or a think, so the run stopped. The limit really is used up.
        assert not isinstance(rec.actions[-1], Answer)
        limit = stop.removeprefix("budget:")
        if limit == "rounds":
            assert b.rounds is not None and led.rounds >= b.rounds
        elif limit == "calls":
            assert b.calls is not None and led.calls >= b.calls
        elif limit == "tokens":
            assert b.tokens is not None and led.spent_tokens >= b.tokens
        elif limit == "seconds":
            assert b.seconds is not None and led.elapsed() >= b.seconds
        else:
            assert limit == "usd" and b.usd is not None and b.usd - led.spent_usd <= _EPS
            # No call to a priced model fits (a free model would, but the run stops anyway).
            assert all(m.cost(1, 1) > b.usd - led.spent_usd for m in pool.models
                       if (m.input_price or 0) > 0 and (m.output_price or 0) > 0)


@pytest.mark.parametrize("refiner", ["llm", "vote", "last"])
def test_failing_calls_that_may_have_been_billed_are_charged_in_full(refiner: str) -> None:
    """Every call times out after the provider may have billed it: the ledger keeps the whole
    worst case as spent, so a budget of two worst cases allows exactly two calls."""
    pool = Pool(
        name="t", models=(ModelSpec(name="m", id="test/m", input_price=1.0, output_price=2.0,
                                    max_output_tokens=100),),
        agents=(AgentSpec(name="a", system_prompt=""), AgentSpec(name="r", role="refine")),
        refiner=RefinerSpec(kind=refiner),  # type: ignore[arg-type]
    )
    behaviour = Behaviour(seed=0, p_fail=0.0, p_billed_unknown=1.0, p_tool=0.0, max_words=5,
                          max_latency_ms=0.0)
    query = "What is six times seven? Answer with a number."
    prompt = len(query.split()) + 1  # the test tokenizer: words + 1 per message
    worst = (prompt * 1.0 + 100 * 2.0) / 1e6
    budget = Budget(usd=2 * worst * (1 + 1e-9))

    class AlwaysOneCall:
        name = "always-one-call"

        def decide(self, view: RunView) -> Action:
            return Route([Call(agent="a", model="m")])

    result, _, backend, _, _ = _run(pool, AlwaysOneCall(), budget, behaviour, 0, [])
    assert len(backend.calls) == 2 and result.calls == 2
    assert result.cost_usd == pytest.approx(2 * worst)
    assert backend.billed_usd == pytest.approx(2 * worst)
    assert result.stop_reason == "budget:usd"
    assert result.answer is None
    assert all(e.kind != "call_finished" or e.error for e in result.events)  # type: ignore[union-attr]

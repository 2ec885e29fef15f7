"""The ledger: hard budget limits enforced by reserving each call's worst case before it is sent.

Invariant, for every limit L in (usd, tokens, calls): ``spent + reserved <= limit`` at all times.
A call is only sent after :meth:`Ledger.reserve` succeeded for it; its worst case is
``prompt_tokens × input_price + max_tokens × output_price`` where ``prompt_tokens`` is an upper
bound (exact for local and replayed models). Several calls reserve together (all or some, in
order, atomically under one lock) so parallel calls cannot interleave into an overspend. When the
call returns, :meth:`Ledger.settle` replaces the reservation by the real cost. If usage is unknown
(a call that timed out after the provider may have billed it), the whole reservation is kept as
spent; a settlement never charges less than zero, so a lying reply cannot refill the budget.

A provider that honours ``max_tokens`` cannot bill more than the reservation. One that does not
(or that reports more usage than reserved) is charged in full: the books keep the truth, the
excess is recorded as an :class:`Overrun`, and the ledger refuses every later reservation (limit
``"overrun"``), so the run stops at once. Hence, at all times,
``spent <= limit + sum(overrun excess)``.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestra.spec import Budget

__all__ = ["BudgetLeft", "CallCost", "Ledger", "Overrun", "Reservation"]

_EPS = 1e-12


@dataclass(frozen=True)
class CallCost:
    """The worst case (for a reservation) or the actual amount (for a settlement) of one call."""

    usd: float
    input_tokens: int
    output_tokens: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def at_least(self, other: CallCost) -> CallCost:
        """Each field the larger of this one's and ``other``'s."""
        return CallCost(usd=max(self.usd, other.usd),
                        input_tokens=max(self.input_tokens, other.input_tokens),
                        output_tokens=max(self.output_tokens, other.output_tokens))


@dataclass(frozen=True)
class Reservation:
    """A granted reservation; settle or release it exactly once."""

    id: int
    cost: CallCost
    label: str = ""


@dataclass(frozen=True)
class Overrun:
    """A call charged more than its reservation (a provider ignored ``max_tokens`` or billed
    more than the worst case)."""

    reservation_id: int
    label: str
    reserved: CallCost
    charged: CallCost

    @property
    def excess_usd(self) -> float:
        return max(0.0, self.charged.usd - self.reserved.usd)

    @property
    def excess_tokens(self) -> int:
        return max(0, self.charged.tokens - self.reserved.tokens)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], label: str = "") -> Overrun:
        """An overrun rebuilt from :meth:`to_dict`'s record (a resumed run's books). Token
        counts come back as totals (input tokens), which is all the excess needs."""
        return cls(reservation_id=-1, label=label,
                   reserved=CallCost(usd=float(d["reserved_usd"]),
                                     input_tokens=int(d["reserved_tokens"]), output_tokens=0),
                   charged=CallCost(usd=float(d["charged_usd"]),
                                    input_tokens=int(d["charged_tokens"]), output_tokens=0))

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON-ready: what was reserved, what was charged and the excess (USD and tokens)."""
        return {
            "reserved_usd": self.reserved.usd, "charged_usd": self.charged.usd,
            "excess_usd": self.excess_usd, "reserved_tokens": self.reserved.tokens,
            "charged_tokens": self.charged.tokens, "excess_tokens": self.excess_tokens,
        }


def _sane(actual: CallCost, fallback: CallCost) -> CallCost:
    """``actual`` with every negative or non-finite field replaced by ``fallback``'s: a reply's
    numbers can only add to the spend."""
    usd = actual.usd if math.isfinite(actual.usd) and actual.usd >= 0 else fallback.usd
    tin = actual.input_tokens if actual.input_tokens >= 0 else fallback.input_tokens
    tout = actual.output_tokens if actual.output_tokens >= 0 else fallback.output_tokens
    if (usd, tin, tout) == (actual.usd, actual.input_tokens, actual.output_tokens):
        return actual
    return CallCost(usd=usd, input_tokens=tin, output_tokens=tout)


@dataclass(frozen=True)
class BudgetLeft:
    """What remains of each limit (``None`` where there is no limit), as policies see it."""

    usd: float | None
    tokens: int | None
    calls: int | None
    rounds: int | None
    seconds: float | None
    spent_usd: float
    spent_tokens: int
    spent_calls: int
    rounds_done: int

    def fraction_usd(self) -> float | None:
        """Share of the USD budget still available, in [0, 1]."""
        if self.usd is None:
            return None
        total = self.usd + self.spent_usd
        return 1.0 if total <= 0 else max(0.0, self.usd / total)


@dataclass
class Ledger:
    """Tracks spend against a :class:`~orchestra.spec.Budget`; thread-safe.

    Args:
        budget: the limits.
        spent_usd / spent_input_tokens / spent_output_tokens / calls / rounds: starting totals
            (a resumed run starts from what its checkpoint recorded).
        elapsed_s: seconds already used by earlier attempts of the run.
    """

    budget: Budget
    spent_usd: float = 0.0
    spent_input_tokens: int = 0
    spent_output_tokens: int = 0
    calls: int = 0
    rounds: int = 0
    elapsed_s: float = 0.0
    overruns: list[Overrun] = field(default_factory=list)
    _reserved: dict[int, Reservation] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _ids: itertools.count = field(default_factory=itertools.count, repr=False)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    # ------------------------------------------------------------------ views
    @property
    def spent_tokens(self) -> int:
        return self.spent_input_tokens + self.spent_output_tokens

    def _reserved_totals(self) -> tuple[float, int, int]:
        usd = sum(r.cost.usd for r in self._reserved.values())
        tok = sum(r.cost.tokens for r in self._reserved.values())
        return usd, tok, len(self._reserved)

    def elapsed(self) -> float:
        """Seconds used so far, earlier attempts included."""
        return self.elapsed_s + (time.monotonic() - self._t0)

    def seconds_left(self) -> float | None:
        if self.budget.seconds is None:
            return None
        return max(0.0, self.budget.seconds - self.elapsed())

    def left(self) -> BudgetLeft:
        """What is left of every limit, reservations counted as spent."""
        with self._lock:
            r_usd, r_tok, r_calls = self._reserved_totals()
            b = self.budget
            return BudgetLeft(
                usd=None if b.usd is None else max(0.0, b.usd - self.spent_usd - r_usd),
                tokens=None if b.tokens is None else max(0, b.tokens - self.spent_tokens - r_tok),
                calls=None if b.calls is None else max(0, b.calls - self.calls - r_calls),
                rounds=None if b.rounds is None else max(0, b.rounds - self.rounds),
                seconds=self.seconds_left(),
                spent_usd=self.spent_usd,
                spent_tokens=self.spent_tokens,
                spent_calls=self.calls,
                rounds_done=self.rounds,
            )

    def exhausted(self) -> str | None:
        """The name of a limit that leaves no room for any further call (``"overrun"`` once a
        call was charged more than its reservation), or None."""
        if self.overruns:
            return "overrun"
        left = self.left()
        if left.calls is not None and left.calls <= 0:
            return "calls"
        if left.usd is not None and left.usd <= _EPS:
            return "usd"
        if left.tokens is not None and left.tokens <= 0:
            return "tokens"
        if left.seconds is not None and left.seconds <= 0:
            return "seconds"
        return None

    # ------------------------------------------------------------------ reservations
    def _fits(self, cost: CallCost, r_usd: float, r_tok: int, r_calls: int) -> str | None:
        b = self.budget
        if self.overruns:
            return "overrun"
        if b.calls is not None and self.calls + r_calls + 1 > b.calls:
            return "calls"
        if b.usd is not None and self.spent_usd + r_usd + cost.usd > b.usd + _EPS:
            return "usd"
        if b.tokens is not None and self.spent_tokens + r_tok + cost.tokens > b.tokens:
            return "tokens"
        if b.seconds is not None and self.seconds_left() == 0.0:
            return "seconds"
        return None

    def check(self, cost: CallCost) -> str | None:
        """Which limit a reservation of ``cost`` would break now (None if it fits)."""
        with self._lock:
            return self._fits(cost, *self._reserved_totals())

    def reserve(self, cost: CallCost, label: str = "") -> Reservation | None:
        """Reserve one call's worst case; None when it does not fit."""
        got, _ = self.reserve_many([(cost, label)], all_or_nothing=True)
        return got[0] if got else None

    def reserve_many(
        self, costs: list[tuple[CallCost, str]], *, all_or_nothing: bool = False
    ) -> tuple[list[Reservation | None], str | None]:
        """Reserve several calls together, atomically.

        Calls are taken in order; one that does not fit is skipped (``None`` in its place) and
        later, smaller ones may still fit. With ``all_or_nothing`` either all are reserved or none.

        Returns:
            The reservations (``None`` for refused calls) and the first limit that refused one.
        """
        with self._lock:
            r_usd, r_tok, r_calls = self._reserved_totals()
            out: list[Reservation | None] = []
            refused: str | None = None
            for cost, label in costs:
                if cost.usd < 0 or cost.input_tokens < 0 or cost.output_tokens < 0:
                    raise ValueError(f"a reservation must be non-negative (got {cost!r})")
                why = self._fits(cost, r_usd, r_tok, r_calls)
                if why is not None:
                    refused = refused or why
                    out.append(None)
                    continue
                granted = Reservation(next(self._ids), cost, label)
                out.append(granted)
                r_usd += cost.usd
                r_tok += cost.tokens
                r_calls += 1
            if all_or_nothing and refused is not None:
                return [], refused
            for r in out:
                if r is not None:
                    self._reserved[r.id] = r
            return out, refused

    def settle(self, reservation: Reservation, actual: CallCost | None) -> CallCost:
        """Replace a reservation by the call's real cost.

        Args:
            reservation: what :meth:`reserve` granted.
            actual: the measured cost; ``None`` when unknown (the reservation is charged in full).
                A negative or non-finite field is unknown too: the reservation's is charged.

        Returns:
            What was charged: the real cost. It cannot exceed the reservation while the prompt
            estimate is an upper bound and the provider honours ``max_tokens``; if a provider
            ever bills more, the books record the truth, :attr:`overruns` records the excess
            (see :meth:`overrun_of`) and every later reservation is refused.
        """
        with self._lock:
            if self._reserved.pop(reservation.id, None) is None:
                raise ValueError(f"reservation {reservation.id} was already settled or released")
            charged = reservation.cost if actual is None else _sane(actual, reservation.cost)
            if charged.usd > reservation.cost.usd + _EPS or charged.tokens > reservation.cost.tokens:
                self.overruns.append(Overrun(reservation.id, reservation.label, reservation.cost,
                                             charged))
            self.spent_usd += charged.usd
            self.spent_input_tokens += charged.input_tokens
            self.spent_output_tokens += charged.output_tokens
            self.calls += 1
            return charged

    def overrun_of(self, reservation: Reservation) -> Overrun | None:
        """The overrun recorded when ``reservation`` was settled, if any."""
        with self._lock:
            return next((o for o in self.overruns if o.reservation_id == reservation.id), None)

    def release(self, reservation: Reservation, *, count_call: bool = False) -> None:
        """Drop a reservation for a call that was not sent or was not billed."""
        with self._lock:
            if self._reserved.pop(reservation.id, None) is None:
                raise ValueError(f"reservation {reservation.id} was already settled or released")
            if count_call:
                self.calls += 1

    def owns(self, reservation: Reservation) -> bool:
        """Whether ``reservation`` is outstanding in this ledger (False after a resume)."""
        with self._lock:
            held = self._reserved.get(reservation.id)
            # Ids restart in a new process: a resumed call's old id may name another's.
            return (held is not None and held.cost == reservation.cost
                    and held.label == reservation.label)

    def end_round(self) -> None:
        with self._lock:
            self.rounds += 1

    def rounds_left(self) -> int | None:
        return None if self.budget.rounds is None else self.budget.rounds - self.rounds

    @property
    def reserved_usd(self) -> float:
        with self._lock:
            return self._reserved_totals()[0]


def max_output_that_fits(
    usd_left: float | None,
    tokens_left: int | None,
    prompt_tokens: int,
    input_price: float,
    output_price: float,
    cap: int,
) -> int:
    """The largest ``max_tokens`` whose worst case fits in what is left (0 if even the prompt
    does not fit)."""
    best = cap
    if tokens_left is not None:
        best = min(best, tokens_left - prompt_tokens)
    if usd_left is not None:
        prompt_usd = prompt_tokens * input_price / 1e6
        room = usd_left - prompt_usd
        if room < 0:
            return 0
        # Beyond the cap, the cap binds (and a huge budget, 1e303, makes this quotient inf,
        # which floor cannot convert).
        if output_price > 0 and room * 1e6 / output_price < best + 1:
            n = math.floor(room * 1e6 / output_price + 1e-9)
            # Step down past any float rounding so the worst case really fits.
            while n > 0 and prompt_usd + n * output_price / 1e6 > usd_left + _EPS:
                n -= 1
            best = min(best, n)
    return max(0, best)

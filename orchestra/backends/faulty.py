"""A litellm provider that misbehaves on purpose: ``faulty/<model>``.

The standing fault suite (``tests/unit/test_provider_faults.py``) and the fault campaign
(``benchmarks/faults.py``) send real runs through :class:`~orchestra.backends.litellm_client.
LiteLLMBackend` to this in-process ``litellm.CustomLLM``, which injects one fault per request and
keeps what it *billed*, the way a provider's invoice would. The budget must stay hard against it.

Fault kinds (:data:`FAULT_KINDS`), one per request:

``ok``                 an honest reply: 1..``max_tokens`` words, true usage.
``timeout``            generates (and bills) an answer, then raises ``litellm.Timeout``.
``rate_limit``         429 before any generation; not billed.
``server_error``       5xx before any generation; not billed.
``malformed``          a 200 whose message is unusable (no message, or non-text content); billed.
``no_choices``         a 200 with usage but an empty ``choices``; billed.
``usage_negative``     true reply, usage with negative counts; billed the truth.
``usage_missing``      true reply, no usage (litellm reports zeros); billed the truth.
``usage_understated``  true reply, usage below the truth; billed the truth.
``usage_overstated``   true reply, usage above the truth; billed what it reported.
``ignore_max_tokens``  more words than ``max_tokens``, true usage; billed the truth.

Tokens are whitespace words (:func:`orchestra.testing.count_tokens`; a prompt is its words plus
one per message), and the provider registers :class:`~orchestra.backends.litellm_client.
ProviderHooks` with exact counts, as the in-process ``local`` and ``replay`` providers do.

A run picks its plan through its metadata: ``Orchestra.run(query, meta={"fault_plan": plan.id})``
with a plan from :func:`new_plan`.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestra.backends.pricing import import_litellm
from orchestra.backends.words import count_tokens, prompt_tokens

if TYPE_CHECKING:
    from orchestra.spec import ModelSpec

__all__ = [
    "FAULT_KINDS",
    "PROVIDER",
    "VIOLATIONS",
    "Audit",
    "Bill",
    "FaultPlan",
    "audit_run",
    "drop_plan",
    "new_plan",
    "register_faulty_provider",
    "register_prices",
]

PROVIDER = "faulty"
FAULT_KINDS = (
    "ok", "timeout", "rate_limit", "server_error", "malformed", "no_choices", "usage_negative",
    "usage_missing", "usage_understated", "usage_overstated", "ignore_max_tokens",
)
#: Faults after which the provider billed nothing.
UNBILLED = frozenset({"rate_limit", "server_error"})
_WORDS = ("forty", "two", "is", "the", "answer", "six", "times", "seven", "maybe", "42")


@dataclass(frozen=True)
class Bill:
    """One request as the provider invoices it (tokens; USD is tokens × the model's prices)."""

    model: str
    fault: str
    input_tokens: int
    output_tokens: int
    max_tokens: int


@dataclass
class FaultPlan:
    """Which fault each request gets, and what the provider billed.

    Args:
        weights: relative weight of each fault kind (kinds left out never happen).
        seed: request ``i`` draws its fault and its lengths from ``Random(f"{seed}:{i}")``.
        script: faults for the first requests, in order, before ``weights`` take over.

    Attributes:
        bills: every billed request, in arrival order (thread-safe).
        faults: every request's fault, billed or not, in arrival order.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: {"ok": 1.0})
    seed: int = 0
    script: Sequence[str] = ()
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    bills: list[Bill] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    _counter: Any = field(default_factory=itertools.count, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(FAULT_KINDS))
        unknown += sorted(set(self.script) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {list(FAULT_KINDS)}")
        self._kinds = [k for k, w in self.weights.items() if w > 0]
        self._cum = list(itertools.accumulate(self.weights[k] for k in self._kinds))
        if not self._kinds and not self.script:
            raise ValueError("a fault plan needs a positive weight or a script")

    def draw(self) -> tuple[str, random.Random]:
        """The next request's fault and its own random generator."""
        with self._lock:
            i = next(self._counter)
        rng = random.Random(f"{self.seed}:{i}")
        if i < len(self.script):
            kind = self.script[i]
        else:
            kind = rng.choices(self._kinds, cum_weights=self._cum)[0]
        with self._lock:
            self.faults.append(kind)
        return kind, rng

    def bill(self, model: str, fault: str, input_tokens: int, output_tokens: int,
             max_tokens: int) -> None:
        with self._lock:
            self.bills.append(Bill(model, fault, input_tokens, output_tokens, max_tokens))

    def billed_usd(self, prices: Callable[[str], tuple[float, float]]) -> float:
        """The invoice in USD; ``prices(model)`` gives (input, output) USD per 1M tokens."""
        total = 0.0
        for b in list(self.bills):
            pin, pout = prices(b.model)
            total += (b.input_tokens * pin + b.output_tokens * pout) / 1e6
        return total

    @property
    def billed_tokens(self) -> int:
        return sum(b.input_tokens + b.output_tokens for b in list(self.bills))


_PLANS: dict[str, FaultPlan] = {}
_PLANS_LOCK = threading.Lock()


def new_plan(weights: Mapping[str, float] | None = None, *, seed: int = 0,
             script: Sequence[str] = ()) -> FaultPlan:
    """A registered plan; pass ``meta={"fault_plan": plan.id}`` to the run that should use it."""
    plan = FaultPlan(weights=dict(weights or {"ok": 1.0}), seed=seed, script=tuple(script))
    with _PLANS_LOCK:
        _PLANS[plan.id] = plan
    return plan


def drop_plan(plan: FaultPlan) -> None:
    """Forget a plan (a long campaign registers many)."""
    with _PLANS_LOCK:
        _PLANS.pop(plan.id, None)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _reply(call: Any) -> Any:
    """The provider's answer to one request (a :class:`~orchestra.backends._provider.Call`):
    the next fault of the run's plan, as litellm's response (or the exception it raises)."""
    litellm = import_litellm()  # (imported already: litellm is calling)
    from litellm.types.utils import Usage

    model, messages, model_response = call.model, call.messages, call.model_response
    meta = call.metadata
    plan = _PLANS.get(str(meta.get("fault_plan")))
    if plan is None:
        raise litellm.BadRequestError(
            message=f"faulty: no fault plan {meta.get('fault_plan')!r}; run with "
                    "meta={'fault_plan': new_plan(...).id}",
            model=f"{PROVIDER}/{model}", llm_provider=PROVIDER)
    max_tokens = call.max_tokens or 16
    kind, rng = plan.draw()
    if kind == "rate_limit":
        raise litellm.RateLimitError(message="faulty: 429 slow down",
                                     model=f"{PROVIDER}/{model}", llm_provider=PROVIDER)
    if kind == "server_error":
        cls = rng.choice([litellm.InternalServerError, litellm.ServiceUnavailableError])
        raise cls(message="faulty: 5xx", model=f"{PROVIDER}/{model}", llm_provider=PROVIDER)
    n_in = prompt_tokens(messages)
    n_out = (rng.randint(max_tokens + 1, 3 * max_tokens + 5) if kind == "ignore_max_tokens"
             else rng.randint(1, max_tokens))
    text = _words(rng, n_out)
    if kind == "timeout":
        plan.bill(model, kind, n_in, n_out, max_tokens)
        raise litellm.Timeout(message="faulty: timed out after generating",
                              model=f"{PROVIDER}/{model}", llm_provider=PROVIDER)
    rep_in, rep_out = n_in, n_out
    if kind == "usage_negative":
        rep_in, rep_out = rng.choice([(-n_in, n_out), (n_in, -n_out), (-1, -10**6)])
    elif kind == "usage_understated":
        rep_in, rep_out = rng.choice([(n_in // 2 or 1, n_out), (n_in, n_out // 3),
                                      (1, 0)])
    elif kind == "usage_overstated":  # within the reservation, or beyond it
        if rng.random() < 0.5:
            rep_out = rng.randint(n_out, max_tokens)
        else:
            rep_in, rep_out = n_in + rng.randint(0, 50), max_tokens + rng.randint(1, max_tokens)
    billed = (rep_in, rep_out) if kind == "usage_overstated" else (n_in, n_out)
    plan.bill(model, kind, billed[0], billed[1], max_tokens)

    model_response.id = f"chatcmpl-faulty-{uuid.uuid4().hex}"
    model_response.created = int(time.time())
    model_response.model = f"{PROVIDER}/{model}"
    if kind == "no_choices":
        model_response.choices = []
    elif kind == "malformed":
        if rng.random() < 0.5:
            model_response.choices[0].message = None  # litellm itself fails on this
        else:
            model_response.choices[0].message.content = {"text": text}  # not a string
    else:
        model_response.choices[0].message.content = text
        model_response.choices[0].finish_reason = "stop"
    if kind != "usage_missing":
        model_response.usage = Usage(prompt_tokens=rep_in, completion_tokens=rep_out,
                                     total_tokens=rep_in + rep_out)
    elif rng.random() < 0.5:
        model_response.usage = None
    return model_response


@functools.cache
def _provider_class() -> Any:
    """The provider class, built on first use (importing litellm is slow)."""
    from orchestra.backends._provider import InProcessProvider

    class FaultyProvider(InProcessProvider):
        """litellm provider ``faulty``: injects the faults of the run's :class:`FaultPlan`."""

        provider = PROVIDER
        purpose = "orchestra's fault suite"
        no_tools = "faulty: the fault suite's models make no tool calls"

        # Its responses are litellm's own, malformed ones included (no choices, no usage, a
        # non-string content), which no Reply describes: both entry points build them.

        def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
            return _reply(self.call(model, messages, args, kwargs))

        async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any
                              ) -> Any:
            return _reply(self.call(model, messages, args, kwargs))

    return FaultyProvider


_PRICED: set[str] = set()


def register_prices(models: Iterable[ModelSpec]) -> None:
    """Put ``faulty/…`` models in litellm's cost map (once per model id).

    Only for speed: after every call litellm computes a cost of its own (orchestra never uses
    it: the ledger prices calls with the pool's prices), and for a model missing from its cost
    map that goes through a slow failure path (about half of a call's time here).
    """
    new = {m.id: m for m in models if m.provider == PROVIDER and m.id not in _PRICED}
    if not new:
        return
    litellm = import_litellm()
    litellm.register_model({
        m.id: {"input_cost_per_token": (m.input_price or 0.0) / 1e6,
               "output_cost_per_token": (m.output_price or 0.0) / 1e6,
               "litellm_provider": PROVIDER, "mode": "chat", "max_tokens": m.max_output_tokens}
        for m in new.values()
    })
    _PRICED.update(new)


def register_faulty_provider() -> Any:
    """Register the ``faulty`` provider with litellm (idempotent, thread-safe)."""
    handler, _ = _provider_class().register()
    return handler


def _hooks() -> Any:
    from orchestra.backends.litellm_client import ProviderHooks

    return ProviderHooks(
        setup=register_faulty_provider,
        prompt_tokens=lambda model, messages: prompt_tokens(messages),
        billed_tokens=lambda model, messages, text: (prompt_tokens(messages), count_tokens(text)),
    )


def _register_hooks() -> None:
    from orchestra.backends.litellm_client import register_provider_hooks

    register_provider_hooks(PROVIDER, _hooks)


_register_hooks()


# ------------------------------------------------------------------------------ auditing a run
#: What :func:`audit_run` can find wrong, one key per property.
VIOLATIONS = (
    "under_recorded",         # the recorded spend is below what the provider billed
    "unrecorded_overspend",   # spend above a limit beyond the recorded overrun excess
    "overrun_without_cause",  # an overrun although no request billed past max_tokens
    "overrun_mismatch",       # an overrun's numbers disagree with its call's events
    "sent_after_overrun",     # a call started after an overrun
    "bad_stop",               # a stop reason that does not fit what happened
    "events_lost",            # the store's events differ from the run's
    "summary_mismatch",       # the store's run summary disagrees with the result
)
_TOL = 1e-12


@dataclass
class Audit:
    """What one run against a :class:`FaultPlan` billed, recorded and broke.

    Attributes:
        billed_usd / billed_tokens: the provider's invoice.
        recorded_usd / recorded_tokens: what the run charged.
        overrun_usd: the recorded excess over reservations.
        violations: ``{kind: [message, ...]}`` for the kinds of :data:`VIOLATIONS` found.
    """

    billed_usd: float
    billed_tokens: int
    recorded_usd: float
    recorded_tokens: int
    overrun_usd: float
    violations: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, message: str) -> None:
        self.violations.setdefault(kind, []).append(message)


def audit_run(pool: Any, budget: Any, plan: FaultPlan, result: Any, store: Any) -> Audit:
    """Check one finished run against the provider's invoice, its limits and the trace store.

    Args:
        pool / budget: the run's :class:`~orchestra.spec.Pool` and
            :class:`~orchestra.spec.Budget`.
        plan: the fault plan the run used (alone).
        result: its :class:`~orchestra.runtime.RunResult`.
        store: the :class:`~orchestra.trace.store.TraceStore` it wrote to.
    """
    from orchestra.trace.events import event_to_dict

    b = budget
    billed = plan.billed_usd(lambda m: (pool.model(m).input_price or 0.0,
                                        pool.model(m).output_price or 0.0))
    tokens = result.input_tokens + result.output_tokens
    overruns = result.overruns
    excess_usd = math.fsum(o["excess_usd"] for o in overruns)
    excess_tok = sum(o["excess_tokens"] for o in overruns)
    a = Audit(billed, plan.billed_tokens, result.cost_usd, tokens, excess_usd)
    # -- never below the invoice
    if result.cost_usd < billed - _TOL - 1e-9 * billed or tokens < plan.billed_tokens:
        a.add("under_recorded", f"recorded ${result.cost_usd!r}/{tokens} tok < billed "
                                f"${billed!r}/{plan.billed_tokens} tok")
    # -- above a limit only by the recorded excess (the invoice's spend and the books')
    if b.usd is not None and max(billed, result.cost_usd) > b.usd + excess_usd + _TOL + 1e-12 * b.usd:
        a.add("unrecorded_overspend", f"${max(billed, result.cost_usd)!r} > limit ${b.usd!r} "
                                      f"+ recorded excess ${excess_usd!r}")
    if b.tokens is not None and max(plan.billed_tokens, tokens) > b.tokens + excess_tok:
        a.add("unrecorded_overspend", f"{max(plan.billed_tokens, tokens)} tokens > limit "
                                      f"{b.tokens} + recorded excess {excess_tok}")
    if b.calls is not None and result.calls > b.calls:
        a.add("unrecorded_overspend", f"{result.calls} calls > limit {b.calls}")
    if b.rounds is not None and result.rounds > b.rounds:
        a.add("unrecorded_overspend", f"{result.rounds} rounds > limit {b.rounds}")
    if overruns and not {"ignore_max_tokens", "usage_overstated"} & set(plan.faults):
        a.add("overrun_without_cause", f"{len(overruns)} overrun(s), faults {plan.faults}")
    # -- the trace: every event stored, every call once, overruns on their calls
    events = store.events(result.trace_id)
    mine = [json.loads(json.dumps(event_to_dict(e), default=str)) for e in result.events]
    if events != mine or [e["seq"] for e in events] != list(range(len(events))):
        lost = len({e["seq"] for e in mine} - {e["seq"] for e in events})
        a.add("events_lost", f"{lost} of {len(mine)} events missing, or stored ones differ")
    started = {e["call_id"]: e for e in events if e["kind"] == "call_started"}
    finished = [e for e in events if e["kind"] == "call_finished"]
    if sorted(started) != sorted(e["call_id"] for e in finished):
        a.add("events_lost", "call_started and call_finished events do not pair up")
    traced = [e for e in finished if e.get("overrun")]
    # (Parallel calls finish in any order: the result lists them in the state's order.)
    if sorted(e["call_id"] for e in traced) != sorted(o["call_id"] for o in overruns):
        a.add("overrun_mismatch", "the run's overruns are not its calls' overruns")
    for e in traced:
        o = e["overrun"]
        start = started.get(e["call_id"]) or {}
        if (o["reserved_usd"] != start.get("reserved_usd") or o["charged_usd"] != e["cost_usd"]
                or not (o["excess_usd"] > 0 or o["excess_tokens"] > 0)):
            a.add("overrun_mismatch", f"call {e['call_id']}: {o} vs its events")
    # -- the run ended, and says why
    stop = result.stop_reason
    if overruns:
        if stop != "budget_overrun":
            a.add("bad_stop", f"{stop!r} after an overrun")
        first = min(e["seq"] for e in traced) if traced else len(events)
        late = [e for e in events if e["kind"] == "call_started" and e["seq"] > first]
        if late:
            a.add("sent_after_overrun", f"{len(late)} call(s) started after the overrun")
    elif not (stop in ("answered", "think_limit") or stop.startswith("budget:")):
        a.add("bad_stop", f"{stop!r} without an overrun")
    row = store.get_run(result.trace_id)
    want = {"status": "budget" if stop.startswith("budget") else "ok", "stop_reason": stop,
            "cost_usd": result.cost_usd, "calls": result.calls, "overruns": overruns}
    got = {k: (row or {}).get(k) for k in want}
    if got != want:
        a.add("summary_mismatch", f"stored summary {got} != {want}")
    return a

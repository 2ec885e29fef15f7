"""Fault campaign: do budgets stay hard, and is nothing lost, against a misbehaving provider?

Run from the repository root::

    .venv/bin/python benchmarks/faults.py                 # 10,000 faulty + 10,000 honest runs
    .venv/bin/python benchmarks/faults.py --runs 500      # a quick look

Every run goes through the real ``LiteLLMBackend`` → ``litellm.acompletion`` → the in-process
provider ``faulty/<model>`` (:mod:`orchestra.backends.faulty`), which injects one fault per
request and keeps its own invoice, and writes its trace to one SQLite trace store (no durable
checkpointer). Scenarios are drawn from a seeded generator: 1–4 models with random prices,
mostly parallel fan-out (``ensemble`` k=1–4 over 1–3 layers; also ``cascade`` and ``single``),
an ``llm``/``vote``/``last`` refiner, and random limits (USD from half a call's worst case to
40 of them, rounds, tokens, calls). Runs go ``--concurrency`` at a time on one event loop.

Each faulty run has a main fault kind (the kinds take turns) that hits each request with a
probability drawn from 0.2–1.0; the others are honest. The honest side runs the same scenarios
(the same seeds) against the same provider with no faults, in the same process.

Each run is checked by :func:`orchestra.backends.faulty.audit_run` (the invoice, the limits,
the store's events and summary); the campaign counts, per side and per fault kind: runs, lost
runs (the run raised, or the store has no finished summary for it), runs whose books are below
the invoice, unrecorded overspends, overruns detected (and runs that overspent a limit, every
one of which must carry them), events lost, and stop reasons.

Results go to ``benchmarks/results/faults.json``; a table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from runtime_overhead import machine_info, write_results

from orchestra.backends import faulty
from orchestra.backends.litellm_client import LiteLLMBackend
from orchestra.runtime import Orchestra
from orchestra.spec import Budget, Pool
from orchestra.testing import make_pool
from orchestra.trace.store import SQLiteTraceStore, TraceStore

RESULTS = ROOT / "results" / "faults.json"
QUERY = "What is six times seven? Answer with a number."
KINDS = [k for k in faulty.FAULT_KINDS if k != "ok"]


def scenario(seed: int) -> dict[str, Any]:
    """One run's pool, policy and limits, from its seed alone."""
    rng = random.Random(seed)
    n = rng.choice([1, 2, 3, 3, 4, 4])
    prices = tuple((rng.choice([0.1, 0.5, 1.0, 3.0]), rng.choice([0.2, 1.0, 2.0, 15.0]))
                   for _ in range(n))
    max_out = rng.choice([16, 32, 64])
    pool = make_pool(prices, provider=faulty.PROVIDER, max_output_tokens=max_out,
                     refiner=rng.choice(["vote", "llm", "last"]))
    worst = max(m.cost(60, max_out) for m in pool.models)  # about one call's worst case
    policy = rng.choice(["ensemble"] * 4 + ["cascade", "single"])
    params: dict[str, Any] | None = None
    if policy == "ensemble":
        params = {"k": rng.randint(1, 4), "layers": rng.randint(1, 3)}
    elif policy == "single":
        policy = f"single:{rng.choice(pool.models).name}"
    budget = Budget(
        usd=rng.choice([None, rng.uniform(0.5, 40.0) * worst, rng.uniform(0.5, 4.0) * worst]),
        rounds=rng.choice([None, 1, 2, 3, 4]),
        tokens=rng.choice([None, None, 150, 400, 1000, 4000]),
        calls=rng.choice([None, None, 1, 2, 3, 5, 8, 12, 20]),
    )
    if budget.rounds is None and budget.usd is None and budget.calls is None:
        budget = budget.merged(rounds=3)
    return {"pool": pool, "policy": policy, "params": params, "budget": budget}


def _new_tally() -> dict[str, Any]:
    return {"runs": 0, "lost_runs": 0, "requests": 0, "billed_requests": 0,
            "under_recorded_runs": 0, "unrecorded_overspends": 0, "overruns_detected": 0,
            "runs_with_overrun": 0, "runs_over_a_limit": 0, "max_spend_over_limit": 0.0,
            "events": 0, "events_lost": 0, "violations": Counter(), "stop_reasons": Counter(),
            "billed_usd": 0.0, "recorded_usd": 0.0, "lost_examples": [], "violation_examples": []}


def _tally(t: dict[str, Any], run: dict[str, Any]) -> None:
    t["runs"] += 1
    t["requests"] += run["requests"]
    t["billed_requests"] += run["billed_requests"]
    if run.get("lost"):
        t["lost_runs"] += 1
        if len(t["lost_examples"]) < 5:
            t["lost_examples"].append(run["lost"])
        return
    v = run["violations"]
    t["violations"].update({k: 1 for k in v})
    t["under_recorded_runs"] += "under_recorded" in v
    t["unrecorded_overspends"] += "unrecorded_overspend" in v
    t["events_lost"] += run["events_lost"]
    t["events"] += run["events"]
    t["overruns_detected"] += run["overruns"]
    t["runs_with_overrun"] += run["overruns"] > 0
    t["runs_over_a_limit"] += run["over_limit"] > 1.0
    t["max_spend_over_limit"] = max(t["max_spend_over_limit"], run["over_limit"])
    t["stop_reasons"][run["stop"]] += 1
    t["billed_usd"] += run["billed_usd"]
    t["recorded_usd"] += run["recorded_usd"]
    if v and len(t["violation_examples"]) < 5:
        t["violation_examples"].append({"seed": run["seed"], "violations": v})


async def one_run(seed: int, weights: dict[str, float], store: TraceStore,
                  backend: LiteLLMBackend) -> dict[str, Any]:
    s = scenario(seed)
    plan = faulty.new_plan(weights, seed=seed)
    pool: Pool = s["pool"]
    budget: Budget = s["budget"]
    out: dict[str, Any] = {"seed": seed}
    try:
        orch = Orchestra(pool, policy=s["policy"], policy_params=s["params"], budget=budget,
                         backend=backend, store=store)
        rid = f"faults-{seed}-{plan.id[:8]}"
        try:
            result = await orch.arun(QUERY, meta={"fault_plan": plan.id}, run_id=rid)
        except Exception as e:  # noqa: BLE001 - a lost run: whatever was paid, no result came back
            out["lost"] = {"seed": seed, "error": f"{type(e).__name__}: {e}"[:300]}
            return out
        finally:
            out["requests"] = len(plan.faults)
            out["billed_requests"] = len(plan.bills)
        row = store.get_run(rid)
        if row is None or row.get("status") == "running":
            out["lost"] = {"seed": seed, "error": "no finished run in the store"}
            return out
        audit = faulty.audit_run(pool, budget, plan, result, store)
        limits = [max(audit.billed_usd, audit.recorded_usd) / budget.usd if budget.usd else 0.0,
                  max(audit.billed_tokens, audit.recorded_tokens) / budget.tokens
                  if budget.tokens else 0.0]
        out.update(
            violations={k: v[0][:300] for k, v in audit.violations.items()},
            events=len(result.events),
            events_lost=len(result.events) - len(store.events(rid)),
            overruns=len(result.overruns), over_limit=max(limits), stop=result.stop_reason,
            billed_usd=audit.billed_usd, recorded_usd=audit.recorded_usd,
        )
        if "events_lost" in audit.violations:
            out["events_lost"] = max(1, out["events_lost"])
        return out
    finally:
        faulty.drop_plan(plan)


async def campaign(side: str, n: int, seed0: int, concurrency: int, store: TraceStore,
                   console: Console) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[float]]:
    backend = LiteLLMBackend(backoff_s=0.0)
    total = _new_tally()
    per_kind = {k: _new_tally() for k in KINDS} if side == "faulty" else {}
    times: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()

    async def go(i: int) -> None:
        seed = seed0 + i
        if side == "faulty":
            kind = KINDS[i % len(KINDS)]
            p = random.Random(f"p{seed}").uniform(0.2, 1.0)
            weights = {kind: p, "ok": 1.0 - p}
        else:
            weights = {"ok": 1.0}
        async with sem:
            faulty.register_prices(scenario(seed)["pool"].models)
            t = time.perf_counter()
            run = await one_run(seed, weights, store, backend)
            times.append(time.perf_counter() - t)
        _tally(total, run)
        if side == "faulty":
            _tally(per_kind[KINDS[i % len(KINDS)]], run)
        if (i + 1) % 1000 == 0:
            console.log(f"{side}: {i + 1}/{n} runs, {time.perf_counter() - t0:.0f} s, "
                        f"lost {total['lost_runs']}, violations {dict(total['violations'])}")

    batch = 200  # bounded: each task holds its scenario until it runs
    for start in range(0, n, batch):
        await asyncio.gather(*(go(i) for i in range(start, min(n, start + batch))))
    return total, per_kind, times


def _jsonable(t: dict[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10_000, help="faulty runs")
    ap.add_argument("--honest-runs", type=int, default=None, help="honest runs (default: --runs)")
    ap.add_argument("--concurrency", type=int, default=4, help="runs in flight at once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db", type=Path, default=None,
                    help="trace store file (default: a temporary one, deleted afterwards)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    honest_n = args.runs if args.honest_runs is None else args.honest_runs
    console = Console() if sys.stdout.isatty() else Console(width=160)
    # A malformed reply's non-text content makes litellm's logging warn: that is the fault.
    warnings.filterwarnings("ignore", message="Pydantic serializer warnings")
    faulty.register_faulty_provider()

    t_start = time.perf_counter()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="orchestra-faults-") as tmp:
        store = SQLiteTraceStore(args.db or Path(tmp) / "traces.sqlite")
        sides: dict[str, Any] = {}
        for side, n in (("faulty", args.runs), ("honest", honest_n)):
            console.log(f"{side}: {n} runs, {args.concurrency} at a time")
            t = time.perf_counter()
            total, per_kind, times = asyncio.run(
                campaign(side, n, args.seed, args.concurrency, store, console))
            sides[side] = {
                **_jsonable(total),
                "per_fault_kind": {k: _jsonable(v) for k, v in per_kind.items()},
                "wall_s": time.perf_counter() - t,
                "run_ms": {"median": statistics.median(times) * 1e3 if times else None,
                           "p90": sorted(times)[int(0.9 * (len(times) - 1))] * 1e3 if times else None},
            }
        store_runs = store.count_runs()
        store.close()

    result = {
        "benchmark": "faults",
        "machine": machine_info(),
        "parameters": {"runs": args.runs, "honest_runs": honest_n, "concurrency": args.concurrency,
                       "seed": args.seed, "fault_kinds": KINDS,
                       "path": "Orchestra.arun → LiteLLMBackend → litellm.acompletion → "
                               "faulty/<model> (CustomLLM); SQLite trace store, no checkpointer"},
        "faulty": sides["faulty"],
        "honest": sides["honest"],
        "runs_in_store": store_runs,
        "elapsed_s": time.perf_counter() - t_start,
        "load_average_at_start": load_start,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    write_results(args.out, result)

    cols = ("runs", "lost_runs", "under_recorded_runs", "unrecorded_overspends",
            "overruns_detected", "runs_with_overrun", "runs_over_a_limit", "events_lost")
    heads = ("runs", "lost", "books < bill", "unrecorded overspend", "overruns",
             "runs w/ overrun", "runs over limit", "events lost", "max spend/limit",
             "requests", "ms/run")
    table = Table(title=f"fault campaign — {args.runs} faulty / {honest_n} honest runs")
    table.add_column("side / main fault")
    for h in heads:
        table.add_column(h, justify="right")

    def row(name: str, t: dict[str, Any], ms: float | None = None) -> None:
        table.add_row(name, *(str(t[c]) for c in cols), f"{t['max_spend_over_limit']:.2f}",
                      str(t["requests"]), "" if ms is None else f"{ms:.1f}")

    row("honest", sides["honest"], sides["honest"]["run_ms"]["median"])
    row("faulty (all)", sides["faulty"], sides["faulty"]["run_ms"]["median"])
    for kind, t in sides["faulty"]["per_fault_kind"].items():
        row(f"  {kind}", t)
    console.print(table)
    for side in ("faulty", "honest"):
        s = sides[side]
        if s["violations"] or s["lost_runs"]:
            console.print(f"[red]{side}: violations {s['violations']}; "
                          f"examples {s['violation_examples'] or s['lost_examples']}[/]")
    console.print(f"results: {args.out}  ({result['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()

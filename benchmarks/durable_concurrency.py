"""Durable runs under concurrency: the old shared checkpoint file vs one file and lock per run.

Run from the repository root::

    .venv/bin/python benchmarks/durable_concurrency.py    # ~15 minutes on a loaded 2-CPU machine

Both designs run side by side, in one run, against one data directory each:

- ``old``: every process checkpoints into one ``checkpoints.sqlite`` (LangGraph's
  ``AsyncSqliteSaver``, what ``durable=True`` did before), steps saved in the background, no
  journal, no lock.
- ``new``: ``orchestra.durable``: one checkpoint file and one ``flock`` per run, each step saved
  before the next, each finished call journaled before its event.

(a) **Concurrent runs.** N worker processes (3, then 6), released together once all have
    started, each make R durable runs in a row (ensemble k=3 × 3 layers: 9 calls) into one
    checkpoint store and one trace store, as ``orchestra run`` does: real litellm, over
    loopback HTTP to :class:`~orchestra.testing_server.FakeOpenAIServer` (10 ms a reply). A
    run that fails is then resumed once, alone; a run that neither finished nor resumed is
    *lost*, and so are the calls it paid.
(b) **One run resumed by N processes at once.** An interrupted run (1 of its 3 round-0 calls
    finished) is resumed by N processes started together; we count the provider requests they
    sent (the run needs 8 more) and how many resumes ran.

Results: ``benchmarks/results/durable_concurrency.json`` and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from runtime_overhead import machine_info, write_results

from orchestra.durable import RunTerms
from orchestra.runtime import Orchestra, RunResult
from orchestra.testing_server import FakeOpenAIServer
from orchestra.trace.events import Event
from orchestra.trace.store import SQLiteTraceStore

RESULTS = ROOT / "results" / "durable_concurrency.json"
PARAMS = {"k": 3, "layers": 3}
CALLS_PER_RUN = 9


class Killed(Exception):
    """Stands in for a kill right after a call_finished."""


def write_pool(home: Path, server: FakeOpenAIServer) -> None:
    (home / "fake.yaml").write_text(server.pool_yaml(["a", "b", "c"],
                                                     budget="{usd: 1.0, rounds: 8}"))


def orchestra(home: Path, design: str) -> Orchestra:
    """The pool's models are served by the benchmark's FakeOpenAIServer, through litellm."""
    durable: Any = home / "checkpoints" if design == "new" else False
    return Orchestra(home / "fake.yaml", policy="ensemble", policy_params=PARAMS,
                     store=SQLiteTraceStore(home / "traces.sqlite"), durable=durable)


async def old_run(o: Orchestra, home: Path, rid: str, query: str | None,
                  on_event: Any = None) -> RunResult:
    """A durable run (``query``) or resume (None) as the old design made it: one shared file."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from orchestra._graph import build_graph

    terms = RunTerms(pool=o.pool, policy=o.policy, budget=o.budget, max_think_steps=8)
    init: Any = None if query is None else {
        "run_id": rid, "query": query, "history": [], "meta": {}, "notes": [], "steps": [],
        "calls": [], "rounds": [], "plan": [], "think_steps": 0, "final": None}
    async with AsyncSqliteSaver.from_conn_string(str(home / "checkpoints.sqlite")) as saver:
        return await o._invoke(build_graph(saver), rid, init, on_event, terms, None)  # type: ignore[no-any-return]


def attempt(o: Orchestra, home: Path, design: str, rid: str, query: str | None,
            on_event: Any = None) -> RunResult:
    if design == "old":
        return asyncio.run(old_run(o, home, rid, query, on_event))
    if query is None:
        return o.resume(rid, on_event=on_event)
    return o.run(query, run_id=rid, on_event=on_event)


# ---------------------------------------------------------------------------------- workers
def worker(args: argparse.Namespace) -> None:
    home = Path(args.home)
    orchestra(home, args.design)  # imports done before the barrier
    # Barrier: every worker has started (imports take seconds), so that their runs overlap.
    (home / f"ready-{args.tag}").touch()
    while len(list(home.glob("ready-*"))) < args.barrier:
        time.sleep(0.01)
    rows = []
    start = time.time()
    for i in range(args.runs):
        o = orchestra(home, args.design)
        rid = args.resume or f"{args.tag}-{i}"
        t0 = time.perf_counter()
        try:
            attempt(o, home, args.design, rid, None if args.resume else f"question {rid}")
            error = None
        except Exception as e:  # noqa: BLE001 - what the benchmark counts
            error = f"{type(e).__name__}: {str(e)[:120]}"
        row = o.store.get_run(rid) if o.store is not None else None
        rows.append({"run_id": rid, "error": error, "paid_calls": (row or {}).get("calls") or 0,
                     "seconds": time.perf_counter() - t0, "start": start, "end": time.time()})
    print(json.dumps({"rows": rows}))


def spawn(home: Path, design: str, tag: str, runs: int, barrier: int,
          resume: str | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--worker", "--home", str(home), "--design", design,
           "--tag", tag, "--runs", str(runs), "--barrier", str(barrier)]
    if resume:
        cmd += ["--resume", resume]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def gather(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    rows = []
    for p in procs:
        out, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"worker failed: {err[-2000:]}")
        rows += json.loads(out.strip().splitlines()[-1])["rows"]
    return rows


# ---------------------------------------------------------------------------------- cases
def concurrent_runs(design: str, n: int, runs: int, latency: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"durable-{design}-"))
    with FakeOpenAIServer(latency_s=latency) as server:
        write_pool(home, server)
        rows = gather([spawn(home, design, f"p{i}", runs, n) for i in range(n)])
        requests = len(server.requests)
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    failed = [r for r in rows if r["error"]]
    lost, errors = [], sorted({r["error"][:90] for r in failed})
    with FakeOpenAIServer(latency_s=latency) as server:
        write_pool(home, server)
        for r in failed:  # resumed once, alone
            try:
                attempt(orchestra(home, design), home, design, r["run_id"], None)
            except Exception as e:  # noqa: BLE001
                lost.append({**r, "resume_error": f"{type(e).__name__}: {str(e)[:120]}"})
    store = SQLiteTraceStore(home / "traces.sqlite")
    complete = sum(1 for r in rows
                   if (row := store.get_run(r["run_id"])) and row["status"] == "ok"
                   and sum(e["kind"] == "call_finished" for e in store.events(r["run_id"]))
                   >= CALLS_PER_RUN)
    ok = len(rows) - len(failed)
    return {
        "design": design, "processes": n, "runs": len(rows), "failed_first_try": len(failed),
        "lost_runs": len(lost), "paid_calls_in_lost_runs": sum(r["paid_calls"] for r in lost),
        "complete_traces": complete, "provider_requests": requests, "errors": errors,
        "resume_errors": sorted({r["resume_error"][:100] for r in lost}),
        "wall_s": wall, "runs_per_s_first_try": ok / wall,
        "median_run_s": sorted(r["seconds"] for r in rows)[len(rows) // 2],
    }


def concurrent_resumes(design: str, n: int, latency: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"resume-{design}-"))
    seen: list[Event] = []

    def kill(ev: Event) -> None:
        if ev.kind == "call_finished":
            seen.append(ev)
            raise Killed(ev.call_id)

    with FakeOpenAIServer(hold=["b", "c"]) as server:
        write_pool(home, server)
        try:  # a answers, b and c are in flight: killed at a's call_finished
            attempt(orchestra(home, design), home, design, "shared", "question", on_event=kill)
        except Killed:
            pass
        server.release()
        server.latency_s = latency  # long enough that the N resumes overlap
        before = len(server.requests)
        rows = gather([spawn(home, design, f"r{i}", 1, n, resume="shared") for i in range(n)])
        requests = len(server.requests) - before
    ran = [r for r in rows if not r["error"]]
    return {"design": design, "processes": n, "resumes_that_ran": len(ran),
            "refused": sorted({r["error"][:110] for r in rows if r["error"]}),
            "provider_requests": requests, "requests_needed": CALLS_PER_RUN - len(seen)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, nargs="+", default=[3, 6])
    ap.add_argument("--runs", type=int, default=4, help="runs per process")
    ap.add_argument("--latency", type=float, default=0.01, help="seconds per reply in (a)")
    ap.add_argument("--resume-latency", type=float, default=1.0,
                    help="seconds per call in (b), so that the resumes overlap")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    ap.add_argument("--design", choices=["old", "new"], help=argparse.SUPPRESS)
    ap.add_argument("--tag", help=argparse.SUPPRESS)
    ap.add_argument("--resume", help=argparse.SUPPRESS)
    ap.add_argument("--barrier", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    load_start = list(os.getloadavg())
    runs = [concurrent_runs(d, n, args.runs, args.latency)
            for n in args.processes for d in ("old", "new")]
    resumes = [concurrent_resumes(d, max(args.processes), args.resume_latency)
               for d in ("old", "new")]
    ratios = []
    for n in args.processes:
        old, new = (next(r for r in runs if r["design"] == d and r["processes"] == n)
                    for d in ("old", "new"))
        ratios.append({"processes": n,
                       "throughput_new_over_old": new["runs_per_s_first_try"]
                       / max(old["runs_per_s_first_try"], 1e-9),
                       "median_run_new_over_old": new["median_run_s"] / old["median_run_s"],
                       "lost_runs_old": old["lost_runs"], "lost_runs_new": new["lost_runs"]})
    result = {"benchmark": "durable_concurrency", "machine": machine_info(),
              "config": {"processes": args.processes, "runs_per_process": args.runs,
                         "latency_s": args.latency, "resume_latency_s": args.resume_latency,
                         "policy": "ensemble", "params": PARAMS,
                         "calls_per_run": CALLS_PER_RUN},
              "concurrent_runs": runs, "concurrent_resumes": resumes, "ratios": ratios,
              "load_average_at_start": load_start, "load_average_at_end": list(os.getloadavg())}
    write_results(args.out, result)

    con = Console()
    t = Table(title="(a) N processes × R durable runs on one data directory")
    for col in ("design", "N", "runs", "failed", "lost", "paid calls lost", "whole traces",
                "runs/s", "median run s"):
        t.add_column(col)
    for r in runs:
        t.add_row(r["design"], str(r["processes"]), str(r["runs"]), str(r["failed_first_try"]),
                  str(r["lost_runs"]), str(r["paid_calls_in_lost_runs"]),
                  str(r["complete_traces"]), f"{r['runs_per_s_first_try']:.2f}",
                  f"{r['median_run_s']:.2f}")
    con.print(t)
    t = Table(title="(b) one interrupted run resumed by N processes at once")
    for col in ("design", "N", "resumes that ran", "provider requests", "needed"):
        t.add_column(col)
    for r in resumes:
        t.add_row(r["design"], str(r["processes"]), str(r["resumes_that_ran"]),
                  str(r["provider_requests"]), str(r["requests_needed"]))
    con.print(t)
    for r in ratios:
        con.print(f"N={r['processes']}: throughput new/old {r['throughput_new_over_old']:.2f}×, "
                  f"median run new/old {r['median_run_new_over_old']:.2f}×, lost runs "
                  f"{r['lost_runs_old']} → {r['lost_runs_new']}")
    con.print(f"results: {args.out}")


if __name__ == "__main__":
    main()

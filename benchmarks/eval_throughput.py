"""Evaluation throughput: queries/s of ``orchestra eval`` through the full runtime vs a direct loop.

Run from the repository root (needs the shared RouterBench data: ``../shared/data``, or set
``$ORCHESTRA_SHARED_DATA``)::

    .venv/bin/python benchmarks/eval_throughput.py              # ~5 minutes on 2 busy cores
    .venv/bin/python benchmarks/eval_throughput.py --profile    # + where the runtime's time goes

For each policy, the 953 RouterBench test queries are evaluated two ways, alternating so that
drift in the machine's load hits both alike:

- **runtime**: exactly what ``orchestra eval`` does for one policy and λ point — every query runs
  through ``Orchestra.arun`` (LangGraph route → dispatch → refine, budget ledger, trace events) on
  the replay pool with :class:`~orchestra.backends.replay.ReplayBackend`, ``asyncio.gather`` in
  batches, and is graded;
- **direct**: the same policy object decides from a hand-built ``RunView``, the same recorded
  outcomes are looked up (``replay_call``), the same vote merges fan-outs, and the same grader
  scores the answer — no graph, no ledger, no events.

Both must give identical total cost and mean score (checked). Reported: wall-clock queries/s
(best of ``--repeats``), CPU queries/s (queries per second of this process's CPU time: robust
to other processes sharing the cores), the runtime/direct ratio, the load average, and whether
the runtime reaches the target of 200 queries/s per policy and λ point. ``--profile`` adds a
cProfile of one runtime pass, with its self time grouped by component.

Results go to ``benchmarks/results/eval_throughput.json``; a table is printed.

``--sweep`` measures instead a whole λ sweep of four learned routers, old path vs new path in
one run (``benchmarks/results/eval_sweep.json``)::

    .venv/bin/python benchmarks/eval_throughput.py --sweep     # ~10 minutes on 2 busy cores

- **old path** (``share_runs=False``): every λ point a full pass of every query through the
  runtime;
- **new path** (``share_runs=True``, the default of ``orchestra eval``): each router's scores once
  per query, its decision at every λ from them, each distinct (query, chosen calls) run once
  through the runtime and its graded result reused by every λ point (and router) that chose it.

Four routers (kNN k=20, kNN k=5, MLP, MF; hashing embedder, fixed hyperparameters, trained on
LLMRouter's test split) are evaluated on LLMRouter's train split (5,608 queries, 9 models, 14
tasks: the largest table we have), APGR included, as ``orchestra eval`` does by default. Both
paths run on a seeded subset (``--compare-limit``) and must give identical points; the new path
then runs on the whole table, and the old path's time there is extrapolated from the subset
(linear in the queries).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestra.backends.replay import ReplayBackend, pool_from_outcomes, replay_call
from orchestra.budget import BudgetLeft
from orchestra.eval.data import load_eval_data
from orchestra.eval.grading import Grader
from orchestra.eval.harness import _resolve, _run_point
from orchestra.eval.specs import PolicySpec
from orchestra.policies.base import Answer, CallView, RoundView, Route, RunView, Think
from orchestra.refiners import vote
from orchestra.trace.events import Event, Refined

ROOT = Path(__file__).resolve().parent
# Named data ("routerbench"): the shared folder beside the checkout unless the caller set one.
os.environ.setdefault("ORCHESTRA_SHARED_DATA", str(ROOT.parent.parent / "shared" / "data"))
TARGET_QPS = 200.0
POLICIES = ["cheapest", "single:mistralai/mixtral-8x7b-chat", "ensemble,k=3,select=cheapest"]


def direct_point(policy: Any, pool: Any, grader: Grader, queries: list[Any],
                 max_rounds: int = 4) -> tuple[float, float, float]:
    """(total cost, mean score, seconds) of the policy without the runtime."""
    left = BudgetLeft(usd=None, tokens=None, calls=None, rounds=max_rounds, seconds=None,
                      spent_usd=0.0, spent_tokens=0, spent_calls=0, rounds_done=0)
    prio = {m.name: m.quality or 0.0 for m in pool.models}
    ids = {m.name: m.id for m in pool.models}
    total_cost = 0.0
    total_score = 0.0
    t0 = time.perf_counter()
    for q in queries:
        meta = {"query_id": q.query_id, "task": q.task}
        rounds: list[RoundView] = []
        events: list[Event] = []
        answer: str | None = None
        while len(rounds) < max_rounds:
            view = RunView(query=q.text, history=(), rounds=tuple(rounds), notes=(),
                           budget_left=left, pool=pool, round=len(rounds), meta=meta)
            action = policy.decide(view)
            if isinstance(action, Answer):
                answer = action.text if action.text is not None else view.best_answer
                break
            if isinstance(action, Think):
                raise NotImplementedError("the direct loop does not model Think actions")
            assert isinstance(action, Route)
            calls = []
            for c in action.calls:
                name = c.model or pool.models[0].name
                out = replay_call(ids[name], [], meta, None)
                total_cost += out.cost_usd
                calls.append(CallView(agent="assistant", model=name, prompt="", output=out.text,
                                      cost_usd=out.cost_usd, input_tokens=out.input_tokens,
                                      output_tokens=out.output_tokens, latency_s=0.0))
            ok = [c for c in calls if c.output.strip()]
            if not ok:
                text = ""
            elif len(ok) == 1:
                text = ok[0].output
            else:
                idx, _ = vote([c.output for c in ok], priority=[prio[c.model] for c in ok])
                text = ok[idx].output
            events.append(Refined(run_id="direct", round=len(rounds), refiner="vote", output=text,
                                  inputs=[{"agent": c.agent, "model": c.model, "output": c.output}
                                          for c in ok]))
            rounds.append(RoundView(index=len(rounds), calls=tuple(calls), answer=text,
                                    refiner="vote"))
        else:
            answer = rounds[-1].answer if rounds else None
        score, _ = grader.grade(q, answer or None, events)
        total_score += score
    return total_cost, total_score / len(queries), time.perf_counter() - t0


async def runtime_point(policy: Any, pool: Any, grader: Grader, queries: list[Any],
                        concurrency: int) -> Any:
    return await _run_point(policy, pool, ReplayBackend(), grader, queries, lam=None,
                            budget=None, concurrency=concurrency, strong=None, label="",
                            progress=None)


def _component(filename: str) -> str:
    f = filename.replace("\\", "/")
    if "/langgraph/" in f or "/langchain_core/" in f:
        return "langgraph + langchain_core (graph engine)"
    if "/orchestra/backends/replay" in f:
        return "orchestra replay backend"
    if "/orchestra/eval/" in f or "eval_throughput" in f:
        return "orchestra eval harness (batching, grading)"
    if "/orchestra/" in f:
        return "orchestra runtime (nodes, ledger, events, policy)"
    if "asyncio" in f or "selectors" in f:
        return "asyncio event loop"
    if "dataclasses" in f:
        return "dataclasses (replace/asdict of events and budget views)"
    if f.startswith("~") or "{" in f:
        return "builtins"
    return "other stdlib / libraries"


def profile_runtime(policy: Any, pool: Any, grader: Grader, queries: list[Any],
                    concurrency: int) -> dict[str, Any]:
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(runtime_point(policy, pool, grader, queries, concurrency))
    prof.disable()
    st = pstats.Stats(prof)
    by: dict[str, float] = {}
    total = 0.0
    rows = []
    for (filename, line, func), (_cc, _nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        by[_component(filename)] = by.get(_component(filename), 0.0) + tt
        total += tt
        rows.append((tt, ct, f"{Path(filename).name}:{line}({func})"))
    rows.sort(reverse=True)
    top_cum = sorted(((ct, f"{Path(fn).name}:{ln}({fu})") for (fn, ln, fu), (_a, _b, _t, ct, _c)
                      in st.stats.items()  # type: ignore[attr-defined]
                      if "/orchestra/" in fn or "pregel" in fn), reverse=True)[:15]
    return {
        "self_time_by_component": {k: {"s": round(v, 3), "share": round(v / total, 3)}
                                   for k, v in sorted(by.items(), key=lambda kv: -kv[1])},
        "top_self_time": [{"s": round(tt, 3), "cum_s": round(ct, 3), "where": w}
                          for tt, ct, w in rows[:15]],
        "top_cumulative_orchestra_and_pregel": [{"cum_s": round(ct, 3), "where": w}
                                                for ct, w in top_cum],
        "total_profiled_s": round(total, 3),
    }


SWEEP_ROUTERS = {"knn": ("knn", {"k": 20, "weighting": "distance", "task_weight": 0.0,
                                  "prior": 0.0}),
                 "knn5": ("knn", {"k": 5, "weighting": "distance", "task_weight": 0.0,
                                  "prior": 0.0}),
                 "mlp": ("mlp", {"hidden": 64, "dropout": 0.1, "weight_decay": 1e-4, "lr": 3e-3,
                                 "ensemble": 1, "max_epochs": 60, "patience": 10}),
                 "mf": ("mf", {"dim": 32, "weight_decay": 1e-4, "lr": 1e-2, "ensemble": 1,
                               "max_epochs": 60, "patience": 10})}


def _strip(p: Any) -> dict[str, Any]:
    d = dict(p.__dict__)
    d.pop("seconds")
    d.pop("queries_per_s")
    return d


def sweep(args: argparse.Namespace, console: Console) -> None:
    """Old path (a full pass per λ) vs new path (shared runs) on four learned routers."""
    import tempfile

    from orchestra.embed import HashingEmbedder
    from orchestra.eval.harness import evaluate
    from orchestra.outcomes import load_outcomes
    from orchestra.policies.learned.provenance import write_trained_on
    from orchestra.training.router_data import prepare_data
    from orchestra.training.router_fit import train_router

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="orchestra-eval-sweep-"))
    t0 = time.perf_counter()
    train = load_outcomes(args.train_data)
    data = prepare_data(train, HashingEmbedder(), source=args.train_data)
    specs = []
    for name, (kind, params) in SWEEP_ROUTERS.items():
        router = train_router(kind, data, params=params, folds=2, seed=0)  # type: ignore[arg-type]
        path = router.save(work / f"{name}-{kind}")
        write_trained_on(path, kind, train, args.train_data)
        specs.append(f"{kind},path={path}")
    train_s = time.perf_counter() - t0
    full = load_eval_data(args.eval_data, priors="none")
    sub = load_eval_data(args.eval_data, limit=args.compare_limit, seed=0, priors="none")
    console.print(f"[dim]trained {len(specs)} routers in {train_s:.0f} s; evaluating "
                  f"{full.table.n_queries} queries ({args.compare_limit} for the side by side)[/]")
    load_before = os.getloadavg()
    timings: dict[str, float] = {}
    reports: dict[str, Any] = {}
    for label, data_, share in (("old_subset", sub, False), ("new_subset", sub, True),
                                ("new_full", full, True)):
        c0, w0 = time.process_time(), time.perf_counter()
        reports[label] = evaluate(data_, specs, share_runs=share,
                                  concurrency=args.concurrency[0])
        timings[label] = time.perf_counter() - w0
        timings[label + "_cpu"] = time.process_time() - c0
        console.print(f"[dim]{label}: {timings[label]:.1f} s wall, "
                      f"{timings[label + '_cpu']:.1f} s CPU[/]")
    load_after = os.getloadavg()
    identical = True
    rows = []
    for old, new, nf in zip(reports["old_subset"].policies, reports["new_subset"].policies,
                            reports["new_full"].policies, strict=True):
        same = (old.error is None and new.error is None
                and [_strip(p) for p in old.points] == [_strip(p) for p in new.points]
                and [_strip(p) for p in old.apgr_points] == [_strip(p) for p in new.apgr_points]
                and (old.aiq, old.apgr) == (new.aiq, new.apgr))
        identical &= same
        rows.append({"policy": old.spec.split(",path=")[0] + " " + Path(
                        old.spec.split("path=")[1]).name,
                     "lambdas": len(old.points), "subset_runs_old": old.runs,
                     "subset_runs_new": new.runs, "full_runs_new": nf.runs,
                     "aiq_subset": old.aiq, "apgr_subset": old.apgr, "aiq_full": nf.aiq,
                     "apgr_full": nf.apgr, "identical": same, "error": nf.error})
    n_full, n_sub = full.table.n_queries, sub.table.n_queries
    old_full_est = timings["old_subset"] * n_full / n_sub
    t = Table(title=f"λ sweeps of 4 routers: old path (full pass per λ) vs new (shared runs) · "
              f"{args.eval_data}, load {load_before[0]:.1f} → {load_after[0]:.1f} on "
              f"{os.cpu_count()} cores")
    for col in ("policy", "λ points", f"runs old ({n_sub} q)", f"runs new ({n_sub} q)",
                f"runs new ({n_full} q)", f"AIQ ({n_full} q)", f"APGR ({n_full} q)",
                "identical"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for r in rows:
        t.add_row(r["policy"], str(r["lambdas"]), str(r["subset_runs_old"]),
                  str(r["subset_runs_new"]), str(r["full_runs_new"]),
                  "—" if r["aiq_full"] is None else f"{r['aiq_full']:.3f}",
                  "—" if r["apgr_full"] is None else f"{r['apgr_full']:.3f}",
                  "yes" if r["identical"] else "[red]NO[/]")
    console.print(t)
    summary = {
        "subset_queries": n_sub, "full_queries": n_full,
        "old_subset_s": timings["old_subset"], "new_subset_s": timings["new_subset"],
        "ratio_old_over_new_subset": timings["old_subset"] / timings["new_subset"],
        "new_full_s": timings["new_full"], "new_full_cpu_s": timings["new_full_cpu"],
        "old_full_s_extrapolated": old_full_est,
        "ratio_old_over_new_full_extrapolated": old_full_est / timings["new_full"],
        "identical": identical, "train_s": train_s,
    }
    console.print(
        f"subset {n_sub} q: old {timings['old_subset']:.1f} s vs new {timings['new_subset']:.1f} s "
        f"({summary['ratio_old_over_new_subset']:.1f}×), identical={identical}; whole table "
        f"{n_full} q: new {timings['new_full']:.1f} s (old ≈ {old_full_est:.0f} s extrapolated, "
        f"{summary['ratio_old_over_new_full_extrapolated']:.1f}×)")
    out = {
        "benchmark": "eval_sweep", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_avg_before": load_before,
                    "load_avg_after": load_after},
        "train_data": args.train_data, "eval_data": args.eval_data,
        "routers": {k: {"kind": v[0], "params": v[1]} for k, v in SWEEP_ROUTERS.items()},
        "settings": {"concurrency": args.concurrency[0], "apgr": True, "lambdas": "auto",
                     "embedder": "hashing"},
        "notes": ("old = share_runs=False (every λ point a full pass through Orchestra.arun); "
                  "new = share_runs=True (each distinct (query, chosen calls) once, shared by "
                  "every λ point and router). Times include predictions and APGR pair runs; "
                  "the old path's time on the whole table is extrapolated from the subset."),
        "summary": summary, "results": rows,
    }
    path = args.out if args.out != ROOT / "results" / "eval_throughput.json" else (
        ROOT / "results" / "eval_sweep.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2), encoding="utf-8")
    console.print(f"[dim]written {path}[/]")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--policy", action="append", help=f"policies (default: {POLICIES})")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sweep", action="store_true",
                    help="old path vs new path over whole λ sweeps of four learned routers")
    ap.add_argument("--train-data", default="llmrouter:test")
    ap.add_argument("--eval-data", default="llmrouter:train")
    ap.add_argument("--compare-limit", type=int, default=600)
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="where --sweep writes its artifacts (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "eval_throughput.json")
    args = ap.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    if args.sweep:
        sweep(args, console)
        return

    data = load_eval_data("routerbench", split="test", priors="auto")
    table = data.table
    pool = pool_from_outcomes(table, quality=data.priors)
    grader = Grader(table)
    queries = grader.queries
    load_before = os.getloadavg()
    results = []
    for text in args.policy or POLICIES:
        spec = PolicySpec.parse(text)
        policy = _resolve(spec, pool)
        # Warm-up: compile the graph, fill caches.
        asyncio.run(runtime_point(policy, pool, grader, queries[:64], 16))
        direct_point(policy, pool, grader, queries[:64])
        for conc in args.concurrency:
            rt_wall, rt_cpu, d_wall, d_cpu = [], [], [], []
            same = True
            for _ in range(args.repeats):
                c0 = time.process_time()
                pt = asyncio.run(runtime_point(policy, pool, grader, queries, conc))
                rt_cpu.append(len(queries) / (time.process_time() - c0))
                rt_wall.append(pt.queries_per_s)
                c0 = time.process_time()
                cost, score, secs = direct_point(policy, pool, grader, queries)
                d_cpu.append(len(queries) / (time.process_time() - c0))
                d_wall.append(len(queries) / secs)
                same &= abs(cost - pt.total_cost) < 1e-9 and abs(score - pt.mean_score) < 1e-12
            row = {
                "policy": text, "concurrency": conc, "queries": len(queries),
                "runtime_qps_best": max(rt_wall), "runtime_qps_median": statistics.median(rt_wall),
                "runtime_cpu_qps_best": max(rt_cpu),
                "direct_qps_best": max(d_wall), "direct_cpu_qps_best": max(d_cpu),
                "ratio_direct_over_runtime": max(d_wall) / max(rt_wall),
                "runtime_total_cost": pt.total_cost, "runtime_mean_score": pt.mean_score,
                "direct_equals_runtime": same,
                "meets_target_wall": max(rt_wall) >= TARGET_QPS,
                "meets_target_cpu": max(rt_cpu) >= TARGET_QPS,
            }
            results.append(row)
            console.print(f"[dim]{text} c={conc}: runtime {row['runtime_qps_best']:.0f} q/s "
                          f"(cpu {row['runtime_cpu_qps_best']:.0f}), direct "
                          f"{row['direct_qps_best']:.0f} q/s, same={same}[/]")
    load_after = os.getloadavg()
    prof = None
    if args.profile:
        spec = PolicySpec.parse((args.policy or POLICIES)[0])
        prof = profile_runtime(_resolve(spec, pool), pool, grader, queries, args.concurrency[0])

    t = Table(title=f"eval throughput: RouterBench test, {len(queries)} queries "
              f"(load avg {load_before[0]:.1f} → {load_after[0]:.1f} on {os.cpu_count()} cores)")
    for col in ("policy", "conc", "runtime q/s", "runtime q/cpu-s", "direct q/s",
                "direct q/cpu-s", "direct/runtime", "same result", f"≥{TARGET_QPS:.0f} q/s"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for r in results:
        t.add_row(r["policy"], str(r["concurrency"]), f"{r['runtime_qps_best']:.0f}",
                  f"{r['runtime_cpu_qps_best']:.0f}", f"{r['direct_qps_best']:.0f}",
                  f"{r['direct_cpu_qps_best']:.0f}", f"{r['ratio_direct_over_runtime']:.1f}×",
                  "yes" if r["direct_equals_runtime"] else "[red]NO[/]",
                  ("wall " if r["meets_target_wall"] else "")
                  + ("cpu" if r["meets_target_cpu"] else "[red]no[/]"))
    console.print(t)
    if prof:
        pt_ = Table(title="runtime pass, self time by component (cProfile)")
        pt_.add_column("component")
        pt_.add_column("s", justify="right")
        pt_.add_column("share", justify="right")
        for k, v in prof["self_time_by_component"].items():
            pt_.add_row(k, f"{v['s']:.2f}", f"{100 * v['share']:.0f}%")
        console.print(pt_)
    out = {
        "benchmark": "eval_throughput",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_avg_before": load_before,
                    "load_avg_after": load_after},
        "target_queries_per_s": TARGET_QPS,
        "notes": ("runtime = Orchestra.arun over the replay pool (ReplayBackend, store=False) + "
                  "grading, as `orchestra eval` runs one policy/λ point; direct = the same policy, "
                  "lookups, vote and grader without the runtime. q/cpu-s = queries per second of "
                  "this process's CPU time, unaffected by other processes on the cores."),
        "results": results,
        "profile": prof,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    console.print(f"[dim]written {args.out}[/]")


if __name__ == "__main__":
    main()

"""Runtime overhead: what the orchestra runtime adds on top of the model calls it makes.

Run from the repository root::

    .venv/bin/python benchmarks/runtime_overhead.py            # ~1 minute
    .venv/bin/python benchmarks/runtime_overhead.py --profile  # + cProfile of the runtime

Two measurements, side by side in one run, with a backend of fixed, known latency
(:class:`orchestra.testing.FunctionBackend` sleeping ``latency_s``):

(a) Overhead per round. The same N requests are sent (1) straight to ``backend.complete`` and
    (2) through ``Orchestra.arun`` with ``single:<model>`` and ``ensemble`` (k=1): one round of
    one call each. Queries alternate between the two so drift hits both alike; the overhead of
    query i is ``runtime_i - direct_i`` divided by the rounds it ran; we report its median and
    p90. Extra rows: the SQLite trace store on, ``durable=True`` (SQLite checkpointer), the
    synchronous ``Orchestra.run`` (an event loop per query), and a zero-latency pass that shows
    the pure CPU cost.

(b) Fan-out. One round of k parallel calls (k = 1, 2, 4, 8, 16) whose latencies are drawn from
    10–50 ms with a fixed seed. The round's wall time (policy decided → refined, taken from the
    live event stream) is compared with the slowest call (ideal parallelism: ratio 1) and with
    the sum of the calls (what sequential calls would take). ``asyncio.gather`` over the same
    direct calls is the reference.

Results go to ``benchmarks/results/runtime_overhead.json``; a table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestra.backends.base import CompletionRequest
from orchestra.policies.base import Call, Route, RunView
from orchestra.policies.baselines import EnsemblePolicy
from orchestra.prompts import build_messages
from orchestra.runtime import Orchestra
from orchestra.spec import Budget, Pool
from orchestra.testing import FunctionBackend, make_pool
from orchestra.trace.events import Event

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "runtime_overhead.json"
QUERY = "What is the capital of France? Answer in one word."
ANSWER = "Paris"
TARGET_MS = 2.0


# ---------------------------------------------------------------------------------- helpers
def pct(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of xs, linear interpolation."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(xs_s: list[float]) -> dict[str, float]:
    ms = [x * 1e3 for x in xs_s]
    return {"median_ms": statistics.median(ms), "p90_ms": pct(ms, 0.9), "mean_ms": statistics.fmean(ms),
            "min_ms": min(ms), "max_ms": max(ms)}


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True, check=False).stdout.strip() or None
    except OSError:
        commit = None
    versions: dict[str, str | None] = {}
    for pkg in ("orchestra", "langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite",
                "aiosqlite", "pydantic"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"python": sys.version.split()[0], "implementation": platform.python_implementation(),
            "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "git_commit": commit, "versions": versions,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_results(path: Path, result: dict[str, Any]) -> None:
    """Write a benchmark's JSON next to ``path`` and move it into place (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = path.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(path)


def bench_pool(n_models: int = 1) -> Pool:
    """Test models with prices (so the ledger does its arithmetic) and no limit that binds."""
    return make_pool([(0.5, 1.5)] * n_models, max_output_tokens=32, refiner="last",
                     budget=Budget(usd=100.0, rounds=8))


def direct_request(pool: Pool) -> CompletionRequest:
    """The request the runtime sends for QUERY: same messages, same max_tokens."""
    agent, model = pool.answer_agent, pool.models[0]
    messages = build_messages(agent, model, QUERY, query=QUERY)
    return CompletionRequest(model=model, messages=messages, max_tokens=model.max_output_tokens,
                             timeout_s=model.timeout_s)


# ---------------------------------------------------------------------------------- (a)
Config = dict[str, Any]


def make_orchestra(pool: Pool, backend: FunctionBackend, cfg: Config, tmp: Path) -> Orchestra:
    store: Any = False
    if cfg.get("store") == "sqlite":
        store = tmp / f"traces-{cfg['name']}.sqlite"
    durable: Any = False
    if cfg.get("durable"):
        durable = tmp / f"checkpoints-{cfg['name']}.sqlite"
    policy: Any = cfg["policy"]
    if policy == "ensemble":
        policy = EnsemblePolicy(pool, k=1)
    return Orchestra(pool, policy=policy, budget=pool.budget, backend=backend, store=store,
                     durable=durable)


async def measure_overhead(cfg: Config, n: int, warmup: int, latency: float,
                           tmp: Path) -> dict[str, Any]:
    pool = bench_pool()
    backend = FunctionBackend(lambda req: ANSWER, latency_s=latency)
    orch = make_orchestra(pool, backend, cfg, tmp)
    req = direct_request(pool)
    sync = cfg.get("sync", False)
    loop = asyncio.get_running_loop()

    async def one_runtime() -> tuple[float, float, int]:
        t0, c0 = time.perf_counter(), time.process_time()
        if sync:  # Orchestra.run from a worker thread: a fresh event loop per query
            res = await loop.run_in_executor(None, orch.run, QUERY)
        else:
            res = await orch.arun(QUERY)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        assert res.answer == ANSWER and res.calls == 1, res
        return dt, dc, res.rounds

    async def one_direct() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        comp = await backend.complete(req)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        assert comp.text == ANSWER
        return dt, dc

    for _ in range(warmup):
        await one_runtime()
        await one_direct()
    runtime, direct, per_round, cpu_per_round, cpu_runtime = [], [], [], [], []
    rounds = 0
    for i in range(n):
        # Alternate the order so neither side always runs first.
        if i % 2:
            d, dc = await one_direct()
            r, rc, k = await one_runtime()
        else:
            r, rc, k = await one_runtime()
            d, dc = await one_direct()
        runtime.append(r)
        direct.append(d)
        cpu_runtime.append(rc)
        per_round.append((r - d) / k)
        cpu_per_round.append((rc - dc) / k)
        rounds += k
    total_runtime, total_direct = sum(runtime), sum(direct)
    return {
        "name": cfg["name"], "policy": str(cfg["policy"]), "store": cfg.get("store", "none"),
        "durable": bool(cfg.get("durable")), "sync_api": sync, "latency_s": latency,
        "queries": n, "rounds": rounds,
        "runtime": summary_ms(runtime), "direct": summary_ms(direct),
        "runtime_cpu": summary_ms(cpu_runtime),
        "overhead_per_round": summary_ms(per_round),
        "overhead_cpu_per_round": summary_ms(cpu_per_round),
        "overhead_per_round_from_totals_ms": (total_runtime - total_direct) / rounds * 1e3,
        "meets_target": statistics.median(per_round) * 1e3 < TARGET_MS,
    }


# ---------------------------------------------------------------------------------- (b)
class FanOut:
    """One round of k parallel calls (model m0..m{k-1}), then answer."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.name = f"fanout(k={k})"

    def decide(self, view: RunView) -> Any:
        from orchestra.policies.base import Answer

        if view.rounds:
            return Answer(reason="one round done")
        return Route([Call(model=f"m{i}") for i in range(self.k)], reason="fan-out")


async def measure_fanout(ks: list[int], repeats: int, seed: int, lat_range: tuple[float, float],
                         warmup: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    kmax = max(ks)
    pool = bench_pool(kmax)
    current: dict[str, float] = {}
    backend = FunctionBackend(lambda req: ANSWER,
                              latency_s=lambda req: current.get(req.model.name, 0.0))
    out = []
    for k in ks:
        orch = Orchestra(pool, policy=FanOut(k), budget=pool.budget, backend=backend, store=False)
        reqs = []
        for i in range(k):
            m = pool.models[i]
            msgs = build_messages(pool.answer_agent, m, QUERY, query=QUERY)
            reqs.append(CompletionRequest(model=m, messages=msgs, max_tokens=m.max_output_tokens))
        for _ in range(warmup):
            current.clear()
            await orch.arun(QUERY)
        rows: dict[str, list[float]] = {"round_wall": [], "run_wall": [], "gather_wall": [],
                                        "slowest": [], "sum": [], "ratio_slowest": [],
                                        "ratio_sum": [], "gather_ratio_slowest": []}
        for _ in range(repeats):
            lats = [rng.uniform(*lat_range) for _ in range(k)]
            current.clear()
            current.update({f"m{i}": lats[i] for i in range(k)})
            marks: list[tuple[str, str, float]] = []

            def on_event(ev: Event, marks: list[tuple[str, str, float]] = marks) -> None:
                marks.append((ev.kind, getattr(ev, "action", ""), time.perf_counter()))

            t0 = time.perf_counter()
            res = await orch.arun(QUERY, on_event=on_event)
            run_wall = time.perf_counter() - t0
            assert res.calls == k and res.rounds == 1, res
            t_decided = next(t for kind, act, t in marks if kind == "policy_decided" and act == "route")
            t_refined = next(t for kind, _, t in marks if kind == "refined")
            wall = t_refined - t_decided
            t0 = time.perf_counter()
            await asyncio.gather(*(backend.complete(r) for r in reqs))
            gather = time.perf_counter() - t0
            slowest, total = max(lats), sum(lats)
            rows["round_wall"].append(wall)
            rows["run_wall"].append(run_wall)
            rows["gather_wall"].append(gather)
            rows["slowest"].append(slowest)
            rows["sum"].append(total)
            rows["ratio_slowest"].append(wall / slowest)
            rows["ratio_sum"].append(wall / total)
            rows["gather_ratio_slowest"].append(gather / slowest)
        out.append({
            "k": k, "repeats": repeats,
            "round_wall": summary_ms(rows["round_wall"]), "run_wall": summary_ms(rows["run_wall"]),
            "gather_wall": summary_ms(rows["gather_wall"]),
            "slowest_call": summary_ms(rows["slowest"]), "sum_of_calls": summary_ms(rows["sum"]),
            "ratio_wall_to_slowest": {"median": statistics.median(rows["ratio_slowest"]),
                                      "p90": pct(rows["ratio_slowest"], 0.9)},
            "ratio_wall_to_sum": {"median": statistics.median(rows["ratio_sum"]),
                                  "p90": pct(rows["ratio_sum"], 0.9)},
            "gather_ratio_to_slowest": {"median": statistics.median(rows["gather_ratio_slowest"]),
                                        "p90": pct(rows["gather_ratio_slowest"], 0.9)},
            "round_minus_slowest_ms": {
                "median": statistics.median(w - s for w, s in zip(rows["round_wall"], rows["slowest"], strict=True)) * 1e3,
            },
        })
    return out


# ---------------------------------------------------------------------------------- profile
_BUCKETS: list[tuple[str, Callable[[str], bool]]] = [
    ("orchestra._nodes (route, dispatch, refine, common)", lambda f: "/orchestra/_nodes/" in f),
    ("orchestra.trace (events, store, emitter)", lambda f: "/orchestra/trace/" in f),
    ("orchestra.runtime (_invoke)", lambda f: f.endswith("/orchestra/runtime.py")),
    ("orchestra (budget, policies, prompts, testing)",
     lambda f: "/orchestra/" in f and "site-packages" not in f),
    ("langgraph (pregel loop, channels, Send)", lambda f: "/langgraph/" in f),
    ("langchain_core (config merging, callbacks)", lambda f: "/langchain_core/" in f),
    ("pydantic", lambda f: "/pydantic" in f),
    ("thread-pool hop (concurrent.futures: sync callables run via run_in_executor)",
     lambda f: "/concurrent/futures/" in f),
    ("event-loop wait (selectors/epoll: idle until a thread or timer wakes it)",
     lambda f: f.endswith("/selectors.py")),
    ("asyncio (event loop, tasks)", lambda f: "/asyncio/" in f),
    ("dataclasses (asdict, replace)", lambda f: f.endswith("/dataclasses.py")),
    ("other stdlib (uuid, copy, threading...)", lambda f: "/lib/python3" in f),
    ("other", lambda f: True),
]


def _bucket_self_time(stats: dict[Any, Any]) -> dict[str, float]:
    """Self time per bucket. Builtins (``isinstance``, ``dict.get``) and frozen modules
    (``abc``) have no file: their time is split among their callers, recursively."""

    def is_anonymous(func: Any) -> bool:
        return func[0] == "~" or func[0].startswith("<frozen")

    out: dict[str, float] = {}

    def charge(func: Any, t: float, depth: int) -> None:
        if not is_anonymous(func) or depth > 6:
            name = next(b for b, test in _BUCKETS if test(func[0]))
            out[name] = out.get(name, 0.0) + t
            return
        callers = stats[func][4]
        total = sum(edge[2] for edge in callers.values()) or 0.0
        if not callers or total <= 0:
            out["other"] = out.get("other", 0.0) + t
            return
        for caller, edge in callers.items():
            charge(caller, t * edge[2] / total, depth + 1)

    for func, (_cc, _nc, tt, _ct, _callers) in stats.items():
        charge(func, tt, 0)
    return out


def profile_runtime(n: int) -> dict[str, Any]:
    """cProfile N zero-latency single-call queries; self time grouped by where it is spent."""
    pool = bench_pool()
    backend = FunctionBackend(lambda req: ANSWER, latency_s=0.0)
    orch = Orchestra(pool, policy=f"single:{pool.models[0].name}", budget=pool.budget,
                     backend=backend, store=False)

    async def go(count: int) -> None:
        for _ in range(count):
            await orch.arun(QUERY)

    asyncio.run(go(20))
    c0 = time.process_time()
    asyncio.run(go(n))
    cpu_ms = (time.process_time() - c0) / n * 1e3
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(go(n))
    prof.disable()
    st = pstats.Stats(prof)
    stats = st.stats  # type: ignore[attr-defined]
    total = st.total_tt  # type: ignore[attr-defined]
    buckets = _bucket_self_time(stats)
    # Cumulative time of the functions that matter (includes what they call).
    cum: dict[str, float] = {}
    wanted = {
        ("route.py", "route_node"), ("dispatch.py", "dispatch_node"), ("refine.py", "refine_node"),
        ("runtime.py", "emit"), ("common.py", "build_view"), ("common.py", "budget_dict"),
        ("runtime.py", "_invoke"), ("main.py", "ainvoke"), ("main.py", "astream"),
        ("events.py", "event_to_dict"), ("graph.py", "_after_route"), ("dataclasses.py", "replace"),
        ("runtime.py", "_steps_from_state"), ("prompts.py", "build_messages"),
        ("_runner.py", "atick"), ("_algo.py", "prepare_next_tasks"), ("_algo.py", "apply_writes"),
        ("_config.py", "merge_configs"), ("_loop.py", "tick"), ("_loop.py", "after_tick"),
        ("budget.py", "left"), ("testing.py", "complete"), ("uuid.py", "uuid4"),
    }
    for (fname, _line, fn), (_cc, _nc, _tt, ct, _callers) in stats.items():
        if (Path(fname).name, fn) in wanted:
            key = f"{Path(fname).name}:{fn}"
            cum[key] = cum.get(key, 0.0) + ct
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    return {
        "queries": n, "unprofiled_cpu_ms_per_query": cpu_ms,
        "profiled_total_ms_per_query": total / n * 1e3,
        # A single-call query runs 4 LangGraph supersteps: route, dispatch, refine, route.
        "langgraph_supersteps_per_query": 4,
        "self_time_ms_per_query": {k: v / n * 1e3 for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])},
        "cumulative_ms_per_query": {k: v / n * 1e3 for k, v in sorted(cum.items(), key=lambda kv: -kv[1])},
        "top_tottime": buf.getvalue(),
    }


# ---------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.02, help="seconds per call in (a)")
    ap.add_argument("--fanout-repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="also cProfile the runtime")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    n, warmup = args.queries, 10

    configs: list[Config] = [
        {"name": "single", "policy": "single:m0"},
        {"name": "ensemble(k=1)", "policy": "ensemble"},
        {"name": "single + SQLite trace store", "policy": "single:m0", "store": "sqlite"},
        {"name": "single + durable (SQLite checkpointer)", "policy": "single:m0", "durable": True},
        {"name": "single, sync Orchestra.run", "policy": "single:m0", "sync": True},
    ]
    t_start = time.perf_counter()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    overhead: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for cfg in configs:
            console.log(f"(a) {cfg['name']}: {n} queries at {args.latency * 1e3:.0f} ms")
            overhead.append(asyncio.run(measure_overhead(cfg, n, warmup, args.latency, tmp)))
        cpu_only = []
        for cfg in configs[:2]:
            zero = {**cfg, "name": f"{cfg['name']}, zero latency"}
            console.log(f"(a) {zero['name']}: {n} queries")
            cpu_only.append(asyncio.run(measure_overhead(zero, n, warmup, 0.0, tmp)))
        ks = [1, 2, 4, 8, 16]
        console.log(f"(b) fan-out k={ks}, {args.fanout_repeats} rounds each")
        fanout = asyncio.run(measure_fanout(ks, args.fanout_repeats, args.seed, (0.010, 0.050), 3))
        prof = profile_runtime(n) if args.profile else None

    result = {
        "benchmark": "runtime_overhead",
        "machine": machine_info(),
        "parameters": {"queries": n, "warmup": warmup, "latency_s": args.latency,
                       "fanout_ks": ks, "fanout_repeats": args.fanout_repeats,
                       "fanout_latency_range_s": [0.010, 0.050], "seed": args.seed,
                       "target_overhead_ms_per_round": TARGET_MS,
                       "backend": "orchestra.testing.FunctionBackend (asyncio.sleep latency)"},
        "overhead": overhead,
        "overhead_zero_latency": cpu_only,
        "fanout": fanout,
        "profile": prof,
        "elapsed_s": time.perf_counter() - t_start,
        # Other processes on the machine inflate wall times (not CPU times): compare runs only
        # at similar load.
        "load_average_at_start": load_start,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    write_results(args.out, result)

    # ---- tables
    t = Table(title=f"(a) runtime overhead per round — {n} queries, backend latency "
                    f"{args.latency * 1e3:.0f} ms (target: median < {TARGET_MS:.0f} ms)")
    for col in ("configuration", "direct median", "runtime median", "overhead/round median",
                "overhead/round p90", "CPU/round median", "target"):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    for row in overhead + cpu_only:
        o = row["overhead_per_round"]
        t.add_row(row["name"], f"{row['direct']['median_ms']:.2f} ms",
                  f"{row['runtime']['median_ms']:.2f} ms", f"{o['median_ms']:.2f} ms",
                  f"{o['p90_ms']:.2f} ms", f"{row['overhead_cpu_per_round']['median_ms']:.2f} ms",
                  "[green]met[/]" if row["meets_target"] else "[red]missed[/]")
    console.print(t)
    f = Table(title="(b) fan-out: one round of k parallel calls, latencies 10–50 ms")
    for col in ("k", "round wall", "slowest call", "sum of calls", "wall − slowest",
                "wall / slowest", "wall / sum", "gather / slowest"):
        f.add_column(col, justify="right")
    for row in fanout:
        f.add_row(str(row["k"]), f"{row['round_wall']['median_ms']:.1f} ms",
                  f"{row['slowest_call']['median_ms']:.1f} ms",
                  f"{row['sum_of_calls']['median_ms']:.1f} ms",
                  f"{row['round_minus_slowest_ms']['median']:.1f} ms",
                  f"{row['ratio_wall_to_slowest']['median']:.3f} (p90 {row['ratio_wall_to_slowest']['p90']:.3f})",
                  f"{row['ratio_wall_to_sum']['median']:.3f}",
                  f"{row['gather_ratio_to_slowest']['median']:.3f}")
    console.print(f)
    if prof is not None:
        p = Table(title=f"profile: self time per zero-latency single query "
                        f"({prof['profiled_total_ms_per_query']:.2f} ms under cProfile, "
                        f"{prof['unprofiled_cpu_ms_per_query']:.2f} ms CPU without; "
                        f"4 supersteps: route, dispatch, refine, route)")
        p.add_column("where")
        p.add_column("ms / query", justify="right")
        p.add_column("share", justify="right")
        for k, v in prof["self_time_ms_per_query"].items():
            p.add_row(k, f"{v:.3f}", f"{v / prof['profiled_total_ms_per_query']:.0%}")
        console.print(p)
        c = Table(title="profile: cumulative time per query (includes callees)")
        c.add_column("function")
        c.add_column("ms / query", justify="right")
        for k, v in prof["cumulative_ms_per_query"].items():
            c.add_row(k, f"{v:.3f}")
        console.print(c)
    end = result["load_average_at_end"]
    if load_start is not None and end is not None:
        console.print(f"load average (1 min) at start / end: {load_start[0]:.1f} / {end[0]:.1f} "
                      f"on {os.cpu_count()} CPUs (wall times need a quiet machine; CPU times are "
                      "steadier)")
    console.print(f"results: {args.out}  ({result['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()

"""Load test of ``orchestra serve``: what the HTTP server adds over calling the runtime in-process.

Run from the repository root (needs the shared RouterBench data, ``../shared/data``)::

    .venv/bin/python benchmarks/serve_load.py                       # 64 clients, 30 s each side
    .venv/bin/python benchmarks/serve_load.py --clients 16 --seconds 5 --ray --replicas 2

One run measures, side by side, the same request mix (RouterBench test queries; model names
``auto``, ``orchestra/strongest`` and a pool model by name, taking turns):

- **in-process**: ``--clients`` tasks calling :meth:`Orchestra.arun` in a loop on one event
  loop, over the same pool, backend, per-request budget and a SQLite trace store;
- **http**: ``--clients`` official ``openai.AsyncOpenAI`` clients (``--stream-share`` of them
  with ``stream=True``) against ``orchestra serve``'s app under uvicorn in a child process on
  127.0.0.1, each client with its own API key from a :class:`KeyStore` whose limits are small
  enough that some requests are refused (a 429 is a correct answer, not an error);
- **ray** (``--ray``): the same against ``--replicas`` Ray Serve replicas
  (:func:`orchestra.serve.ray_serve.run_on_ray`) sharing the key and trace SQLite files.

The backend is the RouterBench replay pool (:class:`ReplayBackend`, ``--latency-ms`` of
simulated provider latency per call) behind a fault injector: each call draws its fault from a
:class:`orchestra.backends.faulty.FaultPlan` (``rate_limit`` and ``server_error``, unbilled),
selected through the run's ``meta["fault_plan"]``, which the server passes on with
``create_app(..., meta=...)``. A call that draws a fault fails with a ``BackendError`` whose
message says "injected"; a run whose every call failed has no answer (502 ``no_answer``): that
5xx is explained by the plan. Any other 5xx is a defect.

At ``--seconds`` the clients are cancelled, requests in flight included (their runs are
interrupted). Then the benchmark checks and reports:

- lost traces: a 200 whose run is not in the trace store with a finished status;
- per key: settled spend + live holds above a limit (overspend), settled spend different from
  the sum of the key's traces' costs (mismatch), live holds left;
- unexplained 5xx (and streams that ended in an error event not explained by the plan);
- interrupted runs: counted, each with its spend settled (no live hold left).

Results go to ``benchmarks/results/serve_load.json``; a table is printed. Wall-clock numbers
depend on the machine's load (reported): the HTTP/in-process ratio is what means something.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ORCHESTRA_SHARED_DATA", str(ROOT.parent.parent / "shared" / "data"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from runtime_overhead import machine_info, write_results

from orchestra.backends import faulty
from orchestra.backends.base import Completion, CompletionRequest
from orchestra.backends.replay import ReplayBackend, pool_from_outcomes
from orchestra.errors import BackendError
from orchestra.spec import Budget, ModelSpec, Pool

RESULTS = ROOT / "results" / "serve_load.json"
MODELS = ("mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview")
#: Model names the requests take turns with (``auto`` routes with the pool's ``cheapest``).
MIX = ("auto", "orchestra/strongest", "mistralai/mixtral-8x7b-chat")
FAULTS = {"ok": 0.8, "rate_limit": 0.1, "server_error": 0.1}
INJECTED = "injected fault"
#: The pool's per-run limits; the per-request USD limit is each key's.
POOL_BUDGET = Budget(rounds=2, usd=0.05)
TRACE_RE = re.compile(r"trace ([0-9a-f]{32})")
FINISHED = {"ok", "budget", "error", "interrupted"}
#: Error types of a stream's error event that a plain response would send as a 5xx.
SERVER_SIDE = {"upstream_error", "server_error", "timeout_error"}


# ---------------------------------------------------------------------------- pool and backend
class FaultInjector:
    """A backend that fails some calls of the wrapped one, as the run's fault plan says.

    The plan is looked up by the call's ``meta["fault_plan"]`` (so the server must pass the
    meta on); ``rate_limit`` and ``server_error`` fail before the inner call (not billed).
    """

    def __init__(self, inner: ReplayBackend, plans: dict[str, faulty.FaultPlan]) -> None:
        self.inner = inner
        self.plans = plans

    def prompt_tokens_bound(self, model: ModelSpec, messages: list[dict[str, Any]]) -> int:
        return self.inner.prompt_tokens_bound(model, messages)

    def cost_bound(self, model: ModelSpec, messages: list[dict[str, Any]], max_tokens: int,
                   meta: dict[str, Any]) -> float | None:
        return self.inner.cost_bound(model, messages, max_tokens, meta)

    async def complete(self, request: CompletionRequest) -> Completion:
        plan = self.plans.get(str(request.meta.get("fault_plan")))
        if plan is None:
            raise RuntimeError(f"no fault plan {request.meta.get('fault_plan')!r} in the run's "
                               "meta: the server did not pass meta={'fault_plan': ...} on")
        kind, _ = plan.draw()
        if kind != "ok":
            if self.inner.latency_s:
                await asyncio.sleep(self.inner.latency_s / 2)
            raise BackendError(f"{request.model.name}: {INJECTED} {kind}", model=request.model.id)
        return await self.inner.complete(request)


def build_pool() -> tuple[Pool, list[str]]:
    """The RouterBench test replay pool (three models) and its queries."""
    from orchestra.eval.data import load_eval_data

    data = load_eval_data("routerbench", split="test", priors="auto")
    pool = pool_from_outcomes(data.table, models=list(MODELS), quality=data.priors,
                              budget=POOL_BUDGET, table_name="serve-load")
    return pool, list(data.table.queries)


def build_backend(latency_s: float, seed: int) -> tuple[FaultInjector, faulty.FaultPlan]:
    plan = faulty.new_plan(FAULTS, seed=seed)
    return FaultInjector(ReplayBackend(latency_s=latency_s), {plan.id: plan}), plan


def build_app(latency_s: float, seed: int, traces: str, keys: str) -> Any:
    """The server's app over the replay pool, the fault injector and the shared files."""
    from orchestra.serve.app import create_app

    pool, _ = build_pool()
    backend, plan = build_backend(latency_s, seed)
    app = create_app(pool, backend=backend, store=traces, keys=keys, timeout_s=60.0,
                     check_keys=False, meta={"fault_plan": plan.id})
    app.state.fault_plan = plan
    return app


def _serve_child(port: int, latency_s: float, seed: int, traces: str, keys: str,
                 faults_out: str, stop: Any) -> None:
    """The server process: uvicorn on 127.0.0.1 until ``stop`` is set (a signal would be
    re-raised by uvicorn after its shutdown, killing the process before it reports); then the
    plan's fault counts go to ``faults_out``."""
    import threading

    import uvicorn

    app = build_app(latency_s, seed, traces, keys)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=10))

    def watch() -> None:
        stop.wait()
        server.should_exit = True

    threading.Thread(target=watch, daemon=True).start()
    server.run()
    Path(faults_out).write_text(json.dumps(Counter(app.state.fault_plan.faults)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------- load
class Side:
    """What one side saw: latency of each answered request, status counts, trace ids."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lat_ok: list[float] = []
        self.status: Counter[str] = Counter()
        self.ok_traces: list[str] = []
        self.error_traces: dict[str, list[str]] = {}  # status -> trace ids (5xx, stream errors)
        self.unexplained_errors: list[str] = []
        self.cut = 0
        self.wall_s = 0.0
        self.epoch = 0  # 0 while warming up, 1 while measuring
        self.warmup_requests = 0

    def count(self, epoch: int, status: str, started: float | None = None) -> None:
        """One request's outcome; its latency when it answered (``started``). A request that
        started while warming up counts as warm-up only."""
        if epoch != self.epoch or epoch == 0:
            self.warmup_requests += 1
            return
        self.status[status] += 1
        if started is not None:
            self.lat_ok.append(time.perf_counter() - started)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.lat_ok)
        done = sum(self.status.values())
        return {
            "requests": done, "answered_200": len(lat), "cut_at_deadline": self.cut,
            "warmup_requests": self.warmup_requests,
            "req_per_s": done / self.wall_s if self.wall_s else None,
            "answered_per_s": len(lat) / self.wall_s if self.wall_s else None,
            "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
            "mean_ms": statistics.fmean(lat) * 1e3 if lat else None,
            "status": dict(sorted(self.status.items())), "wall_s": self.wall_s,
        }


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1e3


async def _drive(clients: int, warmup: float, seconds: float,
                 one: Callable[[int, int], Any], side: Side) -> None:
    """``clients`` loops calling ``one(client, i)``: ``warmup`` seconds not counted, then
    ``seconds`` measured; then cancel them all, requests in flight included."""
    counter = iter(range(10**9))

    async def loop(c: int) -> None:
        while True:
            await one(c, next(counter))

    tasks = [asyncio.create_task(loop(c)) for c in range(clients)]
    await asyncio.sleep(warmup)
    side.epoch = 1
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    res = await asyncio.gather(*tasks, return_exceptions=True)
    side.wall_s = time.perf_counter() - t0
    side.cut = sum(isinstance(r, asyncio.CancelledError) for r in res)
    bad = [r for r in res if isinstance(r, BaseException)
           and not isinstance(r, asyncio.CancelledError)]
    if bad:
        raise RuntimeError(f"a client loop failed: {bad[0]!r}") from bad[0]


async def in_process(pool: Pool, queries: list[str], traces: Path, args: argparse.Namespace,
                     side: Side) -> dict[str, int]:
    from orchestra.runtime import Orchestra
    from orchestra.trace.store import SQLiteTraceStore

    store = SQLiteTraceStore(traces)
    backend, plan = build_backend(args.latency_ms / 1e3, args.seed)
    per_request = Budget(**{**POOL_BUDGET.model_dump(), "usd": args.per_request_usd})
    orchs = {m: Orchestra(pool, policy=_policy_of(m), budget=per_request, backend=backend,
                          store=store, check_keys=False) for m in MIX}
    meta = {"fault_plan": plan.id, "source": "bench"}

    async def one(c: int, i: int) -> None:
        t, epoch = time.perf_counter(), side.epoch
        try:
            r = await orchs[MIX[i % len(MIX)]].arun(queries[i % len(queries)], meta=meta)
        except Exception as e:  # noqa: BLE001 - counted by kind, as the server answers it
            side.count(epoch, f"raised {type(e).__name__}")
            return
        if r.answer is None and r.stop_reason.startswith("budget"):
            side.count(epoch, "no answer (budget)")  # the server's 400 budget_too_small
            return
        if r.answer is None:  # the server's 502 no_answer: the fault plan must explain it
            side.count(epoch, "no answer")
            side.error_traces.setdefault("no answer", []).append(r.trace_id)
            return
        side.count(epoch, "answered", t)
        side.ok_traces.append(r.trace_id)

    await _drive(args.clients, args.warmup, args.seconds, one, side)
    store.close()
    return dict(Counter(plan.faults))


def _policy_of(model: str) -> str:
    if model == "auto":
        return "cheapest"
    if model.startswith("orchestra/"):
        return model.split("/", 1)[1]
    return f"single:{model}"


async def over_http(url: str, raw_keys: list[str], queries: list[str],
                    args: argparse.Namespace, side: Side) -> None:
    import openai
    from openai.types.chat import ChatCompletionMessageParam

    n_stream = round(args.clients * args.stream_share)
    clients = [openai.AsyncOpenAI(base_url=url + "/v1", api_key=raw_keys[c], max_retries=0,
                                  timeout=120) for c in range(args.clients)]

    def error_of(status: str, message: str) -> None:
        m = TRACE_RE.search(message)
        if m:
            side.error_traces.setdefault(status, []).append(m.group(1))
        else:
            side.unexplained_errors.append(f"{status}: {message[:200]}")

    async def one(c: int, i: int) -> None:
        model = MIX[i % len(MIX)]
        msgs: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": queries[i % len(queries)]}]
        t, epoch = time.perf_counter(), side.epoch
        try:
            if c < n_stream:
                stream = await clients[c].chat.completions.create(
                    model=model, messages=msgs, stream=True)
                trace, text = "", ""
                async for chunk in stream:
                    trace = chunk.id.removeprefix("chatcmpl-")
                    if chunk.choices and chunk.choices[0].delta.content:
                        text += chunk.choices[0].delta.content
                status = "200 stream"
            else:
                done = await clients[c].chat.completions.create(model=model, messages=msgs)
                trace = done.id.removeprefix("chatcmpl-")
                text = done.choices[0].message.content or ""
                status = "200"
            if not text.strip():
                status += " empty answer"
        except openai.APIStatusError as e:
            status = f"{e.status_code} {_code(e.body)}"
            side.count(epoch, status)
            if e.status_code >= 500:
                error_of(status, str(e.message))
            return
        except openai.APIError as e:  # an error event inside a stream (HTTP status was 200)
            status = f"stream error {_code(e.body)}"
            side.count(epoch, status)
            if isinstance(e.body, dict) and e.body.get("type") in SERVER_SIDE:
                error_of(status, str(e.message))
            return
        side.count(epoch, status, t)
        side.ok_traces.append(trace)

    try:
        await _drive(args.clients, args.warmup, args.seconds, one, side)
    finally:
        for cl in clients:
            await cl.close()


def _code(body: object) -> str:
    """The ``code`` of an OpenAI-shaped error body (the openai client gives its ``error``)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("code") or inner.get("type") or "?")
    return "?"


async def wait_idle(url: str, seconds: float = 60.0) -> None:
    """Until the server has no request in flight (the cut runs have recorded themselves)."""
    import httpx

    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            r = await http.get(url + "/health")
            if r.status_code == 200 and r.json().get("in_flight", 0) == 0:
                return
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------- checks
def check(side: Side, traces: Path, keys_path: Path | None,
          key_names: list[str]) -> dict[str, Any]:
    """Lost traces, key books against limits and traces, unexplained 5xx, interruptions."""
    from orchestra.trace.store import SQLiteTraceStore

    store = SQLiteTraceStore(traces)
    try:
        runs = {r["run_id"]: r for r in store.list_runs(limit=max(store.count_runs(), 1))}
        lost = [t for t in side.ok_traces
                if t not in runs or runs[t].get("status") not in FINISHED]
        unexplained = list(side.unexplained_errors)
        explained = 0
        for status, ids in side.error_traces.items():
            for tid in ids:
                if _explained(store, tid):
                    explained += 1
                else:
                    unexplained.append(f"{status}: trace {tid} "
                                       f"({(runs.get(tid) or {}).get('stop_reason')})")
        statuses = Counter(str(r.get("status")) for r in runs.values())
        out: dict[str, Any] = {
            "runs_in_store": len(runs), "run_status": dict(statuses),
            "lost_traces": len(lost), "lost_examples": lost[:5],
            "errors_explained_by_faults": explained,
            "unexplained_5xx": len(unexplained), "unexplained_examples": unexplained[:5],
            "interrupted_runs": statuses.get("interrupted", 0),
            "still_running": statuses.get("running", 0),
        }
        if keys_path is not None:
            out.update(_check_keys(runs, keys_path, key_names))
        return out
    finally:
        store.close()


def _explained(store: Any, trace_id: str) -> bool:
    """The run answered nothing because every call it made drew an injected fault."""
    calls = [e for e in store.events(trace_id) if e["kind"] == "call_finished"]
    return bool(calls) and all(INJECTED in str(e.get("error") or "") for e in calls)


def _check_keys(runs: dict[str, dict[str, Any]], keys_path: Path,
                names: list[str]) -> dict[str, Any]:
    from orchestra.serve.keys import KeyStore

    by_key: dict[str, float] = defaultdict(float)
    for r in runs.values():
        meta = r.get("meta") or {}
        if isinstance(meta, str):
            meta = json.loads(meta)
        if meta.get("api_key"):
            by_key[meta["api_key"]] += float(r.get("cost_usd") or 0.0)
    keys = KeyStore(keys_path)
    try:
        over, mismatch, live, refused_keys = [], [], 0, 0
        for name in names:
            u = keys.usage(name)
            live += u["live_holds"]
            for w in ("per_day", "total"):
                lim = u[w]["limit"]
                if lim is not None and u[w]["spent"] + u[w]["held"] > lim + 1e-9:
                    over.append(f"{name} {w}: {u[w]['spent']} + {u[w]['held']} > {lim}")
            if u["per_request"]["limit"] is not None and u["per_request"]["overruns"]:
                over.append(f"{name} per_request: {u['per_request']['overruns']} overruns")
            spent = u["total"]["spent"]
            if abs(spent - by_key.get(name, 0.0)) > 1e-8 + 1e-6 * spent:
                mismatch.append(f"{name}: settled {spent!r} != traces {by_key.get(name, 0.0)!r}")
            refused_keys += u["total"]["left"] is not None and u["total"]["left"] < 1e-4
        return {"key_overspends": len(over), "overspend_examples": over[:5],
                "key_trace_mismatches": len(mismatch), "mismatch_examples": mismatch[:5],
                "live_holds_left": live, "keys_exhausted": refused_keys,
                "settled_spend_usd": sum(keys.usage(n)["total"]["spent"] for n in names)}
    finally:
        keys.close()


def make_keys(path: Path, clients: int, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """One key per client; every fourth key gets a tiny total so that it runs out (429s)."""
    from orchestra.serve.keys import KeyStore

    keys = KeyStore(path)
    raws, names = [], []
    try:
        for c in range(clients):
            name = f"client-{c}"
            small = c % 4 == 3
            raw, _ = keys.create(name, per_request_usd=args.per_request_usd,
                                 total_usd=args.small_total_usd if small else 5.0)
            raws.append(raw)
            names.append(name)
    finally:
        keys.close()
    return raws, names


# ---------------------------------------------------------------------------- main
def run_http(args: argparse.Namespace, tmp: Path, queries: list[str],
             console: Console) -> dict[str, Any]:
    traces, keys_path = tmp / "http-traces.sqlite", tmp / "http-keys.sqlite"
    raws, names = make_keys(keys_path, args.clients, args)
    port = free_port()
    faults_out = tmp / "http-faults.json"
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(
        target=_serve_child, args=(port, args.latency_ms / 1e3, args.seed, str(traces),
                                   str(keys_path), str(faults_out), stop), daemon=True)
    t = time.perf_counter()
    proc.start()
    url = f"http://127.0.0.1:{port}"
    _wait_up(url, 120, lambda: proc.is_alive())
    console.log(f"http: server up in {time.perf_counter() - t:.1f} s on {url}")
    side = Side("http")
    asyncio.run(_http_side(url, raws, queries, args, side))
    stop.set()
    proc.join(60)
    faults = json.loads(faults_out.read_text()) if faults_out.exists() else None
    return {**side.summary(), "faults_drawn": faults,
            "checks": check(side, traces, keys_path, names)}


async def _http_side(url: str, raws: list[str], queries: list[str], args: argparse.Namespace,
                     side: Side) -> None:
    await over_http(url, raws, queries, args, side)
    await wait_idle(url)


def _wait_up(url: str, seconds: float, alive: Callable[[], bool]) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the server process died at start")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server at {url} did not answer /health within {seconds:g} s")


def run_ray(args: argparse.Namespace, tmp: Path, queries: list[str],
            console: Console) -> dict[str, Any]:
    from orchestra.serve.ray_serve import _stop, run_on_ray

    traces, keys_path = tmp / "ray-traces.sqlite", tmp / "ray-keys.sqlite"
    raws, names = make_keys(keys_path, args.clients, args)
    port = free_port()
    latency, seed = args.latency_ms / 1e3, args.seed

    def build() -> Any:
        return build_app(latency, seed, str(traces), str(keys_path))

    t = time.perf_counter()
    run_on_ray(build, host="127.0.0.1", port=port, replicas=args.replicas, blocking=False)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, 300, lambda: True)
        started = time.perf_counter() - t
        console.log(f"ray: {args.replicas} replicas up in {started:.1f} s on {url}")
        side = Side("ray")
        asyncio.run(_http_side(url, raws, queries, args, side))
    finally:
        _stop(True)
    return {**side.summary(), "replicas": args.replicas, "start_s": started,
            "checks": check(side, traces, keys_path, names)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds per side")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds of load before measuring (not counted)")
    ap.add_argument("--stream-share", type=float, default=0.5,
                    help="share of the HTTP clients that stream")
    ap.add_argument("--latency-ms", type=float, default=20.0,
                    help="simulated provider latency per call")
    ap.add_argument("--per-request-usd", type=float, default=0.02,
                    help="each key's per-request limit (and the in-process run's budget)")
    ap.add_argument("--small-total-usd", type=float, default=0.01,
                    help="total limit of every fourth key, small enough to run out")
    ap.add_argument("--ray", action="store_true", help="also run against Ray Serve replicas")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or not 0.0 <= args.stream_share <= 1.0:
        ap.error(f"need --clients >= 1 (got {args.clients}), --seconds > 0 (got "
                 f"{args.seconds}) and 0 <= --stream-share <= 1 (got {args.stream_share})")
    console = Console() if sys.stdout.isatty() else Console(width=160)
    if not (Path(os.environ["ORCHESTRA_SHARED_DATA"]) / "routerbench").is_dir():
        console.print(f"skipped: no RouterBench data under {os.environ['ORCHESTRA_SHARED_DATA']}"
                      " (set ORCHESTRA_SHARED_DATA to the shared data folder)")
        return
    load_start = list(os.getloadavg())
    t_start = time.perf_counter()
    pool, queries = build_pool()
    sides: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="orchestra-serve-load-") as d:
        tmp = Path(d)
        console.log(f"in-process: {args.clients} tasks, {args.seconds:g} s")
        ip = Side("in-process")
        faults = asyncio.run(in_process(pool, queries, tmp / "ip-traces.sqlite", args, ip))
        sides["in_process"] = {**ip.summary(), "faults_drawn": faults,
                               "checks": check(ip, tmp / "ip-traces.sqlite", None, [])}
        console.log(f"http: {args.clients} openai clients "
                    f"({round(args.clients * args.stream_share)} streaming), {args.seconds:g} s")
        sides["http"] = run_http(args, tmp, queries, console)
        if args.ray:
            try:
                sides["ray"] = run_ray(args, tmp, queries, console)
            except Exception as e:  # noqa: BLE001 - reported: Ray may not start on this machine
                sides["ray"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    base = sides["in_process"]
    for s in sides.values():
        if "p50_ms" in s and base["p50_ms"]:
            s["ratio_p50"] = s["p50_ms"] / base["p50_ms"]
            s["ratio_p99"] = s["p99_ms"] / base["p99_ms"] if s["p99_ms"] else None
    result = {
        "benchmark": "serve_load", "machine": machine_info(),
        "parameters": {**{k: (str(v) if isinstance(v, Path) else v)
                          for k, v in vars(args).items()},
                       "models": list(MODELS), "mix": list(MIX), "faults": FAULTS,
                       "pool_budget": POOL_BUDGET.model_dump(exclude_none=True)},
        "sides": sides, "elapsed_s": time.perf_counter() - t_start,
        "load_average_at_start": load_start, "load_average_at_end": list(os.getloadavg()),
    }
    write_results(args.out, result)
    print_table(console, result)


def print_table(console: Console, result: dict[str, Any]) -> None:
    p = result["parameters"]
    table = Table(title=f"orchestra serve load — {p['clients']} clients, {p['seconds']:g} s, "
                        f"{p['latency_ms']:g} ms provider latency")
    for h in ("side", "req/s", "200/s", "p50 ms", "p99 ms", "p50 ×", "p99 ×", "status",
              "lost", "overspend", "mismatch", "unexpl. 5xx", "interrupted", "cut"):
        table.add_column(h, justify="left" if h in ("side", "status") else "right")

    def f(x: Any, fmt: str = ".1f") -> str:
        return "" if x is None else format(x, fmt)

    for name, s in result["sides"].items():
        if "error" in s:
            table.add_row(name, *[""] * 6, s["error"][:60], *[""] * 6)
            continue
        c = s["checks"]
        table.add_row(name, f(s["req_per_s"]), f(s["answered_per_s"]), f(s["p50_ms"]),
                      f(s["p99_ms"]), f(s.get("ratio_p50"), ".2f"), f(s.get("ratio_p99"), ".2f"),
                      " ".join(f"{k}:{v}" for k, v in s["status"].items()),
                      str(c["lost_traces"]), str(c.get("key_overspends", "")),
                      str(c.get("key_trace_mismatches", "")), str(c["unexplained_5xx"]),
                      str(c["interrupted_runs"]), str(s["cut_at_deadline"]))
    console.print(table)
    la0, la1 = result["load_average_at_start"], result["load_average_at_end"]
    console.print(f"load average {la0[0]:.1f} → {la1[0]:.1f} on {os.cpu_count()} CPUs; "
                  f"results: {RESULTS if p['out'] == str(RESULTS) else p['out']}")


if __name__ == "__main__":
    main()

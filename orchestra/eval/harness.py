"""Evaluate routing policies on recorded outcomes, through the real runtime.

Every policy runs query by query through :meth:`Orchestra.arun <orchestra.runtime.Orchestra.arun>`
on a replay pool (:func:`orchestra.backends.replay.pool_from_outcomes`): the same route →
dispatch → refine graph, budget ledger and trace events as a live run, with each call answered
by its recorded response, tokens and cost. Queries run concurrently (``asyncio.gather`` in
batches of ``concurrency``); no trace store by default. Each run's final answer is graded by
:mod:`orchestra.eval.grading`; cost is what the run was charged (the sum of its calls' recorded
costs).

The pieces, one job a module: :mod:`~orchestra.eval.specs` (which policies, which λ),
:mod:`~orchestra.eval.data` (which queries), :mod:`~orchestra.eval.grading` (the score of an
answer), :mod:`~orchestra.eval.references` (oracle, single models, their hull),
:mod:`~orchestra.eval.report` (what was measured, the JSON report) and this one (the runs and
their metrics).

Metrics (see :mod:`orchestra.eval.metrics`)
============================================
- **AIQ**: x = policy total cost / total cost of the most expensive single model on the same
  queries; area on [0, 1] under the upper convex hull of the policy's (x, mean score) points
  (one point per λ), zero left of its cheapest point, held flat from its best point to x = 1.
- **APGR** for a strong/weak pair (default: the most and least expensive single models): the
  policy runs again on a pool of only those two models; each point gives (share of queries
  that called the strong model, mean score); APGR is RouteLLM's area under the performance gap
  recovered over the share, anchored at (0, weak) and (1, strong). A random 50/50 router scores
  about 0.5.
- **cost to match**: the cheapest cost on the policy's hull that reaches the best single
  model's score, as a fraction of that model's cost.
- **Δ hull**: the policy's score minus the single-model hull's score at the same cost (what
  mixing single models could reach for that money); > 0 means the policy beats routing to one
  model at equal cost.

References in every report: the oracle (cheapest model with the best score per query), the
best single model, the cheapest single model, a uniformly random model (expected value), and
the hull of the single models.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, TypedDict, TypeVar, Unpack

import numpy as np

from orchestra.errors import OrchestraError, RunError, UserError
from orchestra.eval import metrics as M
from orchestra.eval.data import EvalData
from orchestra.eval.grading import EvalQuery, Grader
from orchestra.eval.references import References
from orchestra.eval.report import EvalReport, PointResult, PolicyResult
from orchestra.eval.specs import DEFAULT_LAMBDAS, LambdaSweep, PolicySpec, parse_lambdas

if TYPE_CHECKING:
    from orchestra.backends.base import Backend
    from orchestra.outcomes.table import OutcomeTable
    from orchestra.policies.base import Policy
    from orchestra.runtime import Orchestra, RunResult
    from orchestra.spec import Budget, Pool

__all__ = ["EvalOptions", "ProgressFn", "Runner", "aevaluate", "evaluate"]

_T = TypeVar("_T")

#: ``progress(label, done, total)``, called after each batch of queries.
ProgressFn = Callable[[str, int, int], None]


class EvalOptions(TypedDict, total=False):
    """The keyword options of :func:`evaluate` (those of :func:`aevaluate`)."""

    lambdas: str | Sequence[float] | None
    backend: Backend | str
    budget: Budget | None
    concurrency: int
    strong: str | None
    weak: str | None
    apgr: bool
    progress: ProgressFn | None
    share_runs: bool


# ---------------------------------------------------------------------------- one policy
def _pool_for(data: EvalData, models: Sequence[str] | None, budget: Budget | None,
              table_name: str | None) -> Pool:
    from orchestra.backends.replay import pool_from_outcomes

    return pool_from_outcomes(data.table, models=models, budget=budget, quality=data.priors,
                              table_name=table_name)


def _resolve(spec: PolicySpec, pool: Pool, extra: Mapping[str, Any] | None = None) -> Policy:
    from orchestra.policies.resolve import resolve_policy

    return resolve_policy(spec.name, pool, {**spec.params, **(extra or {})})


def _sweepable(policy: Policy) -> bool:
    return callable(getattr(policy, "default_lambdas", None)) or hasattr(policy, "lam")


def _warm(policy: Policy, queries: Sequence[EvalQuery]) -> float:
    """Let a policy batch its per-query work before the runs (learned routers embed queries)."""
    t0 = time.perf_counter()
    texts = [q.text for q in queries]
    tasks = [q.task for q in queries]
    prepare = getattr(policy, "prepare", None)
    if callable(prepare):
        prepare(texts, tasks)
    else:
        from orchestra.policies.learned import LearnedRouterPolicy

        if isinstance(policy, LearnedRouterPolicy):
            policy.predict(texts, tasks)
    return time.perf_counter() - t0


@dataclass(frozen=True)
class _Run:
    """What one graded run contributes to a point (kept instead of the run's events)."""

    score: float
    aggregated: bool
    cost: float
    calls: int
    rounds: int
    stop_reason: str
    called: tuple[str, ...]
    call_errors: tuple[str, ...]


def _record(grader: Grader, q: EvalQuery, res: RunResult) -> _Run:
    score, agg = grader.grade(q, res.answer, res.events, res.answer_from)
    called: list[str] = []
    errs: list[str] = []
    for step in res.steps:
        for c in step["calls"]:
            if c["error"]:
                errs.append(str(c["error"]))
            else:
                called.append(c["model"])
    return _Run(score=score, aggregated=bool(agg), cost=res.cost_usd, calls=res.calls,
                rounds=res.rounds, stop_reason=res.stop_reason, called=tuple(called),
                call_errors=tuple(errs))


def _point(runs: Sequence[_Run], queries: Sequence[EvalQuery], *, lam: float | None,
           strong: str | None, seconds: float, online: bool) -> PointResult:
    """A point from one graded run per query (in query order)."""
    n = len(queries)
    scores = np.array([r.score for r in runs], dtype=np.float64)
    costs = np.array([r.cost for r in runs], dtype=np.float64)
    calls = sum(r.calls for r in runs)
    rounds = sum(r.rounds for r in runs)
    aggregated = sum(r.aggregated for r in runs)
    errors = sum(len(r.call_errors) for r in runs)
    first_error = next((r.call_errors[0] for r in runs if r.call_errors), None)
    stops: Counter[str] = Counter(r.stop_reason for r in runs)
    per_model: Counter[str] = Counter(m for r in runs for m in r.called)
    strong_hits = sum(strong in r.called for r in runs) if strong is not None else 0
    per_task: dict[str, dict[str, float]] = {}
    tasks = np.array([q.task for q in queries], dtype=object)
    for t in sorted(set(tasks.tolist())):
        sel = tasks == t
        per_task[t] = {"n": int(sel.sum()), "mean_score": float(scores[sel].mean()),
                       "cost": float(costs[sel].sum())}
    return PointResult(
        lam=lam, n=n, total_cost=float(costs.sum()), mean_score=float(scores.mean()) if n else 0.0,
        calls_per_query=calls / n if n else 0.0, rounds_per_query=rounds / n if n else 0.0,
        aggregated=aggregated, errors=errors, first_error=first_error, stop_reasons=dict(stops),
        seconds=seconds, queries_per_s=n / seconds if seconds > 0 else float("inf"),
        strong_share=strong_hits / n if (strong is not None and n) else None,
        per_task=per_task, model_calls=dict(sorted(per_model.items())), online=online,
    )


class Runner:
    """How one query of a point runs and is graded: straight through the runtime here; the
    live evaluation (:mod:`orchestra.eval.live`) adds a journal and a total budget.

    Attributes:
        grader: grades each run's answer.
    """

    def __init__(self, grader: Grader) -> None:
        self.grader = grader

    async def run(self, orch: Orchestra, q: EvalQuery, key: str
                  ) -> tuple[_Run, RunResult | None]:
        """Run ``q`` with ``orch`` and grade it; ``key`` names the run within the evaluation
        (policy, λ, query). Returns the graded run and the result (None when none was made
        now, e.g. a run read back from a journal)."""
        res = await orch.arun(q.text, meta={"query_id": q.query_id, "task": q.task})
        return _record(self.grader, q, res), res


async def _gather(aws: Sequence[Awaitable[_T]]) -> list[_T]:
    """``asyncio.gather`` that lets every run of a batch finish (their spend is recorded) before
    the first failure is raised."""
    out = await asyncio.gather(*aws, return_exceptions=True)
    for r in out:
        if isinstance(r, BaseException):
            raise r
    return out  # type: ignore[return-value]


async def _run_point(policy: Policy, pool: Pool, backend: Backend, runner: Runner,
                     queries: Sequence[EvalQuery], *, lam: float | None, budget: Budget | None,
                     concurrency: int, strong: str | None, label: str,
                     progress: ProgressFn | None) -> PointResult:
    """Every query through the runtime with one policy (one λ point)."""
    from orchestra.runtime import Orchestra

    orch = Orchestra(pool, policy=policy, budget=budget, backend=backend, store=False)
    # An online policy (one with observe) learns from each graded answer, batch by batch.
    online = callable(getattr(policy, "observe", None))
    runs: list[_Run] = []
    t0 = time.perf_counter()
    for start in range(0, len(queries), concurrency):
        batch = queries[start:start + concurrency]
        results = await _gather([runner.run(orch, q, f"{label}|{q.query_id}") for q in batch])
        for run, res in results:
            if online and res is not None:
                orch.feedback(res.trace_id, score=min(1.0, max(0.0, run.score)))
            runs.append(run)
        if progress is not None:
            progress(label, min(start + concurrency, len(queries)), len(queries))
    return _point(runs, queries, lam=lam, strong=strong, seconds=time.perf_counter() - t0,
                  online=online)


#: A route-once plan: the (agent, model) calls of the run's only route, () to answer at once.
Plan: TypeAlias = tuple[tuple[str, str], ...]


def _plans(policy: Policy) -> Callable[..., list[Plan]] | None:
    """The policy's ``route_once_plan`` when it has one (learned routers): its decisions for a
    batch of queries without running them, where the decision fixes the whole run."""
    fn = getattr(policy, "route_once_plan", None)
    return fn if callable(fn) else None


def _plan_text(plan: Plan) -> str:
    return ",".join(f"{a}@{m}" for a, m in plan) or "-"


class _SharedRuns:
    """Graded runs of route-once plans on one pool, shared by every λ point and every policy.

    A route-once run (route to the plan's calls in round 0, then answer with that round's
    answer) is determined by (query, plan) on a given pool and budget, whichever policy or λ
    chose it; so each distinct (query, plan) runs once through the runtime and its graded
    result counts for every point that chose it. Each run is checked to have made exactly the
    planned calls.
    """

    def __init__(self, pool: Pool, backend: Backend, runner: Runner, budget: Budget | None,
                 concurrency: int) -> None:
        self.pool, self.backend, self.runner = pool, backend, runner
        self.budget, self.concurrency = budget, concurrency
        self.done: dict[tuple[int, Plan], _Run] = {}
        self.usd_left: float | None = None
        self._budget_known = False

    def usd(self) -> float | None:
        """The USD a run starts with (what a policy sees in round 0)."""
        if not self._budget_known:
            from orchestra.runtime import Orchestra

            orch = Orchestra(self.pool, policy="cheapest", budget=self.budget,
                             backend=self.backend, store=False)
            self.usd_left = orch.budget.usd
            self._budget_known = True
        return self.usd_left

    async def run(self, todo: Sequence[tuple[int, Plan, Policy]], queries: Sequence[EvalQuery],
                  label: str, progress: ProgressFn | None) -> None:
        from orchestra.runtime import Orchestra

        orchs: dict[int, Orchestra] = {}
        for _, _, pol in todo:
            if id(pol) not in orchs:
                orchs[id(pol)] = Orchestra(self.pool, policy=pol, budget=self.budget,
                                           backend=self.backend, store=False)
        c = self.concurrency
        for start in range(0, len(todo), c):
            batch = todo[start:start + c]
            results = await _gather([
                self.runner.run(orchs[id(pol)], queries[i],
                                f"plan|{queries[i].query_id}|{_plan_text(plan)}")
                for i, plan, pol in batch])
            for (i, plan, pol), (run, res) in zip(batch, results, strict=True):
                made = plan if res is None else tuple(
                    (c_["agent"], c_["model"]) for st in res.steps
                    if st["action"] == "route" for c_ in st["calls"])
                if made != plan:
                    raise RunError(
                        f"policy {getattr(pol, 'name', pol)!r} planned {list(plan)} for query "
                        f"{queries[i].query_id!r} but its run called {list(made)}; evaluate it "
                        "without shared runs (share_runs=False, --no-share-runs)")
                self.done[(i, plan)] = run
            if progress is not None:
                progress(label, min(start + c, len(todo)), len(todo))


async def _run_shared(instances: Sequence[tuple[float, Policy]], shared: _SharedRuns,
                      queries: Sequence[EvalQuery], *, strong: str | None, label: str,
                      progress: ProgressFn | None) -> tuple[list[PointResult], int]:
    """Every λ point of a route-once policy from shared runs; returns (points, runs made)."""
    texts = [q.text for q in queries]
    tasks = [q.task for q in queries]
    usd = shared.usd()
    t0 = time.perf_counter()
    plans: list[list[Plan]] = []
    todo: dict[tuple[int, Plan], Policy] = {}
    for _, pol in instances:
        plan_fn = _plans(pol)
        assert plan_fn is not None
        ps = plan_fn(texts, tasks, usd)
        plans.append(ps)
        for i, plan in enumerate(ps):
            key = (i, plan)
            if key not in shared.done and key not in todo:
                todo[key] = pol
    await shared.run([(i, plan, pol) for (i, plan), pol in todo.items()], queries,
                     f"{label} ({len(instances)} λ, {len(todo)} shared runs)", progress)
    seconds = (time.perf_counter() - t0) / max(1, len(instances))
    points = [_point([shared.done[(i, plan)] for i, plan in enumerate(ps)], queries, lam=lam,
                     strong=strong, seconds=seconds, online=False)
              for (lam, _), ps in zip(instances, plans, strict=True)]
    return points, len(todo)


async def _run_policy(spec: PolicySpec, pool: Pool, backend: Backend, runner: Runner,
                      queries: Sequence[EvalQuery], *, lambdas: LambdaSweep,
                      budget: Budget | None, concurrency: int, strong: str | None,
                      progress: ProgressFn | None, label_suffix: str = "",
                      shared: _SharedRuns | None = None, extra: Mapping[str, Any] | None = None
                      ) -> _PolicyRun:
    """Run a policy at every λ (from shared runs when ``shared`` is given and the policy plans
    route-once runs and does not learn online)."""
    first = _resolve(spec, pool, extra)
    name = str(getattr(first, "name", spec.name))
    swept = "lam" not in spec.params and _sweepable(first)
    lams: list[float | None]
    if not swept:
        lams = [float(spec.params["lam"]) if "lam" in spec.params else None]
    elif lambdas == "auto":
        own = getattr(first, "default_lambdas", None)
        lams = [float(x) for x in (own() if callable(own) else DEFAULT_LAMBDAS)]
    else:
        lams = list(lambdas)
    online = callable(getattr(first, "observe", None))
    if shared is not None and swept and lams and not online and _plans(first) is not None:
        instances = [(float(lam), _resolve(spec, pool, {**(extra or {}), "lam": lam}))
                     for lam in lams if lam is not None]
        prepare_s = _warm(instances[0][1], queries)
        points, runs = await _run_shared(instances, shared, queries, strong=strong,
                                         label=f"{spec.text}{label_suffix}", progress=progress)
        return _PolicyRun(points, name, swept, prepare_s, runs, True)
    points = []
    prepare_s = 0.0
    for lam in lams:
        policy = first if lam is None or not swept else _resolve(
            spec, pool, {**(extra or {}), "lam": lam})
        prepare_s += _warm(policy, queries)
        label = f"{spec.text}{'' if lam is None else f' λ={lam:.3g}'}{label_suffix}"
        points.append(await _run_point(policy, pool, backend, runner, queries, lam=lam,
                                       budget=budget, concurrency=concurrency, strong=strong,
                                       label=label, progress=progress))
    return _PolicyRun(points, name, swept, prepare_s, len(points) * len(queries), False)


class _PolicyRun(NamedTuple):
    points: list[PointResult]
    name: str
    swept: bool
    prepare_s: float
    runs: int
    shared: bool


# ---------------------------------------------------------------------------- artifacts
def _identity(data: EvalData) -> dict[str, Any]:
    """The evaluated table's identity (:func:`~orchestra.policies.learned.provenance.data_identity`),
    named after what ``--data`` said (a benchmark name without its split, or the file)."""
    from orchestra.policies.learned.provenance import data_identity

    source = data.name
    if data.name == "<table>":
        source = "<table>"
    ident = data_identity(data.table, source)
    if data.name == "<table>":
        ident["base"] = None
    return ident


def _artifact(spec: PolicySpec, identity: dict[str, Any]
              ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(extra params, the report's artifact entry) for a policy that loads a trained artifact:
    the artifact its ``path=`` names, else the one trained on this data
    (:func:`~orchestra.policies.learned.provenance.find_artifact`); a bandit's state file."""
    from orchestra.policies.learned.provenance import ARTIFACT_KINDS, find_artifact
    from orchestra.policies.resolve import policy_base

    base, params = policy_base(spec.name, spec.params)
    kind = base.partition(":")[0]
    if kind in ARTIFACT_KINDS:
        path = params.get("path")
        choice = find_artifact(kind, None if path is None else str(path), identity)
        return {"path": str(choice.path)}, choice.to_dict(identity["models"])
    if kind == "bandit":
        path = params.get("path")
        state = None if path is None else Path(str(path)).expanduser()
        return {}, {"path": None if state is None else str(state), "kind": "bandit",
                    "found_by": "path=" if state is not None else None,
                    "trained_on": None, "overlap": None,
                    "note": "starts cold (no state)" if state is None or not state.exists()
                    else "state loaded from path="}
    return {}, None


# ---------------------------------------------------------------------------- evaluate
def _backend(backend: Backend | str) -> Backend:
    if not isinstance(backend, str):
        return backend
    if backend == "fast":
        from orchestra.backends.replay import ReplayBackend

        return ReplayBackend()
    if backend == "litellm":
        from orchestra.backends.litellm_client import LiteLLMBackend

        return LiteLLMBackend(max_retries=0)
    raise UserError(f"expected backend 'fast' or 'litellm' (got {backend!r})")


async def aevaluate(
    data: EvalData | OutcomeTable,
    policies: Sequence[str | PolicySpec],
    *,
    lambdas: str | Sequence[float] | None = "auto",
    backend: Backend | str = "fast",
    budget: Budget | None = None,
    concurrency: int = 16,
    strong: str | None = None,
    weak: str | None = None,
    apgr: bool = True,
    progress: ProgressFn | None = None,
    share_runs: bool = True,
    pool: Pool | None = None,
    runner: Runner | None = None,
) -> EvalReport:
    """Evaluate policies through the runtime on replayed outcomes (async; see :func:`evaluate`).

    ``pool`` and ``runner`` are the live evaluation's (:mod:`orchestra.eval.live`): the policies
    run on that pool instead of the replay pool of ``data`` (whose table then holds the pool's
    own recorded single-model outcomes, for the references), each run made and graded by
    ``runner``; APGR is not run live."""
    if not isinstance(data, EvalData):
        data = EvalData(table=data, name="<table>", split=None)
    table = data.table
    specs = [p if isinstance(p, PolicySpec) else PolicySpec.parse(p) for p in policies]
    lam_sel = parse_lambdas(lambdas if not isinstance(lambdas, (list, tuple)) else list(lambdas))
    if concurrency < 1:
        raise UserError(f"expected concurrency >= 1 (got {concurrency!r})")
    be = _backend(backend)

    refs = References.of(table)
    singles = refs.singles
    strong_m = strong or refs.max_model
    weak_m = weak or refs.cheapest.name
    for role, m in (("strong", strong_m), ("weak", weak_m)):
        if m not in singles:
            raise UserError(f"unknown {role} model {m!r}: expected one of {table.models!r}")
    pair: dict[str, Any] = {
        "strong": strong_m, "weak": weak_m, "strong_quality": singles[strong_m].quality,
        "weak_quality": singles[weak_m].quality, "strong_cost": singles[strong_m].cost,
        "weak_cost": singles[weak_m].cost}
    do_apgr = apgr and singles[strong_m].quality > singles[weak_m].quality and strong_m != weak_m
    if apgr and not do_apgr:
        pair["note"] = "APGR skipped: the strong model does not score above the weak one"
    live = pool is not None
    if live and do_apgr:
        do_apgr = False
        pair["note"] = ("APGR skipped: live evaluation does not run every policy a second time "
                        "on a two-model pool; evaluate the recorded table for APGR")

    pair_pool: Pool | None = None
    if pool is None:
        pool = _pool_for(data, None, budget, None)
        table_name = pool.models[0].id.split("/")[1]
        pair_pool = _pool_for(data, [weak_m, strong_m], budget, table_name) if do_apgr else None
    if runner is None:
        runner = Runner(Grader(table))
    queries = runner.grader.queries

    identity = _identity(data)
    shared = _SharedRuns(pool, be, runner, budget, concurrency) if share_runs else None
    pair_shared = (_SharedRuns(pair_pool, be, runner, budget, concurrency)
                   if share_runs and pair_pool is not None else None)
    results: list[PolicyResult] = []
    for spec in specs:
        res = PolicyResult(spec=spec.text, name=spec.name, swept=False)
        results.append(res)
        try:
            extra, res.artifact = _artifact(spec, identity)
            run = await _run_policy(
                spec, pool, be, runner, queries, lambdas=lam_sel, budget=budget,
                concurrency=concurrency, strong=None, progress=progress, shared=shared,
                extra=extra)
        except OrchestraError as e:
            res.error = str(e)
            continue
        res.points, res.name, res.swept, res.prepare_s = run.points, run.name, run.swept, \
            run.prepare_s
        res.runs, res.shared_runs = run.runs, run.shared
        pts = [(p.total_cost, p.mean_score) for p in res.points]
        res.aiq = M.aiq(pts, refs.max_cost)
        # 1e-9 absorbs float summation order (a policy calling only that model sums its scores
        # in another order than the matrix column mean).
        res.cost_to_match = M.cost_to_match(pts, refs.best.quality - 1e-9, refs.best.cost)
        for p in res.points:
            p.hull_quality = refs.hull_quality(p.total_cost)
            p.delta_vs_hull = None if p.hull_quality is None else p.mean_score - p.hull_quality
        if pair_pool is not None:
            try:
                res.apgr_points = (await _run_policy(
                    spec, pair_pool, be, runner, queries, lambdas=lam_sel, budget=budget,
                    concurrency=concurrency, strong=strong_m, progress=progress,
                    label_suffix=" [apgr pair]", shared=pair_shared, extra=extra)).points
                share_pts = [(p.strong_share or 0.0, p.mean_score) for p in res.apgr_points]
                res.apgr = M.apgr(share_pts, singles[weak_m].quality, singles[strong_m].quality,
                                  anchor=True)
            except OrchestraError as e:
                res.apgr_error = str(e)

    meta = table.meta or {}
    data_info = {
        "name": data.name, "split": data.split, "n_queries": table.n_queries,
        "tasks": table.tasks, "models": table.models, "limit": data.limit, "seed": data.seed,
        "task_filter": data.tasks, "estimated_cost": table.estimated_cost,
        "cost_note": meta.get("cost_note") if table.estimated_cost else None,
        "source": meta.get("source"), "quality_priors": data.priors_source,
        "multiple_choice_with_gold": sum(q.gold is not None for q in queries),
    }
    settings = {
        "backend": type(be).__name__, "concurrency": concurrency,
        "budget": budget.model_dump() if budget is not None else pool.budget.model_dump(),
        "lambdas": lam_sel, "default_lambdas": list(DEFAULT_LAMBDAS), "apgr": do_apgr,
        "runtime": (f"Orchestra.arun (live pool {pool.name!r}, store=False)" if live
                    else "Orchestra.arun (replay pool, store=False)"),
        "share_runs": share_runs,
    }
    return EvalReport(data=data_info, max_cost=refs.max_cost, max_cost_model=refs.max_model,
                      singles=singles, references=refs.named, single_hull=refs.hull,
                      single_hull_aiq=refs.hull_aiq, pair=pair, policies=results,
                      settings=settings, oracle_curve=refs.oracle_curve,
                      oracle_curve_aiq=refs.oracle_curve_aiq)


def evaluate(data: EvalData | OutcomeTable, policies: Sequence[str | PolicySpec],
             **options: Unpack[EvalOptions]) -> EvalReport:
    """Evaluate policies through the runtime on replayed outcomes.

    Args:
        data: an :class:`~orchestra.eval.data.EvalData` (:func:`~orchestra.eval.data.load_eval_data`)
            or a table.
        policies: policy specs (``cheapest``, ``single:<model>``, ``ensemble,k=3``, ``knn``...).
        lambdas: ``"auto"`` (the policy's ``default_lambdas()``, else
            :data:`~orchestra.eval.specs.DEFAULT_LAMBDAS`) or a list; only for policies with a
            cost trade-off (a ``lam`` attribute or ``default_lambdas``) and no fixed ``lam=``.
        backend: ``"fast"`` (:class:`~orchestra.backends.replay.ReplayBackend`), ``"litellm"``
            (the ``replay`` litellm provider) or a backend object.
        budget: per-query budget (default: the replay pool's, 4 rounds and no USD limit).
        concurrency: queries in flight at once.
        strong / weak: the APGR pair (default: most / least expensive single model).
        apgr: run each policy on the pair too, for APGR.
        progress: called as ``progress(label, done, total)`` after each batch.
        share_runs: score a swept route-once policy (the learned routers: ``knn``, ``mlp``,
            ``mf``) from shared runs: its decisions for every (query, λ) are computed from one
            prediction per query, and each distinct (query, chosen calls) runs once through
            the runtime, its graded result counting for every λ point (and every such policy)
            that chose it. Same numbers as a full pass per λ (``False``), a fraction of the runs.

    Returns:
        The :class:`~orchestra.eval.report.EvalReport`.
    """
    from orchestra.runtime import _run_sync

    return _run_sync(aevaluate(data, policies, **options))

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
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np

from orchestra.errors import OrchestraError, UserError
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
    from orchestra.spec import Budget, Pool

__all__ = ["EvalOptions", "ProgressFn", "aevaluate", "evaluate"]

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


async def _run_point(policy: Policy, pool: Pool, backend: Backend, grader: Grader,
                     queries: Sequence[EvalQuery], *, lam: float | None, budget: Budget | None,
                     concurrency: int, strong: str | None, label: str,
                     progress: ProgressFn | None) -> PointResult:
    from orchestra.runtime import Orchestra

    orch = Orchestra(pool, policy=policy, budget=budget, backend=backend, store=False)
    # An online policy (one with observe) learns from each graded answer, batch by batch.
    online = callable(getattr(policy, "observe", None))
    scores = np.zeros(len(queries))
    costs = np.zeros(len(queries))
    calls = rounds = aggregated = errors = strong_hits = 0
    first_error: str | None = None
    stops: Counter[str] = Counter()
    per_model: Counter[str] = Counter()
    t0 = time.perf_counter()
    for start in range(0, len(queries), concurrency):
        batch = queries[start:start + concurrency]
        results = await asyncio.gather(*[
            orch.arun(q.text, meta={"query_id": q.query_id, "task": q.task}) for q in batch])
        for k, (q, res) in enumerate(zip(batch, results, strict=True)):
            score, agg = grader.grade(q, res.answer, res.events, res.answer_from)
            if online:
                orch.feedback(res.trace_id, score=min(1.0, max(0.0, score)))
            i = start + k
            scores[i] = score
            costs[i] = res.cost_usd
            calls += res.calls
            rounds += res.rounds
            aggregated += agg
            stops[res.stop_reason] += 1
            called_strong = False
            for step in res.steps:
                for c in step["calls"]:
                    if c["error"]:
                        errors += 1
                        first_error = first_error or c["error"]
                    else:
                        per_model[c["model"]] += 1
                        called_strong = called_strong or c["model"] == strong
            strong_hits += called_strong
        if progress is not None:
            progress(label, min(start + concurrency, len(queries)), len(queries))
    seconds = time.perf_counter() - t0
    n = len(queries)
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


async def _run_policy(spec: PolicySpec, pool: Pool, backend: Backend, grader: Grader,
                      queries: Sequence[EvalQuery], *, lambdas: LambdaSweep,
                      budget: Budget | None, concurrency: int, strong: str | None,
                      progress: ProgressFn | None, label_suffix: str = ""
                      ) -> tuple[list[PointResult], str, bool, float]:
    """Run a policy at every λ; returns (points, name, swept, prepare seconds)."""
    first = _resolve(spec, pool)
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
    points = []
    prepare_s = 0.0
    for lam in lams:
        policy = first if lam is None or not swept else _resolve(spec, pool, {"lam": lam})
        prepare_s += _warm(policy, queries)
        label = f"{spec.text}{'' if lam is None else f' λ={lam:.3g}'}{label_suffix}"
        points.append(await _run_point(policy, pool, backend, grader, queries, lam=lam,
                                       budget=budget, concurrency=concurrency, strong=strong,
                                       label=label, progress=progress))
    return points, name, swept, prepare_s


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
) -> EvalReport:
    """Evaluate policies through the runtime on replayed outcomes (async; see :func:`evaluate`)."""
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

    pool = _pool_for(data, None, budget, None)
    table_name = pool.models[0].id.split("/")[1]
    pair_pool = _pool_for(data, [weak_m, strong_m], budget, table_name) if do_apgr else None
    grader = Grader(table)
    queries = grader.queries

    results: list[PolicyResult] = []
    for spec in specs:
        res = PolicyResult(spec=spec.text, name=spec.name, swept=False)
        results.append(res)
        try:
            res.points, res.name, res.swept, res.prepare_s = await _run_policy(
                spec, pool, be, grader, queries, lambdas=lam_sel, budget=budget,
                concurrency=concurrency, strong=None, progress=progress)
        except OrchestraError as e:
            res.error = str(e)
            continue
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
                res.apgr_points, _, _, _ = await _run_policy(
                    spec, pair_pool, be, grader, queries, lambdas=lam_sel, budget=budget,
                    concurrency=concurrency, strong=strong_m, progress=progress,
                    label_suffix=" [apgr pair]")
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
        "runtime": "Orchestra.arun (replay pool, store=False)",
    }
    return EvalReport(data=data_info, max_cost=refs.max_cost, max_cost_model=refs.max_model,
                      singles=singles, references=refs.named, single_hull=refs.hull,
                      single_hull_aiq=refs.hull_aiq, pair=pair, policies=results,
                      settings=settings)


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

    Returns:
        The :class:`~orchestra.eval.report.EvalReport`.
    """
    from orchestra.runtime import _run_sync

    return _run_sync(aevaluate(data, policies, **options))

"""Evaluate routing policies on recorded outcomes, through the real runtime.

Every policy runs query by query through :meth:`Orchestra.arun <orchestra.runtime.Orchestra.arun>`
on a replay pool (:func:`orchestra.backends.replay.pool_from_outcomes`): the same route →
dispatch → refine graph, budget ledger and trace events as a live run, with each call answered
by its recorded response, tokens and cost. Queries run concurrently (``asyncio.gather`` in
batches of ``concurrency``); no trace store by default.

Grading (the score of a run's final answer)
===========================================
The final answer is traced back to the round that produced it (the last ``refined`` event whose
output is the answer):

- one answer in that round (a routed call): the **recorded score** of that (query, model);
- several answers merged by the vote (an ensemble): on a multiple-choice query with a gold
  letter, 1 if the voted letter (:func:`orchestra.refiners.extract_short_answer`, ``choice``)
  is the gold letter, else 0; on other queries, the recorded score of the model(s) whose output
  is the answer (the vote returns one of the outputs; the mean if several models gave that very
  text). A vote over pairs recorded without a response (LLMRouter) cannot be graded: the policy
  is reported with an error instead of a made-up score;
- no answer (no call succeeded, or the budget allowed none): 0.

Cost is what the run was charged: the sum of its calls' recorded costs.

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
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestra.errors import OrchestraError, UserError
from orchestra.eval import metrics as M

if TYPE_CHECKING:
    from orchestra.backends.base import Backend
    from orchestra.outcomes.table import OutcomeTable
    from orchestra.policies.base import Policy
    from orchestra.runtime import RunResult
    from orchestra.spec import Budget, Pool

__all__ = [
    "DEFAULT_LAMBDAS",
    "REPORT_VERSION",
    "EvalData",
    "EvalReport",
    "PointResult",
    "PolicyResult",
    "PolicySpec",
    "Reference",
    "aevaluate",
    "evaluate",
    "grade_run",
    "load_eval_data",
    "parse_lambdas",
]

#: Version of the JSON report's shape.
REPORT_VERSION = 1
#: λ grid for policies with a cost trade-off that do not give their own (``default_lambdas``).
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, *(float(x) for x in np.geomspace(0.01, 100.0, 13)))

GRADING = (
    "final answer traced to its round: one answer → the recorded score of that (query, model); "
    "a vote over several answers → voted letter vs gold letter on multiple-choice queries, else "
    "the recorded score of the model(s) whose output won; no answer → 0"
)


# ---------------------------------------------------------------------------- policy specs
@dataclass(frozen=True)
class PolicySpec:
    """A policy to evaluate: ``NAME[:ARG][,key=value,...]``.

    ``NAME[:ARG]`` is anything :func:`~orchestra.policies.base.resolve_policy` accepts (a
    registered name, ``single:<model>``, a recipe path or name); ``key=value`` pairs are its
    parameters (values parsed as JSON when they parse, else strings), e.g.
    ``ensemble,k=3,select=cheapest`` or ``knn,path=routerbench-knn``. A ``lam=`` parameter fixes λ
    (no sweep).
    """

    text: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        import json

        s = text.strip()
        if not s:
            raise UserError(f"expected a policy like 'cheapest' or 'ensemble,k=3' (got {text!r})")
        head, *rest = s.split(",")
        params: dict[str, Any] = {}
        for item in rest:
            if "=" not in item:
                raise UserError(
                    f"policy {text!r}: expected key=value after ',' (got {item!r}); e.g. "
                    "'ensemble,k=3,select=cheapest'"
                )
            k, v = item.split("=", 1)
            try:
                params[k.strip()] = json.loads(v)
            except json.JSONDecodeError:
                params[k.strip()] = v.strip()
        return cls(text=s, name=head.strip(), params=params)


def parse_lambdas(text: str | Sequence[float] | None) -> str | list[float]:
    """``"auto"`` (or None) → ``"auto"``; ``"0,0.1,1"`` or a list → the floats.

    Raises:
        UserError: a value that is not a number >= 0.
    """
    if text is None:
        return "auto"
    if isinstance(text, str):
        if text.strip().lower() == "auto":
            return "auto"
        parts = [p for p in text.replace(" ", ",").split(",") if p]
    else:
        parts = list(text)  # type: ignore[arg-type]
    out = []
    for p in parts:
        try:
            v = float(p)
        except (TypeError, ValueError):
            raise UserError(f"expected --lambdas auto or numbers like 0,0.1,1 (got {p!r})") from None
        if not v >= 0 or math.isinf(v):
            raise UserError(f"expected λ >= 0 and finite (got {p!r})")
        out.append(v)
    if not out:
        raise UserError(f"expected --lambdas auto or a list of numbers (got {text!r})")
    return out


# ---------------------------------------------------------------------------- results
@dataclass
class PointResult:
    """One policy at one λ (or its only setting) on the evaluated queries.

    Attributes:
        lam: λ, or None for a policy without a cost trade-off.
        n: queries run.
        total_cost: USD charged over all queries (recorded costs).
        mean_score: mean graded score.
        calls_per_query / rounds_per_query: means.
        aggregated: queries whose answer was a vote over several outputs.
        errors: calls that failed (e.g. a budget too small for the recorded answer).
        first_error: the first failure's message.
        stop_reasons: counts of the runs' stop reasons.
        seconds: wall time of the runs (runtime + grading).
        queries_per_s: n / seconds.
        strong_share: share of queries that called the strong model (APGR pair runs only).
        hull_quality: the single-model hull's score at ``total_cost`` (None below its cheapest).
        delta_vs_hull: ``mean_score - hull_quality``.
        per_task: ``{task: {"n", "mean_score", "cost"}}``.
        model_calls: successful calls per model (routing shares: divide by the sum).
    """

    lam: float | None
    n: int
    total_cost: float
    mean_score: float
    calls_per_query: float
    rounds_per_query: float
    aggregated: int = 0
    errors: int = 0
    first_error: str | None = None
    stop_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    queries_per_s: float = 0.0
    strong_share: float | None = None
    hull_quality: float | None = None
    delta_vs_hull: float | None = None
    per_task: dict[str, dict[str, float]] = field(default_factory=dict)
    model_calls: dict[str, int] = field(default_factory=dict)

    def model_share(self, model: str) -> float:
        """Share of the successful calls that went to ``model``."""
        total = sum(self.model_calls.values())
        return self.model_calls.get(model, 0) / total if total else 0.0

    @property
    def cost_per_query(self) -> float:
        return self.total_cost / self.n if self.n else 0.0


@dataclass
class PolicyResult:
    """A policy's curve and metrics.

    Attributes:
        spec: the policy as given (``ensemble,k=3``).
        name: the policy object's name (first point).
        swept: whether λ was swept.
        points: one per λ.
        aiq: AIQ of ``points``.
        apgr: APGR on the strong/weak pair (None when not computed or not applicable).
        apgr_points: the pair runs' points (``strong_share`` set).
        cost_to_match: cheapest hull cost reaching the best single model's score, as a
            fraction of that model's cost (None: never reached).
        error: why the policy could not be evaluated (then ``points`` may be empty).
        apgr_error: why APGR could not be computed.
        prepare_s: seconds spent warming the policy (batch predictions) before the runs.
    """

    spec: str
    name: str
    swept: bool
    points: list[PointResult] = field(default_factory=list)
    aiq: float | None = None
    apgr: float | None = None
    apgr_points: list[PointResult] = field(default_factory=list)
    cost_to_match: float | None = None
    error: str | None = None
    apgr_error: str | None = None
    prepare_s: float = 0.0

    @property
    def best(self) -> PointResult | None:
        """The point with the best score (the cheapest among equals)."""
        if not self.points:
            return None
        return max(self.points, key=lambda p: (p.mean_score, -p.total_cost))


@dataclass(frozen=True)
class Reference:
    """A reference point: ``oracle``, ``best_single``, ``cheapest_single``, ``random`` or one
    single model."""

    name: str
    label: str
    cost: float
    quality: float
    aiq: float


@dataclass
class EvalReport:
    """Everything an evaluation measured; :meth:`to_dict` is the JSON report."""

    data: dict[str, Any]
    max_cost: float
    max_cost_model: str
    singles: dict[str, Reference]
    references: dict[str, Reference]
    single_hull: list[tuple[float, float]]
    single_hull_aiq: float
    pair: dict[str, Any]
    policies: list[PolicyResult]
    settings: dict[str, Any]

    @property
    def estimated_cost(self) -> bool:
        return bool(self.data.get("estimated_cost"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: data, references, single models, each policy's curve points."""

        def point(p: PointResult) -> dict[str, Any]:
            d = asdict(p)
            d["cost_per_query"] = p.cost_per_query
            return d

        return _clean({
            "version": REPORT_VERSION,
            "data": self.data,
            "grading": GRADING,
            "normalisation": {"max_cost": self.max_cost, "max_cost_model": self.max_cost_model,
                              "x": "policy total cost / max_cost"},
            "references": {k: asdict(v) for k, v in self.references.items()},
            "single_models": {k: asdict(v) for k, v in self.singles.items()},
            "single_hull": {"points": [list(p) for p in self.single_hull],
                            "aiq": self.single_hull_aiq},
            "apgr_pair": self.pair,
            "policies": [
                {
                    "spec": r.spec, "name": r.name, "swept": r.swept, "aiq": r.aiq,
                    "apgr": r.apgr, "cost_to_match_best": r.cost_to_match, "error": r.error,
                    "apgr_error": r.apgr_error, "prepare_s": r.prepare_s,
                    "curve": [{"lam": p.lam, "total_cost": p.total_cost,
                               "mean_score": p.mean_score} for p in r.points],
                    "points": [point(p) for p in r.points],
                    "apgr_points": [point(p) for p in r.apgr_points],
                }
                for r in self.policies
            ],
            "settings": self.settings,
        })


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python, tuples → lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# ---------------------------------------------------------------------------- data
@dataclass
class EvalData:
    """The queries to evaluate on and how they were chosen.

    Attributes:
        table: the outcomes (already filtered to the tasks and the subset).
        name: what ``--data`` said.
        split: the split evaluated (None for a file without splits).
        priors: quality priors per model (from a train split), or None.
        priors_source: where the priors came from.
    """

    table: OutcomeTable
    name: str
    split: str | None
    priors: dict[str, float] | None = None
    priors_source: str | None = None
    limit: int | None = None
    seed: int = 0
    tasks: list[str] | None = None


def load_eval_data(data: str | Path | OutcomeTable, *, split: str | None = None,
                   tasks: Sequence[str] | None = None, limit: int | None = None, seed: int = 0,
                   priors: str | None = "auto") -> EvalData:
    """Load the outcomes to evaluate on.

    Args:
        data: a table, a known name (``routerbench``, ``llmrouter``; ``NAME:SPLIT`` works too) or
            a path (see :func:`orchestra.outcomes.load_outcomes`).
        split: the split (default for a known name: ``test``; for a path: all queries).
        tasks: keep only these tasks.
        limit: keep a seeded random subset of this many queries (table order kept).
        seed: the subset's seed.
        priors: ``auto`` (a known name's train split when evaluating another split), ``none``,
            or a name/path whose mean scores per model become the pool's quality priors (used by
            ``strongest``, ``ensemble,select=strongest`` and vote tie-breaks). Never the
            evaluated queries themselves.

    Raises:
        UserError: unknown data, split, task, or a bad limit.
    """
    from orchestra.outcomes import load_outcomes
    from orchestra.outcomes.table import OutcomeTable

    if isinstance(data, OutcomeTable):
        table, label, the_split, known = data, "<table>", split, None
        if split is not None:
            table = table.filter(splits=[split])
    else:
        label = str(data)
        head, _, named_split = label.partition(":")
        known = head if head in ("routerbench", "llmrouter") and not Path(label).exists() else None
        if known is not None:
            the_split = named_split or split or "test"
            table = load_outcomes(head, split=the_split)
        else:
            the_split = split
            table = load_outcomes(data, split=split)
    if tasks:
        table = table.filter(tasks=list(tasks))
    if limit is not None:
        if limit < 1:
            raise UserError(f"expected --limit >= 1 (got {limit!r})")
        if limit < table.n_queries:
            rng = np.random.default_rng(seed)
            keep = np.sort(rng.choice(table.n_queries, size=limit, replace=False))
            ids = table.queries
            table = table.filter(query_ids=[ids[i] for i in keep.tolist()])
    prior_map: dict[str, float] | None = None
    prior_src: str | None = None
    p = (priors or "none").strip()
    if p == "auto":
        if known is not None and the_split not in ("train", "all"):
            prior_src = f"{known}:train"
    elif p.lower() != "none":
        prior_src = p
    if prior_src is not None:
        src = load_outcomes(prior_src)
        s = src.score_matrix()
        prior_map = {m: float(np.nanmean(np.nan_to_num(s[:, j], nan=0.0)))
                     for j, m in enumerate(src.models) if m in table.models}
    if table.n_queries == 0:
        raise UserError(f"no queries left to evaluate in {label!r} (split {the_split!r}, tasks "
                        f"{list(tasks) if tasks else 'all'})")
    return EvalData(table=table, name=label, split=the_split, priors=prior_map,
                    priors_source=prior_src, limit=limit, seed=seed,
                    tasks=list(tasks) if tasks else None)


# ---------------------------------------------------------------------------- grading
class _Ungradable(UserError):
    pass


@dataclass(frozen=True)
class _Query:
    qi: int
    query_id: str
    text: str
    task: str
    gold: str | None


class _Grader:
    """Grades run results against a table (score matrix, responses, gold letters)."""

    def __init__(self, table: OutcomeTable) -> None:
        self.table = table
        self.score = np.nan_to_num(table.score_matrix(), nan=0.0)
        self.mindex = {m: j for j, m in enumerate(table.models)}
        from orchestra.outcomes.table import OutcomeLookupError

        self._lookup_error = OutcomeLookupError
        self.queries = [
            _Query(qi=i, query_id=q.query_id, text=q.query, task=q.task,
                   gold=q.gold.strip().upper() if (q.gold and q.choices and len(q.gold.strip()) == 1)
                   else None)
            for i, q in enumerate(table.query_rows)
        ]

    def has_response(self, qid: str, model: str) -> bool:
        try:
            return self.table.response(qid, model) is not None
        except self._lookup_error:
            return False

    def grade(self, q: _Query, result: RunResult) -> tuple[float, bool]:
        """(score, aggregated) of a run."""
        from orchestra.refiners import extract_short_answer

        answer = result.answer
        if not answer:
            return 0.0, False
        src = None
        for ev in reversed(result.events):
            if getattr(ev, "kind", None) == "refined" and ev.output == answer and ev.inputs:  # type: ignore[union-attr]
                src = ev
                break
        if src is None:
            # The policy answered with its own text: grade what can be graded.
            if q.gold is not None:
                return float(extract_short_answer(answer, "choice") == q.gold), False
            outs = [ev for ev in result.events if getattr(ev, "kind", None) == "call_finished"
                    and ev.error is None and ev.output == answer]  # type: ignore[union-attr]
            if not outs:
                raise _Ungradable(f"the answer to query {q.query_id!r} is neither a round's "
                                  "output nor a graded letter; cannot grade it from recordings")
            return self._mean_score(q, [ev.model for ev in outs]), False  # type: ignore[union-attr]
        inputs = src.inputs  # type: ignore[union-attr]
        if len(inputs) == 1:
            return self._mean_score(q, [inputs[0]["model"]]), False
        missing = [i["model"] for i in inputs if not self.has_response(q.query_id, i["model"])]
        if missing:
            raise _Ungradable(
                f"a vote over {len(inputs)} outputs on query {q.query_id!r} includes models "
                f"recorded without a response ({missing}); a vote over recordings that hold no "
                "answer text cannot be graded (this table records scores only)"
            )
        if q.gold is not None:
            return float(extract_short_answer(answer, "choice") == q.gold), True
        winners = [i["model"] for i in inputs if i["output"] == answer]
        return self._mean_score(q, winners or [inputs[0]["model"]]), True

    def _mean_score(self, q: _Query, models: Sequence[str]) -> float:
        vals = []
        for m in models:
            j = self.mindex.get(m)
            vals.append(self.score[q.qi, j] if j is not None else 0.0)
        return float(np.mean(vals)) if vals else 0.0


def grade_run(table: OutcomeTable, query_id: str, result: RunResult) -> float:
    """The score of one run's final answer (see the module docstring for the rules).

    Raises:
        UserError: the answer cannot be graded from the recordings.
    """
    g = _Grader(table)
    qi = table.query_index(query_id)
    return g.grade(g.queries[qi], result)[0]


# ---------------------------------------------------------------------------- running
ProgressFn = Callable[[str, int, int], None]


def _pool_for(data: EvalData, models: Sequence[str] | None, budget: Budget | None,
              table_name: str | None) -> Pool:
    from orchestra.backends.replay import pool_from_outcomes

    return pool_from_outcomes(data.table, models=models, budget=budget, quality=data.priors,
                              table_name=table_name)


def _resolve(spec: PolicySpec, pool: Pool, extra: Mapping[str, Any] | None = None) -> Policy:
    from orchestra.policies.resolve import resolve_policy

    return resolve_policy(spec.name, pool, {**spec.params, **(extra or {})})


def _sweepable(policy: Any) -> bool:
    return callable(getattr(policy, "default_lambdas", None)) or hasattr(policy, "lam")


def _warm(policy: Any, queries: Sequence[_Query]) -> float:
    """Let a policy batch its per-query work before the runs (learned routers embed queries)."""
    t0 = time.perf_counter()
    texts = [q.text for q in queries]
    tasks = [q.task for q in queries]
    prepare = getattr(policy, "prepare", None)
    if callable(prepare):
        prepare(texts, tasks)
    else:
        try:
            from orchestra.policies.learned import LearnedRouterPolicy
        except ImportError:  # pragma: no cover - learned policies not installed
            LearnedRouterPolicy = ()  # type: ignore[assignment,misc]
        if isinstance(policy, LearnedRouterPolicy):
            policy.predict(texts, tasks)
    return time.perf_counter() - t0


async def _run_point(policy: Policy, pool: Pool, backend: Backend, grader: _Grader,
                     queries: Sequence[_Query], *, lam: float | None, budget: Budget | None,
                     concurrency: int, strong: str | None, label: str,
                     progress: ProgressFn | None) -> PointResult:
    from orchestra.runtime import Orchestra

    orch = Orchestra(pool, policy=policy, budget=budget, backend=backend, store=False)
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
            score, agg = grader.grade(q, res)
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
        per_task=per_task, model_calls=dict(sorted(per_model.items())),
    )


async def _run_policy(spec: PolicySpec, pool: Pool, backend: Backend, grader: _Grader,
                      queries: Sequence[_Query], *, lambdas: str | list[float],
                      budget: Budget | None, concurrency: int, strong: str | None,
                      progress: ProgressFn | None, label_suffix: str = ""
                      ) -> tuple[list[PointResult], str, bool, float]:
    """Run a policy at every λ; returns (points, name, swept, prepare seconds)."""
    first = _resolve(spec, pool)
    name = str(getattr(first, "name", spec.name))
    swept = "lam" not in spec.params and _sweepable(first)
    if swept and lambdas == "auto":
        own = getattr(first, "default_lambdas", None)
        lams: list[float | None] = [float(x) for x in (own() if callable(own) else DEFAULT_LAMBDAS)]
    elif swept:
        lams = list(lambdas)  # type: ignore[arg-type]
    else:
        lams = [float(spec.params["lam"]) if "lam" in spec.params else None]
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
    from orchestra.backends.replay import ReplayBackend

    if not isinstance(data, EvalData):
        data = EvalData(table=data, name="<table>", split=None)
    table = data.table
    specs = [p if isinstance(p, PolicySpec) else PolicySpec.parse(p) for p in policies]
    lam_sel = parse_lambdas(lambdas if not isinstance(lambdas, (list, tuple)) else list(lambdas))
    if concurrency < 1:
        raise UserError(f"expected concurrency >= 1 (got {concurrency!r})")
    if isinstance(backend, str):
        if backend == "fast":
            be: Backend = ReplayBackend()
        elif backend == "litellm":
            from orchestra.backends.litellm_client import LiteLLMBackend

            be = LiteLLMBackend(max_retries=0)
        else:
            raise UserError(f"expected backend 'fast' or 'litellm' (got {backend!r})")
    else:
        be = backend

    # References, from the matrices of the same queries.
    S, C = table.score_matrix(), table.cost_matrix()
    singles_pts = M.single_model_points(S, C, table.models)
    max_model = max(singles_pts, key=lambda m: singles_pts[m].cost)
    max_cost = singles_pts[max_model].cost
    if not max_cost > 0:
        raise UserError("the most expensive single model costs 0 on these queries; AIQ needs a "
                        "positive cost to normalise by")

    def ref(name: str, label: str, cost: float, quality: float) -> Reference:
        return Reference(name=name, label=label, cost=float(cost), quality=float(quality),
                         aiq=M.aiq([(cost, quality)], max_cost))

    singles = {m: ref(m, m, p.cost, p.quality) for m, p in singles_pts.items()}
    best = max(singles.values(), key=lambda r: (r.quality, -r.cost))
    cheapest = min(singles.values(), key=lambda r: (r.cost, -r.quality))
    orc = M.oracle(S, C)
    references = {
        "oracle": ref("oracle", "oracle (cheapest best model per query)", orc.cost, orc.quality),
        "best_single": ref("best_single", f"best single: {best.name}", best.cost, best.quality),
        "cheapest_single": ref("cheapest_single", f"cheapest single: {cheapest.name}",
                               cheapest.cost, cheapest.quality),
        "random": ref("random", "random model (expected)",
                      float(np.mean([p.cost for p in singles_pts.values()])),
                      float(np.mean([p.quality for p in singles_pts.values()]))),
    }
    hull = [(float(c), float(q)) for c, q in M.pareto_hull(singles_pts)]
    hull_aiq = M.aiq(singles_pts, max_cost)

    strong_m = strong or max_model
    weak_m = weak or cheapest.name
    for role, m in (("strong", strong_m), ("weak", weak_m)):
        if m not in singles:
            raise UserError(f"unknown {role} model {m!r}: expected one of {table.models!r}")
    pair = {"strong": strong_m, "weak": weak_m, "strong_quality": singles[strong_m].quality,
            "weak_quality": singles[weak_m].quality, "strong_cost": singles[strong_m].cost,
            "weak_cost": singles[weak_m].cost}
    do_apgr = apgr and singles[strong_m].quality > singles[weak_m].quality and strong_m != weak_m
    if apgr and not do_apgr:
        pair["note"] = "APGR skipped: the strong model does not score above the weak one"

    pool = _pool_for(data, None, budget, None)
    table_name = pool.models[0].id.split("/")[1]
    pair_pool = _pool_for(data, [weak_m, strong_m], budget, table_name) if do_apgr else None
    grader = _Grader(table)
    queries = grader.queries

    results: list[PolicyResult] = []
    for spec in specs:
        res = PolicyResult(spec=spec.text, name=spec.name, swept=False)
        try:
            res.points, res.name, res.swept, res.prepare_s = await _run_policy(
                spec, pool, be, grader, queries, lambdas=lam_sel, budget=budget,
                concurrency=concurrency, strong=None, progress=progress)
        except OrchestraError as e:
            res.error = str(e)
            results.append(res)
            continue
        pts = [(p.total_cost, p.mean_score) for p in res.points]
        res.aiq = M.aiq(pts, max_cost)
        # 1e-9 absorbs float summation order (a policy calling only that model sums its scores
        # in another order than the matrix column mean).
        res.cost_to_match = M.cost_to_match(pts, best.quality - 1e-9, best.cost)
        for p in res.points:
            p.hull_quality = _hull_quality(singles_pts, hull, p.total_cost)
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
        results.append(res)

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
    return EvalReport(data=data_info, max_cost=max_cost, max_cost_model=max_model,
                      singles=singles, references=references, single_hull=hull,
                      single_hull_aiq=hull_aiq, pair=pair, policies=results, settings=settings)


def _hull_quality(points: Mapping[str, M.Point], hull: Sequence[tuple[float, float]],
                  cost: float) -> float | None:
    """The single-model hull's score at ``cost``; a cost equal to the cheapest model's up to
    float summation order counts as equal (a policy that always calls it sums in another order)."""
    if hull and cost < hull[0][0] and math.isclose(cost, hull[0][0], rel_tol=1e-9):
        cost = hull[0][0]
    return M.quality_at_cost(points, cost)


def evaluate(data: EvalData | OutcomeTable, policies: Sequence[str | PolicySpec],
             **kwargs: Any) -> EvalReport:
    """Evaluate policies through the runtime on replayed outcomes.

    Args:
        data: an :class:`EvalData` (:func:`load_eval_data`) or a table.
        policies: policy specs (``cheapest``, ``single:<model>``, ``ensemble,k=3``, ``knn``...).
        lambdas: ``"auto"`` (the policy's ``default_lambdas()``, else :data:`DEFAULT_LAMBDAS`)
            or a list; only for policies with a cost trade-off (a ``lam`` attribute or
            ``default_lambdas``) and no fixed ``lam=``.
        backend: ``"fast"`` (:class:`~orchestra.backends.replay.ReplayBackend`), ``"litellm"``
            (the ``replay`` litellm provider) or a backend object.
        budget: per-query budget (default: the replay pool's, 4 rounds and no USD limit).
        concurrency: queries in flight at once.
        strong / weak: the APGR pair (default: most / least expensive single model).
        apgr: run each policy on the pair too, for APGR.
        progress: called as ``progress(label, done, total)`` after each batch.

    Returns:
        The :class:`EvalReport`.
    """
    from orchestra.runtime import _run_sync

    return _run_sync(aevaluate(data, policies, **kwargs))

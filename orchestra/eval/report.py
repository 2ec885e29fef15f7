"""What an evaluation measured: per-λ points, per-policy curves and metrics, references, and the
JSON report (:meth:`EvalReport.to_dict`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from orchestra.eval.grading import GRADING

__all__ = ["ORACLE_CURVE_LABEL", "REPORT_VERSION", "EvalReport", "PointResult", "PolicyResult",
           "Reference", "thin_curve"]

#: Version of the JSON report's shape.
REPORT_VERSION = 1

#: How the λ-swept oracle is named in the table, the plot and the JSON.
ORACLE_CURVE_LABEL = "oracle, λ-swept (upper bound: per λ, each query's best score − λ·cost)"

#: Points of the λ-swept oracle written to the JSON / drawn (its AIQ uses every vertex).
ORACLE_CURVE_POINTS = 200


def thin_curve(points: list[tuple[float, float]], most: int = ORACLE_CURVE_POINTS
               ) -> list[tuple[float, float]]:
    """At most ``most`` of a curve's vertices, evenly spread, both ends kept (for the JSON and
    the plot; on a concave curve the chords lie just below it)."""
    if len(points) <= most:
        return list(points)
    idx = np.unique(np.linspace(0, len(points) - 1, most).round().astype(int))
    return [points[i] for i in idx.tolist()]


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
        seconds: wall time of the runs (runtime + grading); with shared runs, the policy's
            planning and shared runs divided evenly among its points.
        queries_per_s: n / seconds.
        strong_share: share of queries that called the strong model (APGR pair runs only).
        hull_quality: the single-model hull's score at ``total_cost`` (None below its cheapest).
        delta_vs_hull: ``mean_score - hull_quality``.
        per_task: ``{task: {"n", "mean_score", "cost"}}``.
        model_calls: successful calls per model (routing shares: divide by the sum).
        online: the policy learned as the queries ran (it has ``observe``: each graded score
            went back to it as feedback, batch by batch, in query order).
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
    online: bool = False

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
        artifact: the trained artifact the policy loaded (``path``, ``kind``, ``found_by``,
            ``trained_on``: the training data's name, models, tasks, size and fingerprint;
            ``overlap``: evaluated queries that were in its training data), or None.
        runs: runs made through the runtime for the main curve (with shared runs, fewer than
            points × queries: a (query, action) chosen at several λ ran once).
        shared_runs: the λ points were scored from shared runs (see the harness).
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
    artifact: dict[str, Any] | None = None
    runs: int = 0
    shared_runs: bool = False

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
    oracle_curve: list[tuple[float, float]] = field(default_factory=list)
    oracle_curve_aiq: float | None = None

    @property
    def failed(self) -> list[PolicyResult]:
        """The policies that could not be evaluated (``error`` set)."""
        return [r for r in self.policies if r.error]

    @property
    def estimated_cost(self) -> bool:
        return bool(self.data.get("estimated_cost"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: data, references, single models, each policy's curve points."""

        def point(p: PointResult) -> dict[str, Any]:
            d = asdict(p)
            d["cost_per_query"] = p.cost_per_query
            return d

        report = {
            "version": REPORT_VERSION,
            "data": self.data,
            "grading": GRADING,
            "normalisation": {"max_cost": self.max_cost, "max_cost_model": self.max_cost_model,
                              "x": "policy total cost / max_cost"},
            "references": {k: asdict(v) for k, v in self.references.items()},
            "single_models": {k: asdict(v) for k, v in self.singles.items()},
            "single_hull": {"points": [list(p) for p in self.single_hull],
                            "aiq": self.single_hull_aiq},
            "oracle_curve": {
                "label": ORACLE_CURVE_LABEL, "aiq": self.oracle_curve_aiq,
                "n_vertices": len(self.oracle_curve),
                "points": [list(p) for p in thin_curve(self.oracle_curve)]},
            "apgr_pair": self.pair,
            "policies": [
                {
                    "spec": r.spec, "name": r.name, "swept": r.swept, "aiq": r.aiq,
                    "apgr": r.apgr, "cost_to_match_best": r.cost_to_match, "error": r.error,
                    "apgr_error": r.apgr_error, "prepare_s": r.prepare_s,
                    "artifact": r.artifact, "runs": r.runs, "shared_runs": r.shared_runs,
                    "curve": [{"lam": p.lam, "total_cost": p.total_cost,
                               "mean_score": p.mean_score} for p in r.points],
                    "points": [point(p) for p in r.points],
                    "apgr_points": [point(p) for p in r.apgr_points],
                }
                for r in self.policies
            ],
            "settings": self.settings,
        }
        return _json_safe(report)


def _json_safe(x: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python, tuples → lists."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x

"""Routing metrics: Pareto hull, AIQ, APGR, cost-to-match, oracle and single-model points.

Pure numpy. Every function takes plain arrays, so the same code scores recorded outcome tables
(RouterBench), replayed policies and live runs.

Two kinds of input appear here:

* **points**: an array-like of shape ``(n, 2)`` whose rows are ``(cost, quality)`` (or
  ``(strong_share, quality)`` for :func:`apgr`). A mapping (such as the result of
  :func:`single_model_points`) is accepted too; its values are used.
* **score / cost matrices**: arrays of shape ``(n_queries, n_models)``. ``score[i, j]`` is the
  quality model ``j`` got on query ``i`` (usually in ``[0, 1]``), ``cost[i, j]`` what that call
  cost in USD. ``NaN`` means *missing* (the outcome was not recorded); see
  :func:`single_model_points` for how missing entries are treated.

The (cost, quality) curve used by :func:`aiq`, :func:`cost_to_match` and
:func:`quality_at_cost` is the *non-decreasing upper convex hull* of the points (RouterBench).
Any point on a hull segment is achievable by a mixture of the two policies at its ends (route a
query to one or the other at random), which is why interpolating between hull vertices is fair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from orchestra.errors import UserError

__all__ = [
    "OracleResult",
    "Point",
    "PointsLike",
    "aiq",
    "apgr",
    "choice_point",
    "cost_to_match",
    "oracle",
    "oracle_curve",
    "pareto_hull",
    "quality_at_cost",
    "single_model_points",
    "strong_share_to_recover",
]

FloatArray = NDArray[np.float64]
#: ``(n, 2)`` array-like of pairs, or a mapping whose values are pairs (e.g. ``{name: Point}``).
PointsLike = ArrayLike | Mapping[str, Sequence[float]]


class Point(NamedTuple):
    """One policy's (or model's) result on a split: total cost and mean quality."""

    cost: float
    quality: float


class OracleResult(NamedTuple):
    """What the per-query oracle achieves.

    Attributes:
        quality: mean score over the queries.
        cost: total cost over the queries.
        choice: the chosen model index per query, shape ``(n_queries,)``, dtype ``int64``.
    """

    quality: float
    cost: float
    choice: NDArray[np.int64]


# --------------------------------------------------------------------------------------------
# Validation helpers


def _as_points(points: PointsLike, *, first: str = "cost") -> FloatArray:
    """Return ``points`` as a finite float (n, 2) array with a non-negative first column."""
    if isinstance(points, Mapping):
        points = list(points.values())
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise UserError(
            f"expected an array of ({first}, quality) pairs (got {points!r}); "
            "pass a list of pairs or an (n, 2) numpy array"
        ) from e
    if arr.size == 0:
        return np.empty((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise UserError(
            f"expected ({first}, quality) points of shape (n, 2) (got shape {arr.shape!r}); "
            "wrap a single point in a list: [(cost, quality)]"
        )
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.all(np.isfinite(arr), axis=1)][0]
        raise UserError(
            f"expected finite ({first}, quality) points (got {tuple(bad.tolist())!r}); "
            "drop policies with missing results before computing the metric"
        )
    if np.any(arr[:, 0] < 0):
        bad = arr[arr[:, 0] < 0][0]
        raise UserError(f"expected {first} >= 0 (got point {tuple(bad.tolist())!r})")
    return arr


def _positive(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise UserError(f"expected {name} to be a positive number (got {value!r})") from e
    if not (np.isfinite(v) and v > 0):
        raise UserError(
            f"expected {name} to be a positive finite number (got {value!r}); "
            "use the total cost of the most expensive single model on the same split"
        )
    return v


def _finite(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise UserError(f"expected {name} to be a number (got {value!r})") from e
    if not np.isfinite(v):
        raise UserError(f"expected {name} to be a finite number (got {value!r})")
    return v


def _matrices(
    score_matrix: ArrayLike, cost_matrix: ArrayLike, missing_score: float | None
) -> tuple[FloatArray, FloatArray]:
    """Validate the matrices; return (scores with NaN replaced, costs as given)."""
    scores = np.asarray(score_matrix, dtype=np.float64)
    costs = np.asarray(cost_matrix, dtype=np.float64)
    if scores.ndim != 2:
        raise UserError(
            f"expected score_matrix of shape (n_queries, n_models) (got shape {scores.shape!r}); "
            "a single model's scores need shape (n_queries, 1)"
        )
    if costs.shape != scores.shape:
        raise UserError(
            f"expected cost_matrix with the shape of score_matrix {scores.shape!r} "
            f"(got {costs.shape!r})"
        )
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise UserError(f"expected at least one query and one model (got shape {scores.shape!r})")
    if np.any(np.isinf(scores)) or np.any(np.isinf(costs)):
        raise UserError("expected finite scores and costs (got inf); use NaN for a missing entry")
    if np.any(costs < 0):
        i, j = np.argwhere(costs < 0)[0]
        raise UserError(f"expected costs >= 0 (got cost_matrix[{i}, {j}] = {costs[i, j]!r})")
    missing = np.isnan(scores)
    if missing.any():
        if missing_score is None:
            i, j = np.argwhere(missing)[0]
            raise UserError(
                f"expected no missing scores with missing_score=None (got NaN at "
                f"score_matrix[{i}, {j}]); pass missing_score=0.0 to count them as failures"
            )
        scores = np.where(missing, _finite(missing_score, "missing_score"), scores)
    return scores, costs


# --------------------------------------------------------------------------------------------
# Hull and hull-based metrics


def pareto_hull(points: PointsLike) -> FloatArray:
    """The non-decreasing upper convex hull of (cost, quality) points (RouterBench).

    The hull starts at the cheapest point (the best one among equally cheap points), ends at the
    best point (the cheapest one among equally good points), and is concave and strictly
    increasing in between. Dominated points (another point is at most as expensive and at least
    as good) and points on or below a hull segment are dropped; collinear middle points are
    dropped too, so only vertices remain.

    Args:
        points: ``(cost, quality)`` pairs, shape ``(n, 2)``, or a mapping whose values are pairs.

    Returns:
        The hull vertices, shape ``(k, 2)``, sorted by cost, with strictly increasing cost and
        quality. ``k == 0`` when there are no points.

    Raises:
        UserError: the points are not of shape ``(n, 2)``, not finite, or have a negative cost.
    """
    pts = _as_points(points)
    if len(pts) == 0:
        return pts
    # Cheapest first; among equal costs the best first, so the frontier keeps it.
    order = np.lexsort((-pts[:, 1], pts[:, 0]))
    frontier: list[tuple[float, float]] = []
    best = -np.inf
    for c, q in pts[order]:
        if q > best:  # strictly better than everything cheaper or as cheap: on the frontier
            frontier.append((float(c), float(q)))
            best = q
    hull: list[tuple[float, float]] = []
    for p in frontier:
        # Pop while the last vertex is not strictly above the chord (monotone chain, upper part).
        while len(hull) >= 2:
            (ox, oy), (ax, ay) = hull[-2], hull[-1]
            cross = (ax - ox) * (p[1] - oy) - (ay - oy) * (p[0] - ox)
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return np.asarray(hull, dtype=np.float64)


def _hull_area(hull: FloatArray, lo: float, hi: float) -> float:
    """Integrate the hull curve (0 left of its first vertex, flat right of its last) on [lo, hi]."""
    if len(hull) == 0 or hi <= lo:
        return 0.0
    x, y = hull[:, 0], hull[:, 1]
    start = max(lo, float(x[0]))
    if start >= hi:
        return 0.0
    t = np.concatenate([[start], x[(x > start) & (x < hi)], [hi]])
    v = np.interp(t, x, y)  # np.interp holds y[-1] to the right: the flat extension
    return float(np.sum(np.diff(t) * (v[1:] + v[:-1]) / 2.0))


def aiq(points: PointsLike, max_cost: float) -> float:
    """Average Improvement in Quality: the area under the normalised (cost, quality) hull.

    Definition (RouterBench's AIQ, with the conventions orchestra fixes):

    1. Normalise cost: ``x = cost / max_cost``, where ``max_cost`` is the total cost of the
       most expensive single model on the same split (so that model sits at ``x = 1``).
    2. Take the non-decreasing upper convex hull of the normalised points
       (:func:`pareto_hull`), vertices ``(x_0, q_0), ..., (x_k, q_k)``.
    3. Build the curve ``f`` on ``[0, 1]``: ``f(x) = 0`` for ``x < x_0`` (nothing is
       achievable cheaper than the cheapest point); linear interpolation between vertices;
       ``f(x) = q_k`` for ``x > x_k`` (the best point, held flat to ``x = 1``: spending more
       than it needs is allowed, not rewarded).
    4. ``AIQ = integral of f(x) dx over [0, 1]``.

    Points with ``x > 1`` (a policy costlier than the most expensive single model) still take
    part in the hull, which is then cut at ``x = 1``: such a point counts only through the part
    of the hull segment leading to it that lies left of ``x = 1`` (its interpolated quality at
    ``x = 1``), never through quality bought beyond the budget. If every point has ``x >= 1``
    the AIQ is 0.

    With qualities in ``[0, 1]`` the AIQ is in ``[0, 1]``. It never decreases when a point is
    added or improved (cheaper or better), and a dominated point never changes it. No points
    gives 0.

    Args:
        points: ``(cost, quality)`` pairs in the same cost unit as ``max_cost``.
        max_cost: total cost of the most expensive single model on the split (> 0).

    Returns:
        The AIQ.

    Raises:
        UserError: ``max_cost`` is not positive, or the points are malformed.

    Example:
        Zero on [0, 0.2], a trapezoid 0.4 * (0.5 + 0.9) / 2 on [0.2, 0.6], flat 0.9 on [0.6, 1]:

        >>> round(aiq([(0.2, 0.5), (0.6, 0.9)], max_cost=1.0), 12)
        0.64
    """
    scale = _positive(max_cost, "max_cost")
    pts = _as_points(points).copy()
    pts[:, 0] /= scale
    return _hull_area(pareto_hull(pts), 0.0, 1.0)


def cost_to_match(
    points: PointsLike,
    target_quality: float,
    reference_cost: float,
) -> float | None:
    """The lowest cost on the hull that reaches ``target_quality``, as a fraction of a reference.

    On the non-decreasing hull (:func:`pareto_hull`), with vertices ``(c_i, q_i)``: if
    ``target <= q_0`` the answer is ``c_0`` (nothing cheaper than the cheapest point is
    achievable); if ``q_i < target <= q_{i+1}`` it is the linear interpolation
    ``c_i + (target - q_i) / (q_{i+1} - q_i) * (c_{i+1} - c_i)``; the result is divided by
    ``reference_cost``. Typical use: the target is the best single model's quality and the
    reference its cost, giving "the router matches model X at 38% of its cost".

    Args:
        points: ``(cost, quality)`` pairs.
        target_quality: the quality to reach.
        reference_cost: the cost to divide by (> 0).

    Returns:
        The cost fraction, or ``None`` when no point on the hull reaches the target (or there
        are no points).

    Raises:
        UserError: ``reference_cost`` is not positive, or the points are malformed.
    """
    ref = _positive(reference_cost, "reference_cost")
    target = _finite(target_quality, "target_quality")
    hull = pareto_hull(points)
    if len(hull) == 0 or target > hull[-1, 1]:
        return None
    if target <= hull[0, 1]:
        return float(hull[0, 0]) / ref
    # Hull qualities increase strictly, so the segment is unique and the slope is finite.
    i = int(np.searchsorted(hull[:, 1], target, side="left")) - 1
    (c0, q0), (c1, q1) = hull[i], hull[i + 1]
    c = c0 + (target - q0) / (q1 - q0) * (c1 - c0)
    if c <= c0:  # a segment narrower than float resolution (subnormal costs): its far end
        c = c1
    return float(c) / ref


def quality_at_cost(points: PointsLike, cost: float) -> float | None:
    """The hull's quality at a given cost (linear interpolation between hull vertices).

    Right of the best point the quality stays flat at the best quality. Left of the cheapest
    point nothing is achievable, and the result is ``None`` (:func:`aiq` counts that region as
    0).

    Args:
        points: ``(cost, quality)`` pairs.
        cost: the cost to read the hull at, in the points' unit.

    Returns:
        The quality, or ``None`` when ``cost`` is below the cheapest point (or there are no
        points).

    Raises:
        UserError: the points are malformed or ``cost`` is not a finite number.
    """
    c = _finite(cost, "cost")
    hull = pareto_hull(points)
    if len(hull) == 0 or c < hull[0, 0]:
        return None
    return float(np.interp(c, hull[:, 0], hull[:, 1]))


# --------------------------------------------------------------------------------------------
# RouteLLM metrics (one strong and one weak model)


def _pgr_curve(
    points: ArrayLike, weak_quality: float, strong_quality: float, anchor: bool
) -> tuple[FloatArray, FloatArray]:
    """Return (strong shares, PGR) sorted by share, duplicates averaged."""
    weak = _finite(weak_quality, "weak_quality")
    strong = _finite(strong_quality, "strong_quality")
    if not strong > weak:
        raise UserError(
            f"expected strong_quality > weak_quality (got strong_quality={strong_quality!r}, "
            f"weak_quality={weak_quality!r}); the gap to recover must be positive, "
            "check that the two models are not swapped"
        )
    pts = _as_points(points, first="strong_share")
    if np.any(pts[:, 0] > 1):
        bad = pts[pts[:, 0] > 1][0]
        raise UserError(
            f"expected strong_share in [0, 1] (got point {tuple(bad.tolist())!r}); "
            "pass the share of calls sent to the strong model as a fraction, not a percentage"
        )
    if anchor:
        extra = []
        if not np.any(pts[:, 0] == 0.0):
            extra.append((0.0, weak))
        if not np.any(pts[:, 0] == 1.0):
            extra.append((1.0, strong))
        if extra:
            pts = np.vstack([pts, np.asarray(extra, dtype=np.float64)])
    shares, inverse = np.unique(pts[:, 0], return_inverse=True)
    quality = np.bincount(inverse, weights=pts[:, 1]) / np.bincount(inverse)
    return shares, (quality - weak) / (strong - weak)


def apgr(
    points: ArrayLike,
    weak_quality: float,
    strong_quality: float,
    *,
    anchor: bool = False,
) -> float:
    """Average Performance Gap Recovered (RouteLLM).

    A two-model router, swept over its thresholds, gives points ``(s, q)``: the share ``s`` of
    calls sent to the strong model and the quality ``q`` reached. The performance gap recovered
    at a point is ``PGR(s) = (q - weak_quality) / (strong_quality - weak_quality)``, and

        ``APGR = (1 / (s_max - s_min)) * integral of PGR(s) ds over [s_min, s_max]``,

    the integral taken with the trapezoidal rule over the points sorted by ``s`` (points at the
    same share are averaged first). This is exactly RouteLLM's
    ``(AUC - weak_AUC) / (strong_AUC - weak_AUC)`` (``routellm/evals/evaluate.py``), and equals
    ``integral of PGR over [0, 1]`` when the shares span ``[0, 1]``, as a threshold sweep
    calibrated from 0% to 100% strong calls does. A random router scores about 0.5, the
    always-weak/always-strong endpoints are PGR 0 and 1.

    Args:
        points: ``(strong_share, quality)`` pairs, ``strong_share`` a fraction in ``[0, 1]``.
        weak_quality: quality of always calling the weak model.
        strong_quality: quality of always calling the strong model (> ``weak_quality``).
        anchor: add ``(0, weak_quality)`` and ``(1, strong_quality)`` where no point has share
            0 or 1, so the integral always spans ``[0, 1]`` (the router's two ends are, by
            definition, the two models).

    Returns:
        The APGR (can leave ``[0, 1]`` if the router is worse than weak or better than strong).

    Raises:
        UserError: malformed points, a share outside ``[0, 1]``, fewer than two distinct
            shares, or ``strong_quality <= weak_quality``.
    """
    shares, pgr = _pgr_curve(points, weak_quality, strong_quality, anchor)
    if len(shares) < 2:
        raise UserError(
            f"expected points at two or more distinct strong shares (got {shares.tolist()!r}); "
            "sweep the router's threshold, or pass anchor=True to add the two models' ends"
        )
    area = float(np.sum(np.diff(shares) * (pgr[1:] + pgr[:-1]) / 2.0))
    return area / float(shares[-1] - shares[0])


def strong_share_to_recover(
    points: ArrayLike,
    weak_quality: float,
    strong_quality: float,
    fraction: float,
    *,
    anchor: bool = False,
) -> float | None:
    """The smallest strong-call share at which a router recovers ``fraction`` of the gap.

    RouteLLM's "strong calls needed for 20/50/80% of the quality gap". The curve is the
    piecewise-linear PGR curve of :func:`apgr` (not a hull: this describes one router's sweep);
    the answer is its first crossing of ``PGR = fraction``.

    Args:
        points: ``(strong_share, quality)`` pairs.
        weak_quality: quality of always calling the weak model.
        strong_quality: quality of always calling the strong model (> ``weak_quality``).
        fraction: the share of the gap to recover, e.g. ``0.5``.
        anchor: as in :func:`apgr`.

    Returns:
        The strong share in ``[0, 1]``, or ``None`` if the curve never reaches ``fraction``.

    Raises:
        UserError: as :func:`apgr`, or a non-finite ``fraction``.
    """
    target = _finite(fraction, "fraction")
    shares, pgr = _pgr_curve(points, weak_quality, strong_quality, anchor)
    if len(shares) == 0:
        return None
    reached = np.flatnonzero(pgr >= target)
    if len(reached) == 0:
        return None
    j = int(reached[0])
    if j == 0:
        return float(shares[0])
    s0, s1, p0, p1 = shares[j - 1], shares[j], pgr[j - 1], pgr[j]
    return float(s0 + (target - p0) / (p1 - p0) * (s1 - s0))


# --------------------------------------------------------------------------------------------
# Score / cost matrices


def choice_point(
    score_matrix: ArrayLike,
    cost_matrix: ArrayLike,
    choice: ArrayLike,
    *,
    missing_score: float | None = 0.0,
) -> Point:
    """The (total cost, mean quality) point of a per-query model choice.

    Args:
        score_matrix: scores, shape ``(n_queries, n_models)``; NaN is missing.
        cost_matrix: costs, same shape; NaN is missing.
        choice: the model index chosen for each query, shape ``(n_queries,)``.
        missing_score: as in :func:`single_model_points`.

    Returns:
        ``Point(cost, quality)``: the sum of the chosen costs (missing costs count 0) and the
        mean of the chosen scores.

    Raises:
        UserError: malformed matrices or choice.
    """
    scores, costs = _matrices(score_matrix, cost_matrix, missing_score)
    idx = np.asarray(choice)
    n, m = scores.shape
    if idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer):
        raise UserError(
            f"expected choice to be {n} integer model indices, shape ({n},) "
            f"(got dtype {idx.dtype.name!r}, shape {idx.shape!r})"
        )
    if np.any((idx < 0) | (idx >= m)):
        bad = idx[(idx < 0) | (idx >= m)][0]
        raise UserError(f"expected model indices in [0, {m}) (got {int(bad)!r})")
    rows = np.arange(n)
    return Point(
        cost=float(np.nansum(costs[rows, idx])),
        quality=float(np.mean(scores[rows, idx])),
    )


def oracle(
    score_matrix: ArrayLike,
    cost_matrix: ArrayLike,
    *,
    missing_score: float | None = 0.0,
) -> OracleResult:
    """The per-query oracle: for each query, the cheapest model reaching that query's best score.

    Scores are compared exactly after missing ones are replaced by ``missing_score``. Among the
    models reaching the row's best score the cheapest is chosen, a missing (NaN) cost ranking
    last (a model whose cost is unknown is never preferred as the cheap one); remaining ties go
    to the lowest model index. In the total, a missing cost counts 0.

    Args:
        score_matrix: scores, shape ``(n_queries, n_models)``; NaN is missing.
        cost_matrix: costs, same shape; NaN is missing.
        missing_score: as in :func:`single_model_points`.

    Returns:
        ``OracleResult(quality, cost, choice)``: mean score, total cost, chosen index per query.

    Raises:
        UserError: malformed matrices, or a missing score with ``missing_score=None``.
    """
    scores, costs = _matrices(score_matrix, cost_matrix, missing_score)
    best = scores.max(axis=1, keepdims=True)
    rank_cost = np.where(np.isnan(costs), np.inf, costs)
    rank_cost = np.where(scores == best, rank_cost, np.nan)
    # Every row has at least one best entry; NaN marks the others. nanargmin needs a non-NaN
    # entry, so stand in +inf-costing best entries with a huge finite value.
    rank_cost = np.where(np.isinf(rank_cost), np.finfo(np.float64).max, rank_cost)
    choice = np.nanargmin(rank_cost, axis=1).astype(np.int64)
    point = choice_point(scores, costs, choice, missing_score=missing_score)
    return OracleResult(quality=point.quality, cost=point.cost, choice=choice)


def single_model_points(
    score_matrix: ArrayLike,
    cost_matrix: ArrayLike,
    names: Sequence[str],
    *,
    missing_score: float | None = 0.0,
) -> dict[str, Point]:
    """The (total cost, mean quality) point of always calling each model.

    Missing entries (NaN): a missing score counts as ``missing_score`` (default 0.0, the
    RouterBench convention: no recorded answer is a failed answer) and every query stays in the
    mean's denominator, so models are compared on the same queries; ``missing_score=None``
    raises instead. A missing cost counts 0 in the total (no recorded spend).

    The most expensive single model's cost is the ``max_cost`` of :func:`aiq`::

        singles = single_model_points(scores, costs, names)
        max_cost = max(p.cost for p in singles.values())

    Args:
        score_matrix: scores, shape ``(n_queries, n_models)``; NaN is missing.
        cost_matrix: costs, same shape; NaN is missing.
        names: one unique name per model column.
        missing_score: the score a missing entry counts as, or ``None`` to reject missing ones.

    Returns:
        ``{name: Point(cost, quality)}`` in column order; usable directly as points.

    Raises:
        UserError: malformed matrices, names of the wrong length or repeated, or a missing
            score with ``missing_score=None``.
    """
    scores, costs = _matrices(score_matrix, cost_matrix, missing_score)
    if isinstance(names, str):
        raise UserError(f"expected a sequence of model names (got the string {names!r})")
    names = list(names)
    if len(names) != scores.shape[1]:
        raise UserError(
            f"expected {scores.shape[1]} names, one per model column (got {len(names)}: {names!r})"
        )
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"expected unique model names (got repeated {dup!r})")
    quality = scores.mean(axis=0)
    cost = np.nansum(costs, axis=0)
    return {
        name: Point(cost=float(c), quality=float(q))
        for name, c, q in zip(names, cost, quality, strict=True)
    }


def oracle_curve(
    score_matrix: ArrayLike,
    cost_matrix: ArrayLike,
    *,
    missing_score: float | None = 0.0,
) -> FloatArray:
    """The λ-swept oracle: for every λ >= 0, each query's model maximising ``score - λ·cost``.

    The upper bound of any router that picks one model per query: a router's point at any cost
    lies on or below this curve. At λ → 0 it is :func:`oracle`'s point (each query's best
    score, cheapest among equals); at λ → ∞ each query's cheapest model (the best among equally
    cheap ones). In between, the sweep moves query by query along that query's own upper hull
    of (cost, score), steepest gain per dollar first, so the curve's vertices are exact (no λ
    grid): start from the cheapest models, then apply every query's hull segments
    ``(Δcost, Δscore)`` in order of decreasing ``Δscore / Δcost``.

    Entries with a missing (NaN) cost are never chosen unless every cost of the query is
    missing (then its first model at cost 0), as :func:`oracle` ranks them last.

    Args:
        score_matrix: scores, shape ``(n_queries, n_models)``; NaN is missing.
        cost_matrix: costs, same shape; NaN is missing.
        missing_score: as in :func:`single_model_points`.

    Returns:
        The curve's vertices ``(total cost, mean score)``, shape ``(k, 2)``, sorted by cost with
        strictly increasing cost and score (its AIQ is :func:`aiq` of them).

    Raises:
        UserError: malformed matrices, or a missing score with ``missing_score=None``.

    Example:
        One query: model 0 (cost 1, score 0), model 1 (cost 3, score 1):

        >>> oracle_curve([[0.0, 1.0]], [[1.0, 3.0]]).tolist()
        [[1.0, 0.0], [3.0, 1.0]]
    """
    scores, costs = _matrices(score_matrix, cost_matrix, missing_score)
    n = scores.shape[0]
    start_cost = 0.0
    start_score = 0.0
    seg_dc: list[float] = []
    seg_ds: list[float] = []
    for i in range(n):
        ok = ~np.isnan(costs[i])
        if not ok.any():
            start_score += float(scores[i, 0])
            continue
        h = pareto_hull(np.column_stack([costs[i, ok], scores[i, ok]]))
        start_cost += float(h[0, 0])
        start_score += float(h[0, 1])
        d = np.diff(h, axis=0)
        seg_dc.extend(d[:, 0].tolist())
        seg_ds.extend(d[:, 1].tolist())
    dc = np.asarray(seg_dc, dtype=np.float64)
    ds = np.asarray(seg_ds, dtype=np.float64)
    # Hull segments have Δscore > 0 and Δcost > 0; steepest first (ties: any order, collinear).
    order = np.argsort(-(ds / dc), kind="stable")
    cost_path = start_cost + np.concatenate([[0.0], np.cumsum(dc[order])])
    score_path = start_score + np.concatenate([[0.0], np.cumsum(ds[order])])
    return pareto_hull(np.column_stack([cost_path, score_path / n]))

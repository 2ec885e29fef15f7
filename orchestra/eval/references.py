"""The reference points of an evaluation, from the table's score and cost matrices: every single
model, the oracle (cheapest model with the best score per query), the λ-swept oracle (the upper
bound of any one-model-per-query router: its curve and AIQ), the best and the cheapest single
model, a uniformly random model (expected value), and the single models' hull."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from orchestra.errors import UserError
from orchestra.eval import metrics as M
from orchestra.eval.report import Reference

if TYPE_CHECKING:
    from orchestra.outcomes.table import OutcomeTable

__all__ = ["References"]


@dataclass(frozen=True)
class References:
    """The reference points of a table (:meth:`of`), from its score and cost matrices.

    Attributes:
        points: (total cost, mean score) of always calling each model.
        singles: each model as a :class:`Reference`.
        named: ``oracle``, ``best_single``, ``cheapest_single`` and ``random``.
        best / cheapest: the best single model (the cheapest among equals) and the cheapest one.
        max_model / max_cost: the most expensive single model and its total cost (AIQ's x = 1).
        hull / hull_aiq: the single models' upper convex hull and its AIQ.
        oracle_curve / oracle_curve_aiq: the λ-swept oracle's vertices (per λ, each query's
            model maximising score − λ·cost; :func:`~orchestra.eval.metrics.oracle_curve`) and
            their AIQ: the upper bound the report compares routers to (the one-point oracle is
            its λ → 0 end).
    """

    points: dict[str, M.Point]
    singles: dict[str, Reference]
    named: dict[str, Reference]
    best: Reference
    cheapest: Reference
    max_model: str
    max_cost: float
    hull: list[tuple[float, float]]
    hull_aiq: float
    oracle_curve: list[tuple[float, float]]
    oracle_curve_aiq: float

    @classmethod
    def of(cls, table: OutcomeTable) -> References:
        S, C = table.score_matrix(), table.cost_matrix()
        pts = M.single_model_points(S, C, table.models)
        max_model = max(pts, key=lambda m: pts[m].cost)
        max_cost = pts[max_model].cost
        if not max_cost > 0:
            raise UserError("the most expensive single model costs 0 on these queries; AIQ needs "
                            "a positive cost to normalise by")

        def ref(name: str, label: str, cost: float, quality: float) -> Reference:
            return Reference(name=name, label=label, cost=float(cost), quality=float(quality),
                             aiq=M.aiq([(cost, quality)], max_cost))

        singles = {m: ref(m, m, p.cost, p.quality) for m, p in pts.items()}
        best = max(singles.values(), key=lambda r: (r.quality, -r.cost))
        cheapest = min(singles.values(), key=lambda r: (r.cost, -r.quality))
        orc = M.oracle(S, C)
        named = {
            "oracle": ref("oracle", "oracle (cheapest best model per query)", orc.cost,
                          orc.quality),
            "best_single": ref("best_single", f"best single: {best.name}", best.cost,
                               best.quality),
            "cheapest_single": ref("cheapest_single", f"cheapest single: {cheapest.name}",
                                   cheapest.cost, cheapest.quality),
            "random": ref("random", "random model (expected)",
                          float(np.mean([p.cost for p in pts.values()])),
                          float(np.mean([p.quality for p in pts.values()]))),
        }
        hull = [(float(c), float(q)) for c, q in M.pareto_hull(pts)]
        curve = M.oracle_curve(S, C)
        return cls(points=pts, singles=singles, named=named, best=best, cheapest=cheapest,
                   max_model=max_model, max_cost=max_cost, hull=hull,
                   hull_aiq=M.aiq(pts, max_cost),
                   oracle_curve=[(float(c), float(q)) for c, q in curve],
                   oracle_curve_aiq=M.aiq(curve, max_cost))

    def hull_quality(self, cost: float) -> float | None:
        """The single-model hull's score at ``cost``; a cost equal to the cheapest model's up to
        float summation order counts as equal (a policy that always calls it sums in another
        order)."""
        hull = self.hull
        if hull and cost < hull[0][0] and math.isclose(cost, hull[0][0], rel_tol=1e-9):
            cost = hull[0][0]
        return M.quality_at_cost(self.points, cost)

"""Summaries of an outcome table: per-model quality and cost, the oracle, the best model.

The **oracle** routes each query to the cheapest model among those with the highest recorded
score on it (the upper bound of any router over these models). The **best single model** has
the highest mean score (ties: the cheaper one).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestra.outcomes.table import OutcomeTable

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

__all__ = ["inspect_table", "oracle_choice", "render_inspect"]


def _f(x: float) -> float | None:
    """A JSON-safe float (NaN → None)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def oracle_choice(table: OutcomeTable) -> np.ndarray:
    """Per query, the column of the cheapest model with the highest score (-1: none recorded).

    Shapes:
        returns: (n_queries,) int array.
    """
    s = table.score_matrix()
    c = table.cost_matrix()
    out = np.full(table.n_queries, -1, dtype=np.int64)
    has = ~np.all(np.isnan(s), axis=1)
    if not has.any():
        return out
    best = np.nanmax(np.where(has[:, None], s, 0.0), axis=1)
    # Among the pairs at the best score, pick the cheapest (first column on a tie).
    at_best = (s >= best[:, None] - 1e-12) & ~np.isnan(s)
    masked_cost = np.where(at_best, c, np.inf)
    out[has] = np.argmin(masked_cost[has], axis=1)
    return out


def inspect_table(table: OutcomeTable) -> dict[str, Any]:
    """A JSON-serialisable summary of an outcome table.

    Returns:
        A dict with ``source``, ``queries``, ``rows``, ``models``, ``tasks`` (task → query
        count), ``estimated_cost`` and ``cost_note``, ``per_model`` (model → ``n``,
        ``mean_score``, ``total_cost``, ``mean_cost``), ``oracle`` (``mean_score``,
        ``total_cost``, ``picks``: model → queries routed there), ``best_model`` (``model``,
        ``mean_score``, ``total_cost``), ``cheapest_model`` and ``gold`` (the gold-derivation
        report, when the loader made one). Means are over recorded pairs; totals sum them.
    """
    s = table.score_matrix()
    c = table.cost_matrix()
    present = ~np.isnan(s)
    per_model: dict[str, dict[str, Any]] = {}
    for j, m in enumerate(table.models):
        n = int(present[:, j].sum())
        per_model[m] = {
            "n": n,
            "mean_score": _f(float(np.nanmean(s[:, j]))) if n else None,
            "total_cost": float(np.nansum(c[:, j])),
            "mean_cost": _f(float(np.nanmean(c[:, j]))) if n else None,
        }
    choice = oracle_choice(table)
    routed = choice >= 0
    rows = np.flatnonzero(routed)
    o_scores = s[rows, choice[routed]]
    o_costs = c[rows, choice[routed]]
    picks = Counter(table.models[j] for j in choice[routed].tolist())
    oracle = {
        "queries": int(routed.sum()),
        "mean_score": _f(float(o_scores.mean())) if len(rows) else None,
        "total_cost": float(o_costs.sum()),
        "mean_cost": _f(float(o_costs.mean())) if len(rows) else None,
        "picks": dict(picks.most_common()),
    }
    ranked = [m for m in table.models if per_model[m]["mean_score"] is not None]
    best = max(
        ranked,
        key=lambda m: (per_model[m]["mean_score"], -per_model[m]["total_cost"]),
        default=None,
    )
    cheapest = min(
        ranked, key=lambda m: (per_model[m]["mean_cost"], -per_model[m]["mean_score"]), default=None
    )

    def pick(m: str | None) -> dict[str, Any] | None:
        if m is None:
            return None
        return {
            "model": m,
            **{k: per_model[m][k] for k in ("mean_score", "total_cost", "mean_cost")},
        }

    counts = Counter(table.query_tasks)
    report: dict[str, Any] = {
        "source": table.meta.get("source"),
        "queries": table.n_queries,
        "rows": len(table),
        "models": table.models,
        "tasks": dict(sorted(counts.items())),
        "estimated_cost": table.estimated_cost,
        "cost_note": table.meta.get("cost_note"),
        "per_model": per_model,
        "oracle": oracle,
        "best_model": pick(best),
        "cheapest_model": pick(cheapest),
    }
    splits = Counter(q.split for q in table.query_rows if q.split is not None)
    if splits:
        report["splits"] = dict(sorted(splits.items()))
    if "gold" in table.meta:
        g = table.meta["gold"]
        report["gold"] = {
            k: g[k]
            for k in (
                "multiple_choice_queries",
                "with_gold",
                "by_vote",
                "by_elimination",
                "without_gold",
            )
            if k in g
        }
        report["gold"]["conflicts"] = len(g.get("conflicts", []))
    return report


def _money(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1:
        return f"${x:,.2f}"
    if x >= 0.01 or x == 0:
        return f"${x:.4f}"
    return f"${x:.3g}"  # per-query costs of small models: $4.1e-05, not $0.0000


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def render_inspect(report: dict[str, Any], console: Console) -> None:
    """Print a report of :func:`inspect_table` as rich tables.

    Args:
        report: the dict :func:`inspect_table` returned.
        console: where to print.
    """
    from rich.table import Table

    est = report.get("estimated_cost")
    cost_hdr = "cost (estimated)" if est else "cost"
    head = Table(title=f"Outcome table: {report.get('source') or '(unnamed)'}", show_header=False)
    head.add_column("what", style="bold")
    head.add_column("value")
    head.add_row("queries", str(report["queries"]))
    head.add_row("models", str(len(report["models"])))
    head.add_row("rows", str(report["rows"]))
    if report.get("splits"):
        head.add_row("splits", ", ".join(f"{k}: {v}" for k, v in report["splits"].items()))
    if est:
        head.add_row("costs", f"[yellow]ESTIMATED[/yellow] — {report.get('cost_note') or ''}")
    elif report.get("cost_note"):
        head.add_row("costs", str(report["cost_note"]))
    g = report.get("gold")
    if g:
        head.add_row(
            "gold letters",
            f"{g.get('with_gold')} of {g.get('multiple_choice_queries')} multiple-choice queries "
            f"({g.get('by_vote')} by vote, {g.get('by_elimination')} by elimination, "
            f"{g.get('conflicts')} conflicts)",
        )
    console.print(head)

    models = Table(title="Per model (sorted by mean score)")
    models.add_column("model")
    models.add_column("n", justify="right")
    models.add_column("mean score", justify="right")
    models.add_column(f"total {cost_hdr}", justify="right")
    models.add_column(f"mean {cost_hdr}", justify="right")
    best = (report.get("best_model") or {}).get("model")
    order = sorted(report["per_model"].items(), key=lambda kv: -(kv[1]["mean_score"] or -1.0))
    for m, r in order:
        name = f"[bold green]{m}[/bold green]" if m == best else m
        models.add_row(
            name,
            str(r["n"]),
            _score(r["mean_score"]),
            _money(r["total_cost"]),
            _money(r["mean_cost"]),
        )
    o = report["oracle"]
    models.add_section()
    models.add_row(
        "[bold]oracle[/bold] (cheapest best model per query)",
        str(o["queries"]),
        _score(o["mean_score"]),
        _money(o["total_cost"]),
        _money(o["mean_cost"]),
    )
    console.print(models)

    tasks = Table(title="Queries per task")
    tasks.add_column("task")
    tasks.add_column("queries", justify="right")
    for t, n in report["tasks"].items():
        tasks.add_row(t, str(n))
    console.print(tasks)
    if best:
        b = report["best_model"]
        console.print(
            f"best single model: [bold]{best}[/bold] — mean score {_score(b['mean_score'])} for "
            f"{_money(b['total_cost'])}; oracle: {_score(o['mean_score'])} for {_money(o['total_cost'])}"
            + (" [yellow](costs estimated)[/yellow]" if est else "")
        )

"""Cost vs quality plot of an evaluation report (matplotlib, Agg backend: no display needed).

Every single model is a point, the single-model hull a dashed line, the oracle a star (the
λ-swept oracle, the upper bound, a dotted line ending at it), and each
policy a curve over its λ points (a marker when it has one point). Cost is the total over the
evaluated queries on a log axis; the AIQ normalisation (most expensive single model = 1) is noted
in the title. Estimated costs (LLMRouter) are said so in the title and on the axis.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestra.errors import UserError

if TYPE_CHECKING:
    from orchestra.eval.report import EvalReport

__all__ = ["plot_report"]

_INSTALL_HINT = "plots need matplotlib: pip install matplotlib (or pip install 'orchestra[learn]')"


def _hull_curve(hull: list[list[float]], x_max: float) -> tuple[np.ndarray, np.ndarray]:
    """The hull sampled densely so its straight segments stay straight in cost (log axis)."""
    h = np.asarray(hull, dtype=float)
    xs = [h[0, 0]]
    for (x0, _), (x1, _) in pairwise(h):
        xs.extend(np.linspace(x0, x1, 40)[1:].tolist())
    if x_max > h[-1, 0]:
        xs.append(x_max)
    x = np.asarray(xs)
    return x, np.interp(x, h[:, 0], h[:, 1])


def plot_report(report: EvalReport | dict[str, Any], path: str | Path, *,
                title: str | None = None) -> Path:
    """Write the cost vs quality plot of a report (an :class:`EvalReport` or its JSON dict).

    Returns:
        The path written (PNG, or any format matplotlib knows from the suffix).

    Raises:
        UserError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(_INSTALL_HINT) from None
    d = report if isinstance(report, dict) else report.to_dict()
    data = d["data"]
    est = bool(data.get("estimated_cost"))
    singles = d["single_models"]
    refs = d["references"]
    fig, ax = plt.subplots(figsize=(12.5, 6.5), dpi=110)
    costs_all = [s["cost"] for s in singles.values()]
    for p in d["policies"]:
        costs_all += [pt["total_cost"] for pt in p["curve"]]
    pos = [c for c in costs_all if c and c > 0]
    x_max = max(pos) * 1.3 if pos else 1.0

    hull = d["single_hull"]["points"]
    if hull:
        hx, hy = _hull_curve(hull, x_max)
        ax.plot(hx, hy, "--", color="0.55", lw=1.2,
                label=f"single-model hull (AIQ {d['single_hull']['aiq']:.3f})", zorder=1)
    for name, s in singles.items():
        ax.scatter([s["cost"]], [s["quality"]], color="0.35", s=22, zorder=2)
        ax.annotate(name.split("/")[-1], (s["cost"], s["quality"]), fontsize=7, color="0.3",
                    xytext=(4, -3), textcoords="offset points")
    oc = d.get("oracle_curve") or {}
    if oc.get("points"):
        ocx, ocy = _hull_curve(oc["points"], x_max)
        ax.plot(ocx, ocy, ":", color="darkgoldenrod", lw=1.4, zorder=1,
                label=f"oracle, λ-swept: upper bound (AIQ {oc['aiq']:.3f})")
    o = refs["oracle"]
    ax.scatter([o["cost"]], [o["quality"]], marker="*", s=160, color="gold", edgecolor="k",
               zorder=4, label=f"oracle ({o['quality']:.3f})")
    r = refs["random"]
    ax.scatter([r["cost"]], [r["quality"]], marker="x", s=40, color="0.2", zorder=3,
               label=f"random model, expected ({r['quality']:.3f})")

    cmap = plt.get_cmap("tab10")
    for i, p in enumerate(d["policies"]):
        if not p["curve"]:
            continue
        pts = sorted(p["curve"], key=lambda c: c["total_cost"])
        xs = [c["total_cost"] for c in pts]
        ys = [c["mean_score"] for c in pts]
        aiq = p.get("aiq")
        label = f"{p['spec']} (AIQ {aiq:.3f})" if aiq is not None else p["spec"]
        style = "-o" if len(pts) > 1 else "o"
        ax.plot(xs, ys, style, color=cmap(i % 10), ms=6 if len(pts) == 1 else 3.5, lw=1.6,
                label=label, zorder=5)

    ax.set_xscale("log")
    ax.set_xlabel("total cost over the queries, USD (log)" + (" — ESTIMATED" if est else ""))
    ax.set_ylabel("mean score")
    n = data.get("n_queries")
    name = data.get("name")
    split = data.get("split")
    head = title or f"{name}{f' ({split})' if split else ''}: {n} queries"
    sub = (f"AIQ: cost / {d['normalisation']['max_cost_model']} (${d['normalisation']['max_cost']:.3g})"
           " = 1")
    if est:
        sub += " — costs ESTIMATED, not recorded"
    ax.set_title(f"{head}\n{sub}", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    # Outside the axes: inside, it would hide the points of some models.
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out

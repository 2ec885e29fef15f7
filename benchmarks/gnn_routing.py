"""Routing quality of the GNN router against kNN, MLP and MF, and a model added at serving time.

Run from the repository root (needs the shared data: ``../shared/data``, or set
``$ORCHESTRA_SHARED_DATA``)::

    .venv/bin/python benchmarks/gnn_routing.py                       # both data sets, ~25 min
    .venv/bin/python benchmarks/gnn_routing.py --data routerbench    # one
    .venv/bin/python benchmarks/gnn_routing.py --retrain             # train the GNNs again

For each data set (RouterBench: leave out ``mistralai/mixtral-8x7b-chat``; LLMRouter: leave out
``llama-3.1-8b-instruct``) it trains what is missing under ``<data home>/artifacts`` with the
project's own commands, on the train split only:

- ``<data>-gnn``: ``orchestra train gnn --data <data>`` (a Ray Train job);
- ``<data>-gnn-without-<model>``: the same with ``--exclude-model <model>``;
- ``<data>-knn-without-<model>``: ``orchestra train knn`` on the train split minus that model;
- ``<data>-knn|mlp|mf`` if absent (``orchestra train knn|mlp|mf --data <data>``).

Then one :func:`orchestra.eval.harness.evaluate` run on the test split puts them side by side
through the full runtime on the replay pool, whose pool holds *every* model: the GNN trained
without the left-out model meets it as a new model (description and price only) and may route
to it; the kNN trained without it cannot score it and never calls it. Reported per policy: AIQ
(cost normalised by the priciest single model), accuracy at the priciest model's cost, cost to
match its accuracy, and for the leave-one-out policies the left-out model's share of calls.
Ratios: GNN AIQ over the best of kNN/MLP/MF; the leave-one-out GNN over the retrained one and
over the leave-one-out kNN.

Results: ``benchmarks/results/gnn_routing_<data>.json`` and ``.png`` (cost-quality curves).
LLMRouter records no costs: they are estimated from token counts and list prices (the report
says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
# Named data (routerbench, llmrouter): the shared folder beside the checkout unless the caller
# set one; the training subprocesses inherit it.
os.environ.setdefault("ORCHESTRA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
PROFILED = 50
LEAVE_OUT = {
    "routerbench": "mistralai/mixtral-8x7b-chat",
    "llmrouter": "llama-3.1-8b-instruct",
}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def orchestra_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestra.cli", *args]


def run(cmd: list[str], con: Console) -> float:
    """Run a training command (its progress shows on this terminal); seconds taken."""
    con.print(f"[dim]$ {' '.join(cmd[2:] if cmd[1] == '-m' else cmd)}[/dim]")
    t0 = time.perf_counter()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    subprocess.run(cmd, check=True, cwd=REPO, env=env)
    return time.perf_counter() - t0


def ensure_artifacts(data: str, left_out: str, retrain: bool, con: Console) -> dict[str, Any]:
    """Train what is missing; the artifact paths and training times."""
    from orchestra.outcomes import load_outcomes
    from orchestra.policies.learned.locations import artifacts_home

    home = artifacts_home()
    arts = {
        "gnn": home / f"{data}-gnn",
        "gnn_loo": home / f"{data}-gnn-without-{slug(left_out)}",
        "knn_loo": home / f"{data}-knn-without-{slug(left_out)}",
        **{k: home / f"{data}-{k}" for k in ("knn", "mlp", "mf")},
    }
    seconds: dict[str, float] = {}
    for kind in ("knn", "mlp", "mf"):
        if not (arts[kind] / "config.json").is_file():
            seconds[kind] = run(orchestra_cmd("train", kind, "--data", data), con)
    for key, extra in (("gnn", []), ("gnn_loo", ["--exclude-model", left_out])):
        if retrain or not (arts[key] / "config.json").is_file():
            seconds[key] = run(orchestra_cmd("train", "gnn", "--data", data, "--out",
                                             str(arts[key]), *extra), con)
    table = load_outcomes(data)  # the train split
    # A handful of profiled outcomes of the left-out model: its recorded train-split outcomes
    # on PROFILED random training queries (what a user would get by calling it that often).
    profile = home / f"{data}-profile-{slug(left_out)}-{PROFILED}.jsonl"
    if retrain or not profile.is_file():
        import numpy as np

        pick = np.random.default_rng(0).choice(table.n_queries, PROFILED, replace=False)
        ids = [table.queries[i] for i in sorted(pick)]
        table.filter(models=[left_out], query_ids=ids).write(profile)
    arts["profile"] = profile
    if retrain or not (arts["knn_loo"] / "config.json").is_file():
        kept = table.filter(models=[m for m in table.models if m != left_out])
        with tempfile.TemporaryDirectory() as tmp:
            path = kept.write(Path(tmp) / f"{data}-train-without.jsonl")
            seconds["knn_loo"] = run(orchestra_cmd("train", "knn", "--data", str(path), "--out",
                                                   str(arts["knn_loo"])), con)
    return {"paths": {k: str(v) for k, v in arts.items()}, "train_seconds": seconds}


def summarise(report: Any, left_out: str, labels: dict[str, str]) -> dict[str, Any]:
    """Per policy: AIQ, accuracy at the priciest model's cost, cost to match, left-out share."""
    from orchestra.eval import metrics as M

    rows: dict[str, Any] = {}
    for r in report.policies:
        key = labels[r.spec]
        pts = [(p.total_cost, p.mean_score) for p in r.points]
        shares = [p.model_share(left_out) for p in r.points]
        meta_lam = _default_lam(r)
        at_default = next((p for p in r.points if p.lam is not None and meta_lam is not None
                           and abs(p.lam - meta_lam) <= 1e-12 * max(1.0, meta_lam)), None)
        rows[key] = {
            "spec": r.spec, "aiq": r.aiq, "error": r.error,
            "accuracy_at_max_cost": M.quality_at_cost(pts, report.max_cost) if pts else None,
            "cost_to_match_best": r.cost_to_match,
            "best_score": max((s for _, s in pts), default=None),
            "points": len(pts),
            "left_out_share_max": max(shares, default=0.0),
            "left_out_share_mean": sum(shares) / len(shares) if shares else 0.0,
            "left_out_share_at_default_lam": (at_default.model_share(left_out)
                                              if at_default is not None else None),
        }
    return rows


def _default_lam(result: Any) -> float | None:
    try:
        from orchestra.policies.learned.locations import resolve_artifact

        spec = result.spec
        path = dict(kv.split("=", 1) for kv in spec.split(",")[1:] if "=" in kv).get("path")
        meta = json.loads((resolve_artifact(path, spec.split(",")[0]) / "config.json").read_text())
        return float(meta["default_lam"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def offline_predictions(kind: str, path: str, table: Any) -> tuple[Any, Any, list[float], float]:
    """Predicted (scores, costs) on the table's queries in its model order, the artifact's λ
    list and cost scale (the same predictions the policies make inside the runtime)."""
    import numpy as np

    texts, tasks = table.query_texts, list(table.query_tasks)
    if kind == "gnn":
        from orchestra.policies.gnn.policy import GNNScorer

        sc = GNNScorer(path)
        s, c = sc.predict(texts, tasks)
        names, lams, scale = [m for _, m in sc.candidates], sc.default_lambdas(), sc.cost_scale
    else:
        from orchestra.policies.learned.artifact import load_router

        r = load_router(path)
        pr = r.predict(texts, tasks)
        s, c, names = pr["scores"], pr["costs"], r.models
        lams, scale = [float(v) for v in r.config["lambdas"]], r.cost_scale
    cols = [names.index(m) for m in table.models]
    return np.asarray(s)[:, cols], np.asarray(c)[:, cols], lams, scale


def chosen_outcomes(ps: Any, pc: Any, lams: list[float], scale: float, table: Any
                    ) -> tuple[Any, Any]:
    """``(L, n)`` recorded score and cost of the model chosen per λ and query, by the chooser
    the policies use (:func:`orchestra.policies.learned.chooser.choose_models`, no budget)."""
    import numpy as np

    from orchestra.policies.learned.chooser import choose_models

    s_true = np.nan_to_num(table.score_matrix(), nan=0.0)
    c_true = np.nan_to_num(table.cost_matrix(), nan=0.0)
    rows = np.arange(ps.shape[0])
    S, C = [], []
    for lam in lams:
        pick = np.array([choose_models(ps[i], pc[i], lam, scale)[0] for i in rows])
        S.append(s_true[rows, pick])
        C.append(c_true[rows, pick])
    return np.array(S), np.array(C)


def paired_bootstrap(a: tuple[Any, Any], b: tuple[Any, Any], table: Any, n_boot: int = 1000,
                     seed: int = 0) -> dict[str, float]:
    """AIQ of policy a minus policy b on resampled query sets (the same resample for both)."""
    import numpy as np

    from orchestra.eval.metrics import aiq

    c_true = np.nan_to_num(table.cost_matrix(), nan=0.0)
    rng = np.random.default_rng(seed)
    n = c_true.shape[0]

    def aiq_of(sc: tuple[Any, Any], idx: Any) -> float:
        S, C = sc
        pts = np.column_stack([C[:, idx].sum(axis=1), S[:, idx].mean(axis=1)])
        return aiq(pts, float(c_true[idx].sum(axis=0).max()))

    full = np.arange(n)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        diffs.append(aiq_of(a, idx) - aiq_of(b, idx))
    d = np.asarray(diffs)
    return {"aiq_a": aiq_of(a, full), "aiq_b": aiq_of(b, full),
            "diff": aiq_of(a, full) - aiq_of(b, full), "ci95_low": float(np.quantile(d, 0.025)),
            "ci95_high": float(np.quantile(d, 0.975)), "p_a_better": float((d > 0).mean()),
            "n_boot": n_boot}


def bench(data: str, retrain: bool, con: Console) -> dict[str, Any]:
    from orchestra.eval.data import load_eval_data
    from orchestra.eval.harness import evaluate

    left_out = LEAVE_OUT[data]
    arts = ensure_artifacts(data, left_out, retrain, con)
    p = arts["paths"]
    specs = {
        f"knn,path={p['knn']}": "knn", f"mlp,path={p['mlp']}": "mlp", f"mf,path={p['mf']}": "mf",
        f"gnn,path={p['gnn']}": "gnn",
        f"gnn,path={p['gnn_loo']}": "gnn_without",
        f"gnn,path={p['gnn_loo']},profile={p['profile']}": "gnn_without_profiled",
        f"knn,path={p['knn_loo']}": "knn_without",
    }
    ev = load_eval_data(data, split="test")
    con.print(f"evaluating {len(specs)} policies on {data}:test through the runtime")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=con, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label[:60], total=total)
            bar.update(tasks[label], completed=done)

        report = evaluate(ev, list(specs), lambdas="auto", apgr=False, progress=progress)
    eval_s = time.perf_counter() - t0
    rows = summarise(report, left_out, specs)
    best_prior = max(("knn", "mlp", "mf"), key=lambda k: rows[k]["aiq"] or -1.0)

    # Is the GNN's AIQ lead (or lag) beyond the noise of this test set? The same choices,
    # recomputed offline from the artifacts' predictions, on 1,000 paired resamples.
    table = ev.table
    gnn_sc = chosen_outcomes(*offline_predictions("gnn", p["gnn"], table), table)
    prior_sc = chosen_outcomes(*offline_predictions(best_prior, p[best_prior], table), table)
    boot = paired_bootstrap(gnn_sc, prior_sc, table)

    def ratio(a: str, b: str) -> float | None:
        x, y = rows[a]["aiq"], rows[b]["aiq"]
        return x / y if x is not None and y else None

    out = {
        "data": data, "split": "test", "n_queries": ev.table.n_queries,
        "estimated_cost": report.estimated_cost,
        "left_out_model": left_out,
        "profiled_outcomes": PROFILED,
        "max_cost_model": report.max_cost_model, "max_cost": report.max_cost,
        "references": {k: {"cost": v.cost, "quality": v.quality, "aiq": v.aiq}
                       for k, v in report.references.items()},
        "single_hull_aiq": report.single_hull_aiq,
        "policies": rows,
        "best_of_knn_mlp_mf": best_prior,
        "ratios": {
            "gnn_aiq_over_best_of_knn_mlp_mf": ratio("gnn", best_prior),
            "gnn_without_over_gnn_retrained": ratio("gnn_without", "gnn"),
            "gnn_without_over_knn_without": ratio("gnn_without", "knn_without"),
            "gnn_without_profiled_over_gnn_retrained": ratio("gnn_without_profiled", "gnn"),
        },
        "bootstrap_gnn_minus_best_prior": boot,
        "artifacts": arts,
        "eval_seconds": eval_s,
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                    "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "report": report.to_dict(),
    }
    res = ROOT / "results"
    res.mkdir(exist_ok=True)
    (res / f"gnn_routing_{data}.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    replot(out, res / f"gnn_routing_{data}.png")
    return out


def replot(out: dict[str, Any], path: Path) -> None:
    """The cost-quality plot of a result, policies labelled by their short names."""
    from orchestra.eval.plots import plot_report

    rep = json.loads(json.dumps(out["report"]))
    names = {r["spec"]: key for key, r in out["policies"].items()}
    for pol in rep["policies"]:
        pol["spec"] = (names.get(pol["spec"], pol["spec"])
                       .replace("_without", " without " + out["left_out_model"])
                       .replace("_profiled", f" + {out.get('profiled_outcomes')} profiled"))
    plot_report(rep, path, title=f"{out['data']} test: GNN vs kNN / MLP / MF"
                + (" (costs estimated)" if out["estimated_cost"] else ""))


def show(out: dict[str, Any], con: Console) -> None:
    est = " [yellow](costs estimated)[/yellow]" if out["estimated_cost"] else ""
    t = Table(title=f"{out['data']} test, {out['n_queries']} queries{est}; left out: "
                    f"{out['left_out_model']}")
    for col in ("policy", "AIQ", f"acc. at {out['max_cost_model']}'s cost", "cost to match",
                "left-out model's share of calls (default λ / max over λ)"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    refs = out["references"]
    for name in ("oracle", "best_single"):
        if name in refs:
            t.add_row(name, f"{refs[name]['aiq']:.4f}", f"{refs[name]['quality']:.3f}", "", "")
    t.add_row("single-model hull", f"{out['single_hull_aiq']:.4f}", "", "", "")
    for key, r in out["policies"].items():
        share = r["left_out_share_at_default_lam"]
        t.add_row(
            key, "—" if r["aiq"] is None else f"{r['aiq']:.4f}",
            "—" if r["accuracy_at_max_cost"] is None else f"{r['accuracy_at_max_cost']:.3f}",
            "—" if r["cost_to_match_best"] is None else f"{100 * r['cost_to_match_best']:.0f}%",
            ("—" if share is None else f"{100 * share:.1f}%")
            + f" / {100 * r['left_out_share_max']:.1f}%",
        )
    con.print(t)
    for k, v in out["ratios"].items():
        con.print(f"{k}: {'—' if v is None else f'{v:.4f}'}")
    b = out["bootstrap_gnn_minus_best_prior"]
    con.print(f"GNN − {out['best_of_knn_mlp_mf']} AIQ (offline, same choices): {b['diff']:+.4f}, "
              f"95% CI [{b['ci95_low']:+.4f}, {b['ci95_high']:+.4f}] over {b['n_boot']} paired "
              f"resamples; GNN ahead in {100 * b['p_a_better']:.0f}% of them")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=sorted(LEAVE_OUT), action="append")
    ap.add_argument("--retrain", action="store_true", help="train the GNN artifacts again")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the plots (and tables) from the saved JSON results")
    args = ap.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    con = Console()
    for data in args.data or ["routerbench", "llmrouter"]:
        if args.replot:
            saved = ROOT / "results" / f"gnn_routing_{data}.json"
            out = json.loads(saved.read_text(encoding="utf-8"))
            replot(out, saved.with_suffix(".png"))
            show(out, con)
        else:
            show(bench(data, args.retrain, con), con)


if __name__ == "__main__":
    main()

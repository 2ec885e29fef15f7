"""The answer-aware cascade ``escalate`` on RouterBench's test split, beside MF, GNN, the
verifier cascade and a naive agreement cascade.

Run from the repository root (needs the shared data: ``../shared/data``, or set
``$ORCHESTRA_SHARED_DATA``)::

    .venv/bin/python benchmarks/escalate_routerbench.py              # offline + runtime
    .venv/bin/python benchmarks/escalate_routerbench.py --offline    # the simulation only
    .venv/bin/python benchmarks/escalate_routerbench.py --retrain    # train escalate again

1. **Offline**: the artifact (``orchestra train escalate --data routerbench``, trained here if
   missing; train split only) runs on the recorded test answers
   (:func:`~orchestra.policies.escalate.cascade.simulate`) over its λ grid: accuracy, cost share
   of gpt-4, AIQ.
2. **Runtime**: one :func:`orchestra.eval.harness.evaluate` run on the replay pool (full runtime,
   953 test queries) with ``escalate``, ``mf``, ``gnn`` (when their artifacts exist), ``cascade``
   and ``agree-cascade`` — the naive agreement cascade (mixtral-8x7b and Yi-34B answer; on
   disagreement gpt-4 answers), a tiny policy defined here. Then each of escalate and MF again
   query by query through :class:`~orchestra.runtime.Orchestra` (graded with
   :func:`~orchestra.eval.grading.grade_run`) for a paired bootstrap of AIQ(escalate) − AIQ(MF)
   (queries resampled, 2,000 draws, 95% percentile interval), and the decision latency of
   ``escalate`` (its ``decide`` timed inside those runs; it embeds nothing, so the latency with
   and without embedding is the same).

Results: ``benchmarks/results/escalate_routerbench.json`` and ``.png`` (cost-quality curves).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
os.environ.setdefault("ORCHESTRA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("ORCHESTRA_DATA_DIR", os.environ["ORCHESTRA_SHARED_DATA"])
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

STRONG = "gpt-4-1106-preview"
#: What the benchmark trains with when the artifact is missing (3 folds), as
#: ``orchestra train escalate --data routerbench --folds 3 --param hidden=16
#: --param lookahead=true``.
TRAIN_PARAMS = {"hidden": 16, "lookahead": True}
NAIVE_PAIR = ("mistralai/mixtral-8x7b-chat", "zero-one-ai/Yi-34B-Chat")


# ---------------------------------------------------------------------- the naive cascade
def _register_naive() -> None:
    from orchestra.policies.base import Action, Answer, Call, Route, RunView
    from orchestra.policies.registry import register_policy

    class AgreementCascade:
        """Two cheap models answer; on disagreement the strong one answers (no learning)."""

        name = "agree-cascade"

        def decide(self, view: RunView) -> Action:
            from orchestra.outcomes import extract_choice_letter, parse_choices

            if not view.rounds:
                return Route([Call(model=m) for m in NAIVE_PAIR], merge="last")
            calls = view.outputs
            if len(view.rounds) >= 2 or len(calls) < 2:
                last = calls[-1] if calls else None
                return Answer(text=last.output if last else None,
                              from_call=last.call_id if last else None)
            choices = parse_choices(view.query)

            def key(text: str) -> str | None:
                if choices:
                    return extract_choice_letter(text, len(choices), choices)
                return " ".join(text.split()).lower() or None

            a, b = (key(c.output) for c in calls[:2])
            if a is not None and a == b:
                return Answer(text=calls[0].output, from_call=calls[0].call_id,
                              reason="the two cheap answers agree")
            return Route([Call(model=STRONG)], reason="disagreement: ask the strong model")

    register_policy("agree-cascade", lambda pool: AgreementCascade(),
                    doc="benchmark: mixtral + Yi answer; on disagreement gpt-4")


# ---------------------------------------------------------------------- helpers
def _artifact(retrain: bool) -> Path:
    from orchestra.policies.learned.locations import artifacts_home
    from orchestra.training.escalate_fit import run_escalate_training

    path = artifacts_home() / "routerbench-escalate"
    if retrain or not (path / "config.json").is_file():
        print("training escalate on routerbench:train ...", flush=True)
        summary = run_escalate_training({"data": "routerbench", "split": None, "out": None,
                                         "seed": 0, "folds": 3, "params": TRAIN_PARAMS})
        print(json.dumps({k: summary[k] for k in ("artifact", "params", "cv_oof_aiq",
                                                  "seconds")}), flush=True)
    return path


def _escalate_lambdas(esc_path: Path, most: int) -> list[float]:
    """At most ``most`` λ of the artifact's grid, evenly spread, its default included (each λ
    of ``escalate`` is a full runtime pass of several rounds per query)."""
    from orchestra.policies.escalate.artifact import load_escalator

    cfg = load_escalator(esc_path).config
    lams = [float(v) for v in cfg["lambdas"]]
    if len(lams) > most:
        lams = [lams[int(i)] for i in np.linspace(0, len(lams) - 1, most).round()]
    return sorted(set(lams) | {float(cfg["default_lam"])})


def _points_summary(points: list[tuple[float, float, float]], strong_cost: float,
                    strong_q: float) -> dict[str, Any]:
    """Accuracy and cost share of the strong model per point; the cheapest point reaching the
    strong model's accuracy."""
    rows = [{"lam": lam, "accuracy": q, "cost_share_of_strong": c / strong_cost}
            for lam, c, q in points]
    reach = [r for r in rows if r["accuracy"] >= strong_q - 1e-9]
    best = min(reach, key=lambda r: r["cost_share_of_strong"]) if reach else None
    return {"points": rows, "cheapest_at_strong_accuracy": best}


def _test_data(limit: int | None) -> Any:
    from orchestra.eval.data import load_eval_data

    return load_eval_data("routerbench", split="test", limit=limit, seed=0)


def offline(esc_path: Path, limit: int | None) -> dict[str, Any]:
    from orchestra.eval.metrics import aiq
    from orchestra.policies.escalate.artifact import load_escalator
    from orchestra.policies.escalate.cascade import simulate
    from orchestra.training.escalate_fit import prepare_escalate_data

    esc = load_escalator(esc_path)
    test = prepare_escalate_data(_test_data(limit).table)
    c = np.nan_to_num(test.costs)
    s = np.nan_to_num(test.scores)
    j = test.models.index(STRONG)
    lams = sorted(set(esc.config["lambdas"]) | {0.05, 0.08, 0.12, 0.15, 0.2})
    t0 = time.perf_counter()
    res = simulate(esc, test.queries, test.scores, test.costs, lams,
                   max_calls=int(esc.config.get("max_calls", 3)))
    secs = time.perf_counter() - t0
    pts = [(r["lam"], r["total_cost"], r["mean_score"]) for r in res]
    out = {"aiq": aiq([(cc, q) for _, cc, q in pts], float(c.sum(axis=0).max())),
           "seconds": secs, "calls_per_query": {r["lam"]: r["calls_per_query"] for r in res},
           **_points_summary(pts, float(c[:, j].sum()), float(s[:, j].mean()))}
    return out


async def _per_query(policy: Any, pool: Any, table: Any, queries: list[Any],
                     timings: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    from orchestra.eval.grading import grade_run
    from orchestra.runtime import Orchestra

    if timings is not None:
        inner = policy.decide

        def timed(view: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(view)
            finally:
                timings.append(time.perf_counter() - t)

        policy.decide = timed
    orch = Orchestra(pool, policy=policy, store=False, backend=_backend())
    scores = np.zeros(len(queries))
    costs = np.zeros(len(queries))
    for start in range(0, len(queries), 16):
        batch = queries[start:start + 16]
        results = await asyncio.gather(*[orch.arun(q.query, meta={"query_id": q.query_id,
                                                                  "task": q.task})
                                         for q in batch])
        for k, (q, r) in enumerate(zip(batch, results, strict=True)):
            scores[start + k] = grade_run(table, q.query_id, r)
            costs[start + k] = r.cost_usd
    return scores, costs


def _backend() -> Any:
    from orchestra.backends.replay import ReplayBackend

    return ReplayBackend()


def paired(esc_path: Path, esc_lams: list[float], mf_ok: bool, limit: int | None,
           draws: int = 2000) -> dict[str, Any]:
    """Per-query runtime runs of escalate and MF over their λ grids; paired bootstrap."""
    from orchestra.backends.replay import pool_from_outcomes
    from orchestra.eval.metrics import aiq
    from orchestra.policies.resolve import resolve_policy

    data = _test_data(limit)
    table = data.table
    pool = pool_from_outcomes(table, quality=data.priors)
    queries = list(table.query_rows)
    c = np.nan_to_num(table.cost_matrix())
    out: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    timings: list[float] = []
    specs = [("escalate", {"path": str(esc_path)})] + ([("mf", {})] if mf_ok else [])
    for name, params in specs:
        first: Any = resolve_policy(name, pool, params)
        lams = esc_lams if name == "escalate" else first.default_lambdas()
        sc, co = [], []
        t0 = time.perf_counter()
        for lam in lams:
            pol = resolve_policy(name, pool, {**params, "lam": lam})
            prep = getattr(pol, "predict", None)
            if callable(prep):
                prep([q.query for q in queries], [q.task for q in queries])
            want = timings if name == "escalate" and lam == first.lam else None
            s, cc = asyncio.run(_per_query(pol, pool, table, queries, want))
            sc.append(s)
            co.append(cc)
        curves[name] = (np.array(sc), np.array(co))
        full = [(float(cc.sum()), float(s.mean())) for s, cc in zip(sc, co, strict=True)]
        out[name] = {"lambdas": lams, "aiq": aiq(full, float(c.sum(axis=0).max())),
                     "seconds": time.perf_counter() - t0}
    if timings:
        ms = np.array(timings) * 1e3
        out["decision_latency_ms"] = {
            "n": len(ms), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "embedding": "none: escalate reads answers, not embeddings, so excluded = included"}
    if "mf" in curves:
        rng = np.random.default_rng(0)
        n = len(queries)
        diffs = np.zeros(draws)
        for b in range(draws):
            idx = rng.integers(0, n, n)
            mx = float(c[idx].sum(axis=0).max())
            a = {k: aiq([(float(co[i, idx].sum()), float(sc[i, idx].mean()))
                         for i in range(len(sc))], mx) for k, (sc, co) in curves.items()}
            diffs[b] = a["escalate"] - a["mf"]
        out["paired_bootstrap_aiq_escalate_minus_mf"] = {
            "diff": out["escalate"]["aiq"] - out["mf"]["aiq"], "draws": draws,
            "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
            "share_above_0": float((diffs > 0).mean())}
    return out


def runtime(esc_path: Path, esc_lams: list[float], png: Path, limit: int | None
            ) -> dict[str, Any]:
    from orchestra.eval.harness import evaluate
    from orchestra.eval.plots import plot_report
    from orchestra.policies.learned.locations import artifacts_home

    _register_naive()
    data = _test_data(limit)
    have = {k: (artifacts_home() / f"routerbench-{k}" / "config.json").is_file()
            for k in ("mf", "gnn")}
    specs = [k for k, ok in have.items() if ok] + ["cascade", "agree-cascade"]
    t0 = time.perf_counter()
    d = evaluate(data, [f"escalate,path={esc_path}"], lambdas=esc_lams, apgr=False).to_dict()
    others = evaluate(data, specs, apgr=False).to_dict()
    d["policies"] += others["policies"]
    d["settings"]["lambdas"] = {"escalate": esc_lams, "others": others["settings"]["lambdas"]}
    plot_report(d, png, title="RouterBench test: escalate vs MF, GNN, cascades")
    strong = d["single_models"][STRONG]
    pols = {}
    for p in d["policies"]:
        pts = [(c["lam"], c["total_cost"], c["mean_score"]) for c in p["curve"]]
        pols[p["spec"]] = {"aiq": p["aiq"], "error": p["error"],
                           "cost_to_match_best": p["cost_to_match_best"],
                           **_points_summary(pts, strong["cost"], strong["quality"])}
    return {"seconds": time.perf_counter() - t0, "missing_artifacts": [k for k, ok in have.items()
                                                                       if not ok],
            "references": d["references"], "policies": pols, "report": d}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offline", action="store_true", help="the offline simulation only")
    ap.add_argument("--retrain", action="store_true", help="train the escalate artifact again")
    ap.add_argument("--artifact", type=Path, help="an escalate artifact to use instead")
    ap.add_argument("--limit", type=int, help="a seeded subset of the test queries (smoke runs)")
    ap.add_argument("--max-lambdas", type=int, default=8,
                    help="λ of escalate run through the runtime (the offline run uses all)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "escalate_routerbench.json")
    args = ap.parse_args()
    esc_path = args.artifact or _artifact(args.retrain)
    from orchestra.policies.escalate.artifact import load_escalator

    cfg = load_escalator(esc_path).config
    result: dict[str, Any] = {
        "benchmark": "escalate_routerbench", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_avg": list(os.getloadavg())},
        "artifact": {"path": str(esc_path), "cv": {k: v for k, v in cfg["cv"].items()
                                                   if k != "grid"},
                     "train_seconds": cfg.get("train_seconds"), "lambdas": cfg["lambdas"],
                     "default_lam": cfg["default_lam"], "lookahead": cfg.get("lookahead")},
        "targets": {"aiq_above_mf": "paired bootstrap 95% CI of AIQ(escalate) - AIQ(mf) > 0",
                    "gpt4_accuracy_0.874_at_cost_share": "<= 0.45"},
    }
    result["limit"] = args.limit
    result["offline"] = offline(esc_path, args.limit)
    esc_lams = _escalate_lambdas(esc_path, args.max_lambdas)
    result["runtime_escalate_lambdas"] = esc_lams
    print(json.dumps({"offline_aiq": result["offline"]["aiq"],
                      "cheapest_at_gpt4": result["offline"]["cheapest_at_strong_accuracy"]}),
          flush=True)
    if not args.offline:
        png = args.out.with_suffix(".png")
        result["runtime"] = runtime(esc_path, esc_lams, png, args.limit)
        from orchestra.policies.learned.locations import artifacts_home

        result["paired"] = paired(esc_path, esc_lams, (artifacts_home() / "routerbench-mf"
                                                       / "config.json").is_file(), args.limit)
        result["plot"] = str(png.relative_to(REPO)) if png.is_relative_to(REPO) else str(png)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")
    summary = {k: v for k, v in result.get("paired", {}).items()}
    print(json.dumps({"runtime_aiq": {k: v["aiq"] for k, v in
                                      result.get("runtime", {}).get("policies", {}).items()},
                      **summary}, indent=1, default=float))


if __name__ == "__main__":
    main()

"""The ``bandit`` policy learning online on RouterBench, against MF trained offline.

Run from the repository root (needs the shared data: ``../shared/data``, or set
``$ORCHESTRA_SHARED_DATA``; trains ``<data home>/artifacts/routerbench-mf`` with
``orchestra train mf --data routerbench`` when it is missing)::

    .venv/bin/python benchmarks/bandit_stream.py               # ~10 min on 2 busy cores
    .venv/bin/python benchmarks/bandit_stream.py --seeds 2 --runtime-queries 100   # quicker

**The stream (offline, fast).** Every RouterBench query, train and test split together
(2,225 + 953), in a random order per seed, cold start. For each query the bandit chooses one
model with :meth:`BanditPolicy.choose` and learns, with :meth:`BanditPolicy.learn`, only that
model's *recorded* score and cost — the policy's own code, called directly with the recorded
outcomes instead of through the runtime (no graph, no ledger), so thousands of steps take
seconds. The reward of a step is ``score - lam * cost / cost_scale`` with the MF artifact's
``cost_scale`` (the priciest model's mean cost per query on the train split), the same for every
router. Compared on the same stream:

- ``mf``: the matrix-factorisation router trained offline with *full information* (every
  model's outcome on every train query) on the train split only, at the same λ. On the stream's
  train-split queries it is thus scored on queries it was trained on; the results give it on
  the test-split queries alone too (``test_only``);
- ``random`` (the expected reward of a uniform choice), ``strongest`` (always
  ``gpt-4-1106-preview``) and the ``oracle`` (the best reward per query), against which regret
  is counted.

Reported per λ and seed: cumulative reward and regret, the mean reward over the last third of
the stream and on its test-split queries, and **where the bandit crosses MF**: the first step
from which its mean reward over a trailing window of 300 queries stays at or above MF's on the
same queries, and the first step where its cumulative reward reaches MF's (if ever).

**The λ dial.** One stream of the train-split queries (shuffled, cold start, bandit feedback)
is learned with each user's preference λ drawn from a grid (BaRP's preference-conditioned
setting); the learned state is then frozen and asked greedily (no bonus) at each λ of a fine
grid on the test split, which it never saw: accuracy and cost per query, no retraining between
points. MF's own sweep on the test split (trained on the train split with full information) is
the reference curve.

**Through the runtime.** ``--runtime-queries`` test queries (random order) run through
``Orchestra`` on the replay pool (``ReplayBackend``: recorded answers and costs, the real budget
ledger), each followed by ``Orchestra.feedback(run_id, score=<recorded score>)``. The same
queries in the same order then go through the offline loop with a fresh policy and the same
seed: the share of identical choices says the runtime feeds the learner what the offline loop
does, and the reward curve says it learns there too.

**Latency.** Decision latency p50/p99 of :meth:`BanditPolicy.choose` on precomputed features
(embedding excluded), and of featurising + choosing with MiniLM uncached (embedding included).

Results: ``benchmarks/results/bandit_stream.json`` and ``bandit_stream.png`` (cumulative
reward and regret vs MF, random and strongest; cost-quality plane with the λ sweeps).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
os.environ.setdefault("ORCHESTRA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

STRONGEST = "gpt-4-1106-preview"
WINDOW = 300
EVERY = 10  # cumulative curves are stored at every 10th step
DIAL_TRAIN_LAMS = [0.0, 0.05, 0.2, 0.5, 1.0, 3.0]


# ---------------------------------------------------------------------- data and routers


def load_data() -> dict[str, Any]:
    """Train and test RouterBench tables, stacked: texts, tasks, scores, costs, split flags."""
    from orchestra.outcomes import load_outcomes

    train = load_outcomes("routerbench", split="train")
    test = load_outcomes("routerbench", split="test")
    if train.models != test.models:
        raise SystemExit(f"train and test models differ: {train.models} vs {test.models}")
    return {
        "train": train, "test": test, "models": list(train.models),
        "texts": train.query_texts + test.query_texts,
        "tasks": train.query_tasks + test.query_tasks,
        "ids": train.queries + test.queries,
        "scores": np.nan_to_num(np.vstack([train.score_matrix(), test.score_matrix()])),
        "costs": np.nan_to_num(np.vstack([train.cost_matrix(), test.cost_matrix()])),
        "is_test": np.r_[np.zeros(train.n_queries, bool), np.ones(test.n_queries, bool)],
    }


def mf_policy(pool: Any, con: Any) -> Any:
    """The MF router trained on the train split (trained here with the project's command if
    absent)."""
    from orchestra.errors import UserError
    from orchestra.policies.resolve import resolve_policy

    try:
        return resolve_policy("mf", pool, {"path": "routerbench-mf", "lam": 0.0})
    except UserError:
        con.print("[dim]$ orchestra train mf --data routerbench[/dim]")
        subprocess.run([sys.executable, "-m", "orchestra.cli", "train", "mf", "--data",
                        "routerbench"], check=True, cwd=REPO)
        return resolve_policy("mf", pool, {"path": "routerbench-mf", "lam": 0.0})


def bandit_policy(pool: Any, *, seed: int, lam: float, cost_scale: float,
                  alpha: float, dim: int | None) -> Any:
    from orchestra.policies.bandit.policy import BanditPolicy

    return BanditPolicy(pool, lam=lam, alpha=alpha, dim=dim, seed=seed, cost_scale=cost_scale,
                        embedder="minilm")


# ---------------------------------------------------------------------- the stream


def run_stream(policy: Any, order: np.ndarray, emb: np.ndarray, data: dict[str, Any],
               lams: np.ndarray, col: dict[str, int]) -> np.ndarray:
    """Feed the stream through ``policy.choose`` / ``policy.learn``; the chosen columns."""
    texts, tasks = data["texts"], data["tasks"]
    chosen = np.empty(len(order), dtype=np.intp)
    x_all = policy.features.assemble(emb[order], [texts[i] for i in order],
                                     [tasks[i] for i in order])
    for t, i in enumerate(order):
        name, _ = policy.choose(x_all[t], texts[i], lam=float(lams[t]), task=tasks[i])
        j = col[name]
        policy.learn(name, x_all[t], texts[i], float(data["scores"][i, j]),
                     float(data["costs"][i, j]))
        chosen[t] = j
    return chosen


def rewards(data: dict[str, Any], lam: float, scale: float) -> np.ndarray:
    """``(n, m)`` reward of every model on every query at ``lam``."""
    return data["scores"] - lam * data["costs"] / scale  # type: ignore[no-any-return]


def mf_choices(mf: Any, data: dict[str, Any], lam: float, col: dict[str, int]) -> np.ndarray:
    from orchestra.policies.learned.chooser import choose_models

    preds = mf.predict(data["texts"], data["tasks"])
    return np.array([col[mf.model_names[choose_models(p["scores"], p["costs"], lam,
                                                      mf.router.cost_scale)[0]]]
                     for p in preds])


def crossing(bandit_r: np.ndarray, mf_r: np.ndarray) -> dict[str, Any]:
    """Where the bandit's reward catches MF's on the same stream."""
    k = np.ones(WINDOW) / WINDOW
    wb = np.convolve(bandit_r, k, mode="valid")
    wm = np.convolve(mf_r, k, mode="valid")
    ahead = wb >= wm
    stays = None
    if ahead[-1]:
        behind = np.flatnonzero(~ahead)
        stays = int((behind[-1] + 1 if len(behind) else 0) + WINDOW)
    first = np.flatnonzero(ahead)
    cb, cm = np.cumsum(bandit_r), np.cumsum(mf_r)
    cum = np.flatnonzero((cb >= cm) & (np.arange(len(cb)) >= WINDOW))
    return {"window": WINDOW,
            "first_window_at_or_above_mf": int(first[0] + WINDOW) if len(first) else None,
            "window_stays_at_or_above_mf_from": stays,
            "cumulative_reaches_mf_at": int(cum[0] + 1) if len(cum) else None,
            "final_window_gap": float(wb[-1] - wm[-1])}


def stream_experiment(data: dict[str, Any], emb: np.ndarray, pool: Any, mf: Any,
                      lams: list[float], seeds: int, alpha: float, dim: int | None,
                      con: Any) -> dict[str, Any]:
    col = {m: j for j, m in enumerate(data["models"])}
    scale = mf.router.cost_scale
    n = len(data["texts"])
    out: dict[str, Any] = {}
    for lam in lams:
        r_all = rewards(data, lam, scale)
        mf_pick = mf_choices(mf, data, lam, col)
        runs = []
        for seed in range(seeds):
            order = np.random.default_rng(1000 + seed).permutation(n)
            pol = bandit_policy(pool, seed=seed, lam=lam, cost_scale=scale, alpha=alpha, dim=dim)
            t0 = time.perf_counter()
            pick = run_stream(pol, order, emb, data, np.full(n, lam), col)
            secs = time.perf_counter() - t0
            rows = np.arange(n)
            rb = r_all[order, pick]
            rm = r_all[order, mf_pick[order]]
            rr = r_all[order].mean(axis=1)
            rs = r_all[order, col[STRONGEST]]
            ro = r_all[order].max(axis=1)
            third = rows >= 2 * n // 3
            test = data["is_test"][order]
            sb, cb = data["scores"][order, pick], data["costs"][order, pick]
            runs.append({
                "seed": seed, "seconds": secs,
                "cumulative": {k: np.cumsum(v)[EVERY - 1::EVERY].tolist() for k, v in
                               (("bandit", rb), ("mf", rm), ("random", rr), ("strongest", rs),
                                ("oracle", ro))},
                "mean_reward": {k: float(v.mean()) for k, v in
                                (("bandit", rb), ("mf", rm), ("random", rr), ("strongest", rs),
                                 ("oracle", ro))},
                "last_third_mean_reward": {"bandit": float(rb[third].mean()),
                                           "mf": float(rm[third].mean())},
                "test_only_mean_reward": {"bandit": float(rb[test].mean()),
                                          "mf": float(rm[test].mean()),
                                          "strongest": float(rs[test].mean()),
                                          "random": float(rr[test].mean())},
                "bandit_accuracy": float(sb.mean()), "bandit_cost_per_query": float(cb.mean()),
                "regret_total": {"bandit": float((ro - rb).sum()), "mf": float((ro - rm).sum()),
                                 "random": float((ro - rr).sum()),
                                 "strongest": float((ro - rs).sum())},
                "crossing": crossing(rb, rm),
                "calls": {m: int((pick == j).sum()) for m, j in col.items()},
                "observations": pol.state_summary()["updates"],
            })
            c = runs[-1]["crossing"]
            con.print(f"  lam={lam:g} seed={seed}: bandit {runs[-1]['mean_reward']['bandit']:.3f}"
                      f" mf {runs[-1]['mean_reward']['mf']:.3f} (last third "
                      f"{runs[-1]['last_third_mean_reward']['bandit']:.3f} vs "
                      f"{runs[-1]['last_third_mean_reward']['mf']:.3f}); window ≥ MF from "
                      f"{c['window_stays_at_or_above_mf_from']}, cumulative at "
                      f"{c['cumulative_reaches_mf_at']}; {secs:.1f}s")
        out[f"{lam:g}"] = {"lam": lam, "runs": runs, "summary": summarise(runs)}
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def ms(vals: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(vals)), "std": float(np.std(vals))}

    keys = runs[0]["mean_reward"].keys()
    return {
        "mean_reward": {k: ms([r["mean_reward"][k] for r in runs]) for k in keys},
        "last_third_mean_reward": {k: ms([r["last_third_mean_reward"][k] for r in runs])
                                   for k in ("bandit", "mf")},
        "test_only_mean_reward": {k: ms([r["test_only_mean_reward"][k] for r in runs])
                                  for k in ("bandit", "mf", "strongest", "random")},
        "regret_total": {k: ms([r["regret_total"][k] for r in runs])
                         for k in ("bandit", "mf", "random", "strongest")},
        "window_stays_at_or_above_mf_from": [r["crossing"]["window_stays_at_or_above_mf_from"]
                                             for r in runs],
        "cumulative_reaches_mf_at": [r["crossing"]["cumulative_reaches_mf_at"] for r in runs],
        "seconds_per_stream": ms([r["seconds"] for r in runs]),
    }


# ---------------------------------------------------------------------- the λ dial


def dial_experiment(data: dict[str, Any], emb: np.ndarray, pool: Any, mf: Any, alpha: float,
                    dim: int | None, con: Any) -> dict[str, Any]:
    from orchestra.policies.learned.chooser import fine_lambda_grid

    col = {m: j for j, m in enumerate(data["models"])}
    scale = mf.router.cost_scale
    rng = np.random.default_rng(7)
    order = rng.permutation(np.flatnonzero(~data["is_test"]))  # train split only
    lams = rng.choice(DIAL_TRAIN_LAMS, size=len(order))
    pol = bandit_policy(pool, seed=0, lam=0.0, cost_scale=scale, alpha=alpha, dim=dim)
    run_stream(pol, order, emb, data, lams, col)
    before = pol.state_summary()
    test_idx = np.flatnonzero(data["is_test"])
    x_test = pol.features.assemble(emb[test_idx], [data["texts"][i] for i in test_idx],
                                   [data["tasks"][i] for i in test_idx])
    pol.alpha = 0.0
    grid = [float(v) for v in fine_lambda_grid()[::4]]
    bandit_pts, mf_pts = [], []
    preds = mf.predict([data["texts"][i] for i in test_idx], [data["tasks"][i] for i in test_idx])
    from orchestra.policies.learned.chooser import choose_models

    for lam in grid:
        pick = np.array([col[pol.choose(x_test[k], data["texts"][i], lam=lam)[0]]
                         for k, i in enumerate(test_idx)])
        bandit_pts.append(_point(data, test_idx, pick, lam))
        mpick = np.array([col[mf.model_names[choose_models(p["scores"], p["costs"], lam,
                                                           scale)[0]]] for p in preds])
        mf_pts.append(_point(data, test_idx, mpick, lam))
    assert pol.state_summary() == before  # the sweep learned nothing: one state, every λ
    singles = {m: {"accuracy": float(data["scores"][test_idx, j].mean()),
                   "cost_per_query": float(data["costs"][test_idx, j].mean())}
               for m, j in col.items()}
    con.print(f"  dial: {len(grid)} λ points from one state learned with λ drawn from "
              f"{DIAL_TRAIN_LAMS}")
    return {"train_lams": DIAL_TRAIN_LAMS, "state_updates": before["updates"],
            "bandit": bandit_pts, "mf": mf_pts, "single_models": singles,
            "note": "state learned online (bandit feedback, cold start) on the train split "
                    "only, λ drawn per query; then greedy (alpha=0) on the test split, which it "
                    "never saw; costs are mean recorded USD per query"}


def _point(data: dict[str, Any], idx: np.ndarray, pick: np.ndarray, lam: float
           ) -> dict[str, float]:
    return {"lam": lam, "accuracy": float(data["scores"][idx, pick].mean()),
            "cost_per_query": float(data["costs"][idx, pick].mean())}


# ---------------------------------------------------------------------- runtime check


def runtime_check(data: dict[str, Any], emb: np.ndarray, mf: Any, n_queries: int, lam: float,
                  alpha: float, dim: int | None, con: Any) -> dict[str, Any]:
    from orchestra import Orchestra
    from orchestra.backends.replay import ReplayBackend, pool_from_outcomes
    from orchestra.policies.bandit.policy import BanditPolicy

    test = data["test"]
    pool = pool_from_outcomes(test, table_name="rb-bandit-test")
    scale = mf.router.cost_scale
    policy = BanditPolicy(pool, lam=lam, alpha=alpha, dim=dim, seed=0, cost_scale=scale)
    orch = Orchestra(pool, policy=policy, backend=ReplayBackend(), store=False)
    rng = np.random.default_rng(11)
    qidx = rng.permutation(test.n_queries)[:n_queries]
    col = {m: j for j, m in enumerate(data["models"])}
    S, C = test.score_matrix(), test.cost_matrix()
    runtime_pick, spent = [], []
    t0 = time.perf_counter()
    for q in qidx:
        res = orch.run(test.query_texts[q], meta={"query_id": test.queries[q],
                                                  "task": test.query_tasks[q]})
        model = res.steps[0]["scores"]["chosen"][0]
        orch.feedback(res.trace_id, score=float(np.nan_to_num(S[q, col[model]])))
        runtime_pick.append(col[model])
        spent.append(res.cost_usd)
    secs = time.perf_counter() - t0
    # The same queries, same order, through the offline loop.
    offline = BanditPolicy(pool, lam=lam, alpha=alpha, dim=dim, seed=0, cost_scale=scale)
    n_train = data["train"].n_queries
    off_pick = run_stream(offline, n_train + qidx, emb, data, np.full(len(qidx), lam), col)
    rp = np.array(runtime_pick)
    r = np.nan_to_num(S[qidx, rp]) - lam * np.nan_to_num(C[qidx, rp]) / scale
    half = len(r) // 2
    recorded = np.nan_to_num(C[qidx, rp])
    out = {"queries": len(qidx), "lam": lam, "seconds": secs,
           "same_choice_share": float((rp == off_pick).mean()),
           "mean_reward_first_half": float(r[:half].mean()),
           "mean_reward_second_half": float(r[half:].mean()),
           "mf_mean_reward_same_queries": float(
               (rewards(data, lam, scale)[n_train + qidx, mf_choices(mf, data, lam, col)[
                   n_train + qidx]]).mean()),
           "charged_equals_recorded": bool(np.allclose(spent, recorded, rtol=1e-9, atol=1e-15)),
           "observations": policy.state_summary()["updates"]}
    con.print(f"  runtime: {len(qidx)} runs in {secs:.1f}s; same choice as offline "
              f"{out['same_choice_share']:.1%}; reward {out['mean_reward_first_half']:.3f} → "
              f"{out['mean_reward_second_half']:.3f}")
    return out


# ---------------------------------------------------------------------- latency


def latency(data: dict[str, Any], emb: np.ndarray, pool: Any, scale: float, alpha: float,
            dim: int | None, n: int) -> dict[str, Any]:
    from orchestra.embed import get_embedder
    from orchestra.policies.bandit.policy import BanditPolicy

    pol = BanditPolicy(pool, lam=0.5, alpha=alpha, dim=dim, seed=0, cost_scale=scale)
    # A learner that has seen the stream: the same cost per decision as a cold one, but real.
    order = np.random.default_rng(3).permutation(len(data["texts"]))
    col = {m: j for j, m in enumerate(data["models"])}
    run_stream(pol, order[:1000], emb, data, np.full(1000, 0.5), col)
    idx = order[1000:1000 + n]
    x = pol.features.assemble(emb[idx], [data["texts"][i] for i in idx],
                              [data["tasks"][i] for i in idx])
    excl = []
    for k, i in enumerate(idx):
        t0 = time.perf_counter()
        pol.choose(x[k], data["texts"][i], lam=0.5, task=data["tasks"][i])
        excl.append(time.perf_counter() - t0)
    uncached = BanditPolicy(pool, lam=0.5, alpha=alpha, dim=dim, seed=0, cost_scale=scale,
                            embedder=get_embedder("minilm", cache=False))
    uncached.learner = pol.learner
    uncached.featurize("warm up the model", None)
    incl = []
    for i in idx:
        t0 = time.perf_counter()
        xi = uncached.featurize(data["texts"][i], data["tasks"][i])
        uncached.choose(xi, data["texts"][i], lam=0.5, task=data["tasks"][i])
        incl.append(time.perf_counter() - t0)

    def pct(v: list[float]) -> dict[str, float]:
        ms = np.array(v) * 1e3
        return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                "n": len(v)}

    return {"embedding_excluded": pct(excl), "embedding_included_minilm_uncached": pct(incl),
            "features": pol.features.width, "models": len(pol.arms)}


# ---------------------------------------------------------------------- plot


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam_keys = list(res["stream"])
    fig, axes = plt.subplots(2, len(lam_keys) + 1, figsize=(5 * (len(lam_keys) + 1), 8.5))
    colors = {"bandit": "C0", "mf": "C1", "random": "C2", "strongest": "C3"}
    for c, key in enumerate(lam_keys):
        runs = res["stream"][key]["runs"]
        for k in ("bandit", "mf", "random", "strongest"):
            cum = np.array([r["cumulative"][k] for r in runs])
            oracle = np.array([r["cumulative"]["oracle"] for r in runs])
            t = np.arange(1, cum.shape[1] + 1) * EVERY
            for row, val in ((0, cum), (1, oracle - cum)):
                m = val.mean(axis=0)
                axes[row, c].plot(t, m, color=colors[k], label=k)
                if k == "bandit" and len(runs) > 1:
                    axes[row, c].fill_between(t, val.min(axis=0), val.max(axis=0),
                                              color=colors[k], alpha=0.2)
        cross = res["stream"][key]["summary"]["window_stays_at_or_above_mf_from"]
        title = f"λ={key}: window ≥ MF from {cross}"
        axes[0, c].set_title(title, fontsize=9)
        axes[0, c].set_ylabel("cumulative reward")
        axes[1, c].set_ylabel("cumulative regret vs oracle")
        axes[1, c].set_xlabel("queries (train+test, shuffled)")
        axes[0, c].legend(fontsize=8)
    ax = axes[0, -1]
    dial = res["dial"]
    for k, style in (("bandit", "o-"), ("mf", "s--")):
        pts = dial[k]
        ax.plot([p["cost_per_query"] for p in pts], [p["accuracy"] for p in pts], style,
                color=colors[k], label=f"{k} λ sweep", ms=4)
    for m, v in dial["single_models"].items():
        ax.scatter(v["cost_per_query"], v["accuracy"], color="grey", s=12)
        ax.annotate(m.split("/")[-1][:14], (v["cost_per_query"], v["accuracy"]), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (USD, test split)")
    ax.set_ylabel("accuracy")
    ax.set_title("one bandit state, λ dialled (test split)", fontsize=9)
    ax.legend(fontsize=8)
    axes[1, -1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--lams", type=float, nargs="+", default=[0.0, 0.2, 1.0])
    ap.add_argument("--alpha", type=float, default=0.25)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--runtime-queries", type=int, default=300)
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bandit_stream.json")
    args = ap.parse_args()
    from rich.console import Console

    from orchestra.backends.replay import pool_from_outcomes
    from orchestra.outcomes.loaders import find_data_dir

    con = Console()
    if find_data_dir("routerbench") is None:
        con.print("RouterBench data not found (../shared/data/routerbench or "
                  "$ORCHESTRA_SHARED_DATA): nothing to benchmark")
        return
    load0 = os.getloadavg()
    t_all = time.perf_counter()
    data = load_data()
    pool = pool_from_outcomes(data["test"], table_name="rb-bandit-prices")
    mf = mf_policy(pool, con)
    con.print(f"RouterBench: {len(data['texts'])} queries × {len(data['models'])} models; "
              f"MF cost_scale ${mf.router.cost_scale:.4g}")
    probe = bandit_policy(pool, seed=0, lam=0.0, cost_scale=1.0, alpha=args.alpha, dim=args.dim)
    from orchestra.policies.learned.features import embed_queries

    t0 = time.perf_counter()
    emb = embed_queries(probe.features.embedder, data["texts"]).astype(np.float64)
    embed_s = time.perf_counter() - t0
    res: dict[str, Any] = {
        "config": {"seeds": args.seeds, "lams": args.lams, "alpha": args.alpha, "dim": args.dim,
                   "embedder": probe.features.embedder.name, "features": probe.features.width,
                   "cost_scale_usd": mf.router.cost_scale, "strongest": STRONGEST,
                   "window": WINDOW, "queries": len(data["texts"]),
                   "train_queries": int((~data["is_test"]).sum()),
                   "test_queries": int(data["is_test"].sum()),
                   "mf_artifact": str(mf.router.path),
                   "mode": "offline: BanditPolicy.choose/learn called directly with recorded "
                           "outcomes and costs (no runtime); runtime check separate"},
        "embedding_seconds": embed_s,
    }
    con.print("[bold]stream[/bold]")
    res["stream"] = stream_experiment(data, emb, pool, mf, args.lams, args.seeds, args.alpha,
                                      args.dim, con)
    con.print("[bold]λ dial[/bold]")
    res["dial"] = dial_experiment(data, emb, pool, mf, args.alpha, args.dim, con)
    if args.runtime_queries:
        con.print("[bold]runtime[/bold]")
        res["runtime"] = runtime_check(data, emb, mf, args.runtime_queries, args.lams[-1],
                                       args.alpha, args.dim, con)
    con.print("[bold]latency[/bold]")
    res["latency"] = latency(data, emb, pool, mf.router.cost_scale, args.alpha, args.dim,
                             args.latency_queries)
    con.print(f"  {res['latency']}")
    res["machine"] = {"platform": platform.platform(), "python": sys.version.split()[0],
                      "cpus": os.cpu_count(), "load_average_at_start": list(load0),
                      "load_average_at_end": list(os.getloadavg()),
                      "numpy": np.__version__}
    res["total_seconds"] = time.perf_counter() - t_all
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    plot(res, args.out.with_suffix(".png"))
    con.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

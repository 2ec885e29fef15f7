"""Decision latency of the GNN routing policy on CPU, side by side with the kNN router.

Run from the repository root (train the artifacts first)::

    orchestra train gnn --data routerbench       # writes <data home>/artifacts/routerbench-gnn
    orchestra train knn --data routerbench       # for the comparison (--knn '' skips it)
    .venv/bin/python benchmarks/gnn_decision_latency.py [--gnn DIR] [--knn DIR] \\
        [--queries 300] [--threads 1]

What is timed: ``policy.decide(view)`` for the first round of a run over RouterBench's 11
models, one query at a time, on test queries never seen before (no memo hits):

* **embedding excluded**: the embedder is a lookup of vectors computed beforehand, so the time
  is the policy's own work (GNN: nearest training queries, the layers for the new query node,
  both heads over every (agent, model), the chooser; kNN: its vote and cost model);
* **embedding included**: the real MiniLM embedder without its disk cache (every query is new
  to it), as for a live query. Long prompts are embedded twice (whole text and its tail).

Each policy gets warm-up decisions first; queries alternate between the policies so drift hits
both alike. torch uses ``--threads`` CPU threads. Results go to
``benchmarks/results/gnn_decision_latency.json``; a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# Named data ("routerbench"): the shared folder beside the checkout unless the caller set one.
os.environ.setdefault("ORCHESTRA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
OUT = REPO / "benchmarks" / "results" / "gnn_decision_latency.json"
TARGET_P99_MS = 10.0


class LookupEmbedder:
    """Serves precomputed vectors: an embedder whose cost is a dict lookup (texts it does not
    hold, such as agent descriptions at load time, go to the inner embedder)."""

    def __init__(self, inner: Any, texts: list[str]) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        uniq = list(dict.fromkeys(texts))
        vecs = inner.embed(uniq)
        self.table = {t: vecs[i] for i, t in enumerate(uniq)}

    def embed(self, texts: list[str]) -> np.ndarray:
        if all(t in self.table for t in texts):
            return np.stack([self.table[t] for t in texts]).astype(np.float32)
        return np.asarray(self.inner.embed(list(texts)), dtype=np.float32)


def percentiles(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000.0
    return {"n": len(xs), "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "max_ms": float(a.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gnn", default="routerbench-gnn",
                    help="GNN artifact directory or name under <data home>/artifacts")
    ap.add_argument("--knn", default="routerbench-knn",
                    help="kNN artifact directory or name ('' to skip the comparison)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--included", type=int, default=100, help="queries timed with live embedding")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from orchestra.budget import BudgetLeft
    from orchestra.embed import MiniLMEmbedder, get_embedder
    from orchestra.outcomes import load_outcomes
    from orchestra.policies.base import RunView
    from orchestra.policies.gnn.graph import KNOWN_CONTEXT_WINDOWS
    from orchestra.policies.gnn.policy import GNNPolicy
    from orchestra.policies.learned.features import tail_text
    from orchestra.policies.learned.locations import resolve_artifact
    from orchestra.spec import AgentSpec, ModelSpec, Pool

    args.gnn = str(resolve_artifact(args.gnn, "gnn"))
    args.knn = str(resolve_artifact(args.knn, "knn")) if args.knn else None
    con = Console()
    test = load_outcomes("routerbench:test")
    pool = Pool(
        name="routerbench",
        models=tuple(ModelSpec(name=m, id=f"replay/{m}", input_price=i.input_price,
                               output_price=i.output_price, description=i.description,
                               context_window=KNOWN_CONTEXT_WINDOWS.get(m, 8192))
                     for m, i in ((m, test.models_info[m]) for m in test.models)),
        agents=(AgentSpec(name="assistant", description="General assistant that answers the question."),),
        refiner={"kind": "last"},
    )
    rng = np.random.default_rng(0)
    order = rng.permutation(test.n_queries)
    n_total = min(test.n_queries, args.queries + args.warmup)
    idx = order[:n_total]
    texts = [test.query_texts[i] for i in idx]
    tasks = [test.query_tasks[i] for i in idx]
    cached = get_embedder("minilm")
    all_texts = texts + [tail_text(t) for t in texts]
    lookup = LookupEmbedder(cached, all_texts)
    live = MiniLMEmbedder(progress=False)
    live.embed(["warm up the model"])

    left = BudgetLeft(usd=1.0, tokens=None, calls=None, rounds=None, seconds=None, spent_usd=0.0,
                      spent_tokens=0, spent_calls=0, rounds_done=0)

    def view(q: str, task: str) -> RunView:
        return RunView(query=q, history=(), rounds=(), notes=(), budget_left=left, pool=pool,
                       round=0, meta={"task": task})

    t0 = time.perf_counter()
    policies: dict[str, dict[str, Any]] = {
        "gnn": {"lookup": GNNPolicy(pool, path=args.gnn, embedder=lookup)},
    }
    load_s = {"gnn": time.perf_counter() - t0}
    policies["gnn"]["live"] = GNNPolicy(pool, path=args.gnn, embedder=live)
    if args.knn:
        from orchestra.policies.learned import KNNPolicy

        t0 = time.perf_counter()
        policies["knn"] = {"lookup": KNNPolicy(pool, path=args.knn, embedder=lookup)}
        load_s["knn"] = time.perf_counter() - t0
        policies["knn"]["live"] = KNNPolicy(pool, path=args.knn, embedder=live)

    times: dict[str, dict[str, list[float]]] = {k: {"excluded": [], "included": []} for k in policies}
    warm, timed = range(args.warmup), range(args.warmup, n_total)
    for i in warm:  # warm-up: first calls allocate and load
        for p in policies.values():
            p["lookup"].decide(view(texts[i], tasks[i]))
    for i in timed:
        for name, p in policies.items():
            v = view(texts[i], tasks[i])
            t = time.perf_counter()
            p["lookup"].decide(v)
            times[name]["excluded"].append(time.perf_counter() - t)
    for i in list(timed)[: args.included]:
        for name, p in policies.items():
            v = view(texts[i] + " ", tasks[i])  # a text no memo has seen
            t = time.perf_counter()
            p["live"].decide(v)
            times[name]["included"].append(time.perf_counter() - t)

    result = {
        "benchmark": "gnn_decision_latency",
        "what": "policy.decide() for round 0 over RouterBench's 11 models, one query at a time",
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                    "cpu_count": os.cpu_count(), "torch_threads": args.threads,
                    "torch": torch.__version__},
        "pool_models": len(pool.models),
        "gnn_artifact": str(args.gnn), "knn_artifact": args.knn,
        "load_seconds": load_s,
        "results": {name: {k: percentiles(v) for k, v in t.items() if v} for name, t in times.items()},
        "target_p99_ms": TARGET_P99_MS,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "loadavg": os.getloadavg(),
    }
    res = result["results"]
    result["meets_target"] = {k: v["p99_ms"] < TARGET_P99_MS for k, v in res["gnn"].items()}
    if "knn" in res:
        result["gnn_over_knn_p50"] = {k: res["gnn"][k]["p50_ms"] / res["knn"][k]["p50_ms"]
                                      for k in res["gnn"] if k in res["knn"]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")

    table = Table(title=f"Decision latency, {len(pool.models)} models, CPU, {args.threads} torch thread(s)")
    for col in ("policy", "embedding", "n", "p50 ms", "p90 ms", "p99 ms", "mean ms"):
        table.add_column(col, justify="right" if col not in ("policy", "embedding") else "left")
    for name, r in result["results"].items():
        for k, s in r.items():
            table.add_row(name, k, str(s["n"]), f"{s['p50_ms']:.2f}", f"{s['p90_ms']:.2f}",
                          f"{s['p99_ms']:.2f}", f"{s['mean_ms']:.2f}")
    con.print(table)
    con.print(f"load: {', '.join(f'{k} {v:.1f}s' for k, v in load_s.items())}; wrote {out}")
    med = statistics.median(times["gnn"]["excluded"]) * 1000
    con.print(f"GNN p50 without embedding: {med:.2f} ms; p99 under {TARGET_P99_MS:g} ms: "
              + ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in result["meets_target"].items()))
    if "gnn_over_knn_p50" in result:
        con.print("GNN / kNN p50: " + ", ".join(f"{k} {v:.2f}x"
                                                 for k, v in result["gnn_over_knn_p50"].items()))


if __name__ == "__main__":
    main()

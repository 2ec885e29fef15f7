"""Train a router on your own pool, then evaluate it live and by replay, side by side (issue 15).

The README's "Train a router on your own models" flow, with the project's commands, on the
embedded pool (SmolLM2-135M-Instruct and Gemma-3-270M through llama.cpp):

1. a recorded outcome table of the pool (``orchestra record``; pass one with ``--table``, or
   let this record ``--questions`` NQ + as many GSM8K questions);
2. ``orchestra data split`` (``--test-fraction``, seed 0);
3. ``orchestra train mf`` and ``orchestra train knn`` on the train part;
4. ``orchestra eval --data test.jsonl`` (replay of the recorded answers) and
   ``orchestra eval --pool local --data test.jsonl`` (live: the models answer again, each policy
   runs for real, graded against the gold answers), the same policies;
5. both reports compared point by point (every λ of every policy): scores, costs, and how
   many recorded answers came out differently when asked again.

Writes ``benchmarks/results/own_pool_live_vs_replay.json`` (and the two reports' plots beside
it). Wall times are per phase on this machine (2 shared cores): compare them only within a run.

Run::

    ORCHESTRA_SHARED_DATA=../shared/data python benchmarks/own_pool_live_vs_replay.py \\
        --table local600.jsonl          # or --questions 300 to record first
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "own_pool_live_vs_replay.json"
POLICIES = ["mf", "knn", "cheapest", "strongest"]


def _cli(work: Path, env: dict[str, str], *args: str) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "orchestra.cli", *args]
    print("$ orchestra " + " ".join(args), flush=True)
    subprocess.run(cmd, cwd=work, env=env, check=True)
    return time.perf_counter() - t0


def _points(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {p["spec"]: [{"lam": x["lam"], "score": x["mean_score"], "cost": x["total_cost"]}
                        for x in p["points"]] for p in report["policies"]}


def _compare(replay: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    a, b = _points(replay), _points(live)
    out: dict[str, Any] = {}
    for spec in a:
        pa, pb = a[spec], b.get(spec, [])
        same_scores = [x["score"] for x in pa] == [y["score"] for y in pb]
        rel = max((abs(x["cost"] - y["cost"]) / x["cost"] for x, y in zip(pa, pb, strict=True)
                   if x["cost"]), default=0.0) if len(pa) == len(pb) else None
        aiq = {p["spec"]: p["aiq"] for p in replay["policies"]}[spec], \
            {p["spec"]: p["aiq"] for p in live["policies"]}.get(spec)
        out[spec] = {"points": len(pa), "scores_identical": same_scores,
                     "max_relative_cost_difference": rel, "aiq_replay": aiq[0],
                     "aiq_live": aiq[1]}
    return out


def _answers_that_changed(test: Path, singles: Path) -> dict[str, Any]:
    from orchestra.outcomes.table import OutcomeTable

    a = {(r["query_id"], r["model"]): r for r in OutcomeTable.read(test).to_records()}
    b = {(r["query_id"], r["model"]): r for r in OutcomeTable.read(singles).to_records()}
    changed = [k for k in a if k in b and a[k].get("response") != b[k].get("response")]
    return {"answers": len(a), "changed": len(changed),
            "changed_score": sum(a[k]["score"] != b[k]["score"] for k in changed),
            "examples": [{"query_id": q, "model": m, "recorded": a[(q, m)].get("response"),
                          "live": b[(q, m)].get("response")} for q, m in changed[:3]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, help="a recorded outcome table of the local pool")
    ap.add_argument("--questions", type=int, default=40,
                    help="without --table: record this many NQ and as many GSM8K questions")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="orchestra-own-pool-"))
    env = {**os.environ, "ORCHESTRA_HOME": str(work / "home")}
    phases: dict[str, float] = {}
    if args.table is None:
        phases["record"] = _cli(work, env, "record", "--pool", "local", "--data", "nq",
                                "--data", "gsm8k", "--limit", str(args.questions), "--out",
                                "table.jsonl", "--quiet")
        table = work / "table.jsonl"
    else:
        table = args.table.resolve()
    phases["split"] = _cli(work, env, "data", "split", str(table), "--test-fraction",
                           str(args.test_fraction), "--seed", "0", "--out-train", "train.jsonl",
                           "--out-test", "test.jsonl")
    for kind in ("mf", "knn"):
        phases[f"train_{kind}"] = _cli(work, env, "train", kind, "--data", "train.jsonl",
                                       "--out", kind)
    pol = [x for p in POLICIES for x in ("--policy", f"{p},path={work / p}"
                                         if p in ("mf", "knn") else p)]
    plots = args.out.with_suffix("")
    phases["eval_replay"] = _cli(work, env, "eval", "--data", "test.jsonl", *pol, "--quiet",
                                 "--priors", "none", "--json", "replay.json", "--plot",
                                 f"{plots}_replay.png")
    phases["eval_live"] = _cli(work, env, "eval", "--pool", "local", "--data", "test.jsonl",
                               *pol, "--quiet", "--live-dir", "live", "--json", "live.json",
                               "--plot", f"{plots}_live.png")
    replay = json.loads((work / "replay.json").read_text())
    live = json.loads((work / "live.json").read_text())
    result = {
        "benchmark": "own_pool_live_vs_replay",
        "machine": "2 shared vCPUs, CPU only, llama.cpp portable build",
        "table": str(table), "test_fraction": args.test_fraction,
        "test_questions": replay["data"]["n_queries"], "policies": POLICIES,
        "phase_seconds": {k: round(v, 1) for k, v in phases.items()},
        "live_over_replay_wall": round(phases["eval_live"] / phases["eval_replay"], 1),
        "live": live["settings"]["live"],
        "comparison": _compare(replay, live),
        "references_asked_again": _answers_that_changed(work / "test.jsonl",
                                                         work / "live" / "singles.jsonl"),
        "single_models": {side: {m: {"score": s["quality"], "cost": s["cost"]}
                                 for m, s in rep["single_models"].items()}
                          for side, rep in (("replay", replay), ("live", live))},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("phase_seconds", "comparison",
                                             "references_asked_again")}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

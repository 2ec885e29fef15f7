"""The RL-trained router (``rl``) against its untrained base, episode by episode, on RouterBench.

Run from the repository root after ``orchestra train rl`` (needs the shared data:
``../shared/data``, or set ``$ORCHESTRA_SHARED_DATA``)::

    .venv/bin/python benchmarks/rl_routerbench.py --limit 24 --tasks winogrande,mbpp

For the trained artifact (default ``routerbench-rl``) and for the untrained SmolLM2 base, the
same seeded subset of *test* queries runs as episodes through the serving runtime (greedy
decisions, training mode: a malformed decision ends the episode with reward −1), at each λ of
``--lams``: mean reward, format-valid rate, grade, cost, calls, and the decision latency
(p50 / p99, each generate call timed, batched across the concurrent episodes). The training
run's reward curve (``reward_curve.json`` / ``.png`` in the artifact) is copied beside.

Results: ``benchmarks/results/rl_routerbench.json``, ``rl_reward_curve.json`` and ``.png``.

``--eval -- <orchestra eval arguments>`` instead runs ``orchestra eval`` in this process with
every rl decision timed (the generator's ``generate`` wrapped, nothing else changed): per-step
latency as the run sees it (queueing for a batch included) and each batched ``generate`` call's
own time, batch sizes and the policy's own prompt / generated tokens (not charged by the runtime;
the ledger holds only pool calls). Written to ``--latency-json``::

    .venv/bin/python benchmarks/rl_routerbench.py --eval --latency-json \
        benchmarks/results/rl_eval_latency.json -- --data routerbench --policy rl --limit 20 ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _shared() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if "ORCHESTRA_SHARED_DATA" not in os.environ and shared.is_dir():
        os.environ["ORCHESTRA_SHARED_DATA"] = str(shared)


def measure(source: Path, table: Any, queries: list[Any], lams: list[float],
            max_new_tokens: int) -> dict[str, Any]:
    from orchestra.policies.rl.hf import HFGenerator
    from orchestra.training.rl_episodes import EpisodeRunner

    gen = HFGenerator.load(source, temperature=0.0, batch_size=16, max_wait_s=0.05)
    runner = EpisodeRunner(table, gen, max_new_tokens=max_new_tokens)
    by_id = {q.query_id: q for q in runner.queries}
    out: dict[str, Any] = {"source": str(source), "points": []}
    for lam in lams:
        runner.latencies_s.clear()
        t0 = time.perf_counter()

        async def run_all(lam: float = lam) -> list[Any]:
            return list(await asyncio.gather(*(runner.episode(by_id[q.query_id], lam)
                                               for q in queries)))

        eps = asyncio.run(run_all())
        lat = np.array(runner.latencies_s or [0.0])
        out["points"].append({
            "lam": lam, "episodes": len(eps), "wall_s": round(time.perf_counter() - t0, 1),
            "reward": float(np.mean([e.reward.reward for e in eps])),
            "format_valid": float(np.mean([e.reward.format_error is None for e in eps])),
            "grade": float(np.mean([e.reward.grade for e in eps])),
            "cost_usd_per_query": float(np.mean([e.reward.cost_usd for e in eps])),
            "calls_per_query": float(np.mean([len(e.models) for e in eps])),
            "decisions": len(runner.latencies_s),
            "decision_p50_s": float(np.percentile(lat, 50)),
            "decision_p99_s": float(np.percentile(lat, 99)),
            "models_called": dict(sorted({m: sum(m in e.models for e in eps)
                                          for e in eps for m in e.models}.items())),
            "first_decisions": [e.texts[0][:100] if e.texts else "" for e in eps[:5]],
        })
        p = out["points"][-1]
        print(f"{source.name:>40} λ={lam:<4} reward {p['reward']:+.3f} format-valid "
              f"{p['format_valid']:.2f} grade {p['grade']:.3f} cost ${p['cost_usd_per_query']:.6f}"
              f" p50 {p['decision_p50_s']:.2f}s p99 {p['decision_p99_s']:.2f}s", flush=True)
    return out


def eval_timed(out: Path, eval_args: list[str]) -> None:
    """``orchestra eval`` with every rl decision timed (see the module docstring)."""
    import sys

    from orchestra.policies.rl import cached, hf

    steps: list[dict[str, Any]] = []
    batches: list[dict[str, Any]] = []
    orig_generate, orig_batch = hf.HFGenerator.generate, hf.HFGenerator._generate_batch
    orig_cached, orig_cached_work = (cached.CachedHFGenerator.generate,
                                     cached.CachedHFGenerator._generate)

    async def generate(self: Any, prompt_ids: Any, *, max_new_tokens: int, stop: Any) -> list[int]:
        t0 = time.perf_counter()
        ids = await orig_generate(self, prompt_ids, max_new_tokens=max_new_tokens, stop=stop)
        steps.append({"s": time.perf_counter() - t0, "prompt_tokens": len(prompt_ids),
                      "new_tokens": len(ids)})
        return ids

    async def generate_cached(self: Any, prompt_ids: Any, *, max_new_tokens: int,
                              stop: Any) -> list[int]:
        t0 = time.perf_counter()
        ids = await orig_cached(self, prompt_ids, max_new_tokens=max_new_tokens, stop=stop)
        steps.append({"s": time.perf_counter() - t0, "prompt_tokens": len(prompt_ids),
                      "new_tokens": len(ids),
                      "prefilled": self.prefilled[-1] if self.prefilled else None})
        return ids

    def cached_work(self: Any, ids: Any, max_new_tokens: int, stop: Any) -> list[int]:
        # One decision at a time: the worker's time is its compute (a batch of one); the step
        # time above also holds the wait for the decisions ahead of it.
        t0 = time.perf_counter()
        out = orig_cached_work(self, ids, max_new_tokens, stop)
        batches.append({"s": time.perf_counter() - t0, "size": 1, "width": len(ids)})
        return out

    def generate_batch(self: Any, batch: Any) -> Any:
        t0 = time.perf_counter()
        res = orig_batch(self, batch)
        batches.append({"s": time.perf_counter() - t0, "size": len(batch),
                        "width": max(len(r.ids) for r in batch)})
        return res

    hf.HFGenerator.generate = generate  # type: ignore[method-assign]
    hf.HFGenerator._generate_batch = generate_batch  # type: ignore[method-assign]
    cached.CachedHFGenerator.generate = generate_cached  # type: ignore[method-assign]
    cached.CachedHFGenerator._generate = cached_work  # type: ignore[method-assign]
    from orchestra.cli import main as cli_main

    t0 = time.perf_counter()
    rc: Any = 0
    try:
        cli_main(["eval", *eval_args])
    except SystemExit as e:
        rc = e.code
    finally:
        def pct(xs: list[float]) -> dict[str, float | None]:
            a = np.array(xs) if xs else None
            return {"p50": None if a is None else float(np.percentile(a, 50)),
                    "p99": None if a is None else float(np.percentile(a, 99)),
                    "mean": None if a is None else float(a.mean())}

        report = {
            "what": "orchestra eval with every rl decision timed: step = one adecide's "
                    "generate as the run sees it (waiting for a batch included); batch = one "
                    "batched model.generate call",
            "command": "orchestra eval " + " ".join(eval_args), "exit": rc,
            "wall_s": round(time.perf_counter() - t0, 1),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
                       "(shared with other work)",
            "decisions": len(steps), "step_s": pct([x["s"] for x in steps]),
            "batches": len(batches), "batch_s": pct([b["s"] for b in batches]),
            "batch_size_mean": float(np.mean([b["size"] for b in batches])) if batches else None,
            "per_decision_compute_s": (sum(b["s"] for b in batches) / len(steps)) if steps else None,
            "prompt_tokens": pct([float(x["prompt_tokens"]) for x in steps]),
            "new_tokens": pct([float(x["new_tokens"]) for x in steps]),
            "prompt_tokens_total": sum(x["prompt_tokens"] for x in steps),
            "prefilled_tokens_total": sum(x.get("prefilled") or 0 for x in steps),
            "new_tokens_total": sum(x["new_tokens"] for x in steps),
            "steps": steps, "batch_log": batches,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        print(f"rl decisions {len(steps)}: step p50 {report['step_s']['p50']} s, p99 "
              f"{report['step_s']['p99']} s; batch p50 {report['batch_s']['p50']} s; "
              f"wrote {out}", file=sys.stderr)
    if rc:
        sys.exit(rc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", action="store_true",
                    help="run `orchestra eval ARGS` (after --) with every rl decision timed")
    ap.add_argument("--latency-json", default=str(RESULTS / "rl_eval_latency.json"))
    ap.add_argument("--artifact", default="routerbench-rl")
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--tasks", default="winogrande,mbpp")
    ap.add_argument("--lams", default="0,0.3")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-base", action="store_true", help="skip the untrained base")
    import sys

    argv = sys.argv[1:]
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    args = ap.parse_args(argv)
    _shared()
    if args.eval:
        eval_timed(Path(args.latency_json), rest)
        return
    import torch

    from orchestra.outcomes import load_outcomes
    from orchestra.policies.learned.locations import resolve_artifact
    from orchestra.training.rl_base import base_model_dir

    torch.set_num_threads(os.cpu_count() or 1)
    table = load_outcomes("routerbench", split="test")
    tasks = set(args.tasks.split(",")) if args.tasks else None
    pool = [i for i, t in enumerate(table.query_tasks) if tasks is None or t in tasks]
    picked = sorted(random.Random(args.seed).sample(pool, min(args.limit, len(pool))))
    from orchestra.eval.grading import Grader

    queries = [Grader(table).queries[i] for i in picked]
    lams = [float(x) for x in args.lams.split(",")]
    art = resolve_artifact(args.artifact, "rl")
    report: dict[str, Any] = {
        "what": "rl policy episodes on RouterBench test (greedy; a format error ends the "
                "episode with reward -1), trained artifact vs untrained base",
        "queries": len(queries), "tasks": sorted(tasks) if tasks else "all", "seed": args.seed,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
                   "(shared with other work)",
        "training": json.loads((art / "rl.json").read_text()),
        "trained": measure(art, table, queries, lams, args.max_new_tokens),
    }
    if not args.no_base:
        report["untrained_base"] = measure(Path(base_model_dir(None)), table, queries, lams,
                                           args.max_new_tokens)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rl_routerbench.json").write_text(json.dumps(report, indent=2))
    for suffix in (".json", ".png"):
        src = art / f"reward_curve{suffix}"
        if src.is_file():
            shutil.copyfile(src, RESULTS / f"rl_reward_curve{suffix}")
    print(f"wrote {RESULTS / 'rl_routerbench.json'}")


if __name__ == "__main__":
    main()

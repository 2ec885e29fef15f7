"""The ``rl`` policy's decisions with and without key/value-cache re-use, on the same queries.

Each decision of the ``rl`` policy feeds the run's whole transcript to its LM. The baseline,
:class:`~orchestra.policies.rl.hf.HFGenerator` (``batch_size=1``), prefills all of it again each
decision. :class:`~orchestra.policies.rl.cached.CachedHFGenerator` keeps the key/value caches
of the token sequences it has seen and prefills only what is new (with ``--warm``, the system
prompt is prefilled once before the first run, as a server would at start-up). Both are greedy,
so they should make the very same decisions; the benchmark checks that.

Both generators run the same seeded sample of RouterBench *test* queries as episodes of the
trained artifact through the serving runtime on the replay pool
(:class:`~orchestra.training.rl_episodes.EpisodeRunner`, the artifact's own settings from its
``rl.json``), baseline first, in one process. Episodes run **one after another** (no
concurrency), so the baseline gets no batching that the cached generator lacks. Per generator:
wall time of the episodes, each decision's latency (each ``generate`` call timed), prompt tokens
per decision, and for the cached one the tokens it prefilled per decision and its cache hits.
The ratios are baseline / cached (above 1: the cache is faster or prefills less). Absolute times
mean little on a shared machine; the ratios are the result.

Run from the repository root after ``orchestra train rl`` (needs the shared data:
``../shared/data``, or set ``$ORCHESTRA_SHARED_DATA``)::

    .venv/bin/python benchmarks/rl_decision_cache.py --limit 40

Options: ``--artifact`` (``routerbench-rl``), ``--limit`` (40), ``--lam`` (the artifact's
``default_lam``), ``--seed`` (0), ``--warm/--no-warm`` (warm), ``--out``.
Results: ``benchmarks/results/rl_decision_cache.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _shared() -> None:
    """Point ``$ORCHESTRA_SHARED_DATA`` at ``../shared/data`` when it is not set and exists."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if "ORCHESTRA_SHARED_DATA" not in os.environ and shared.is_dir():
        os.environ["ORCHESTRA_SHARED_DATA"] = str(shared)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in ("torch", "transformers", "orchestra"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


class CountingGenerator:
    """Delegates to a generator and records each call's prompt and generated token counts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.prompt_tokens: list[int] = []
        self.new_tokens: list[int] = []

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    async def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int,
                       stop: Sequence[str]) -> list[int]:
        ids = await self.inner.generate(prompt_ids, max_new_tokens=max_new_tokens, stop=stop)
        self.prompt_tokens.append(len(prompt_ids))
        self.new_tokens.append(len(ids))
        return ids


def _first_segment(runner: Any, tok: Any, lam: float, query: str) -> list[int]:
    """The token ids of a run's first segment, as :meth:`RLDecider._begin
    <orchestra.policies.rl.policy.RLDecider._begin>` builds them: the system prompt and the
    question, tokenised as one text. The budget is what a run of this runner sees at its first
    decision (nothing spent yet: the replay pool's default budget has no USD limit, so the
    prompt says ``Budget left: unlimited.``)."""
    from orchestra.budget import Ledger
    from orchestra.policies.rl.format import render_system

    s = runner.settings
    system = render_system(runner.pool, lam, s["max_turns"], Ledger(runner.orch.budget).left(),
                           sub_questions=False, estimates=s.get("hints") is not None)
    qc = s.get("max_query_chars")
    if qc is not None and len(query) > qc:
        query = query[: qc - 1] + "…"
    return list(tok.encode(f"{system}\n\nQuestion: {query}\n", add_special_tokens=False))


def warm_prefix(runner: Any, tok: Any, lam: float) -> list[int]:
    """What a server would warm: the tokens every run's first segment starts with. The system
    prompt and the question are tokenised as one text, so the system prompt's own tokens need
    not be a prefix of it; instead, the common prefix of two queries' first segments (the first
    query of the table and the first one that starts with another character, so the two share
    no first word)."""
    from orchestra.policies.rl.cached import common_prefix

    qs = runner.queries
    a = qs[0].text
    b = next((q.text for q in qs[1:] if q.text[:1] != a[:1]), None)
    if b is None:  # every query starts alike: a made-up second one
        b = "0" if a[:1] != "0" else "1"
    ia, ib = _first_segment(runner, tok, lam, a), _first_segment(runner, tok, lam, b)
    return ia[: common_prefix(ia, ib)]


def _stats(xs: Sequence[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p90": None, "mean": None, "max": None}
    a = np.asarray(xs, dtype=float)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "mean": float(a.mean()), "max": float(a.max())}


def measure(kind: str, art: Path, table: Any, indices: list[int], lam: float,
            settings: dict[str, Any], warm: bool) -> tuple[dict[str, Any], list[Any]]:
    """Run the queries at ``indices`` one after another with one generator (``baseline`` or
    ``cached``); its numbers and the episodes."""
    from orchestra.policies.rl.cached import CachedHFGenerator
    from orchestra.policies.rl.hf import HFGenerator
    from orchestra.training.rl_episodes import EpisodeRunner

    t0 = time.perf_counter()
    gen: Any = (HFGenerator.load(art, temperature=0.0, batch_size=1) if kind == "baseline"
                else CachedHFGenerator.load(art))
    load_s = time.perf_counter() - t0
    counting = CountingGenerator(gen)
    runner = EpisodeRunner(table, counting, **settings)
    tok = gen.tokenizer
    # One untimed decision on an unrelated prompt as long as a run's first one: torch's and
    # generate's first-call costs (large first forwards are slow) are paid outside the
    # measurement. It shares no first token with a run's prompt, so the cache never re-uses it.
    first = _first_segment(runner, tok, lam, runner.queries[indices[0]].text)
    filler = list(tok.encode(" Hello there.", add_special_tokens=False)) or [0]
    probe = (filler * (len(first) // len(filler) + 1))[: len(first)]
    while len(probe) > 1 and probe[0] == first[0]:
        probe = probe[1:]

    async def _probe() -> None:
        await gen.generate(probe, max_new_tokens=2, stop=())

    asyncio.run(_probe())
    skip = len(getattr(gen, "prefilled", []))
    hits0 = getattr(gen, "hits", 0)
    out: dict[str, Any] = {"generator": type(gen).__name__, "load_s": round(load_s, 2)}
    prefix: list[int] = []
    if kind == "cached":
        prefix = warm_prefix(runner, tok, lam)
        out["warm_prefix_tokens"] = len(prefix)
        out["warmed"] = warm
        if warm:
            t1 = time.perf_counter()
            gen.warm(prefix)
            out["warm_s"] = round(time.perf_counter() - t1, 3)
    queries = [runner.queries[i] for i in indices]

    async def run_all() -> list[Any]:
        return [await runner.episode(q, lam) for q in queries]  # sequentially, on purpose

    t0 = time.perf_counter()
    episodes = asyncio.run(run_all())
    wall = time.perf_counter() - t0
    lat = list(runner.latencies_s)
    out.update({
        "wall_s": round(wall, 3),
        "episodes": len(episodes),
        "decisions": len(lat),
        "decision_s": _stats(lat),
        "decision_latencies_s": [round(x, 4) for x in lat],
        "prompt_tokens_total": int(sum(counting.prompt_tokens)),
        "prompt_tokens": _stats(counting.prompt_tokens),
        "prompt_tokens_per_decision": counting.prompt_tokens,
        "new_tokens_total": int(sum(counting.new_tokens)),
        "format_valid": float(np.mean([e.reward.format_error is None for e in episodes]))
        if episodes else None,
        "reward_mean": float(np.mean([e.reward.reward for e in episodes])) if episodes else None,
    })
    if kind == "cached":
        pre = [int(x) for x in gen.prefilled[skip:]]
        out.update({
            "prefilled_tokens_total": int(sum(pre)),
            "prefilled_tokens": _stats(pre),
            "prefilled_tokens_per_decision": pre,
            "hits": int(gen.hits - hits0),
            "hit_rate": (gen.hits - hits0) / len(pre) if pre else None,
            # Whether the warmed prefix is where the runs' prompts really start.
            "episodes_starting_with_warm_prefix": sum(
                list(e.ids[: len(prefix)]) == prefix for e in episodes) if prefix else 0,
        })
    return out, episodes


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", default="routerbench-rl",
                    help="the trained rl artifact (a name under the artifacts folder or a path)")
    ap.add_argument("--limit", type=int, default=40, help="test queries (a seeded sample)")
    ap.add_argument("--lam", type=float, default=None,
                    help="cost weight λ (default: the artifact's default_lam)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm", action=argparse.BooleanOptionalAction, default=True,
                    help="prefill the shared system prompt into the cache before the first run")
    ap.add_argument("--out", type=Path, default=RESULTS / "rl_decision_cache.json")
    args = ap.parse_args()
    if args.limit < 1:
        ap.error(f"--limit must be >= 1 (got {args.limit})")
    _shared()

    from rich.console import Console
    from rich.table import Table

    from orchestra.outcomes import load_outcomes
    from orchestra.policies.learned.locations import resolve_artifact

    con = Console()
    art = resolve_artifact(args.artifact, "rl")
    meta_path = art / "rl.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    lam = float(args.lam if args.lam is not None else meta.get("default_lam", 0.0))
    hints = meta.get("hints")
    settings: dict[str, Any] = {
        "max_turns": int(meta.get("max_turns", 4)),
        "max_new_tokens": int(meta.get("max_new_tokens", 96)),
        "max_chars": int(meta.get("max_chars", 600)),
        "hints": None if hints in (None, "", "none") else str(hints),
        "query_chars": None if meta.get("query_chars") is None else int(meta["query_chars"]),
    }
    table = load_outcomes("routerbench", split="test")
    n = table.n_queries
    indices = sorted(random.Random(args.seed).sample(range(n), min(args.limit, n)))
    load_start = list(os.getloadavg())

    con.print(f"[bold]rl decision cache[/] {art} · {len(indices)} queries · λ={lam:g} · "
              f"warm={args.warm}")
    base, base_eps = measure("baseline", art, table, indices, lam, settings, args.warm)
    con.print(f"baseline: {base['decisions']} decisions in {base['wall_s']:.1f} s")
    gc.collect()  # the baseline's model goes before the cached one runs
    cached, cached_eps = measure("cached", art, table, indices, lam, settings, args.warm)
    con.print(f"cached:   {cached['decisions']} decisions in {cached['wall_s']:.1f} s")

    differing = [(b, c) for b, c in zip(base_eps, cached_eps, strict=True) if b.texts != c.texts]
    first_diff: dict[str, Any] | None = None
    if differing:
        b, c = differing[0]
        k = next((i for i, (x, y) in enumerate(zip(b.texts, c.texts, strict=False)) if x != y),
                 min(len(b.texts), len(c.texts)))
        first_diff = {"query_id": b.query_id, "decision": k,
                      "baseline": b.texts[k] if k < len(b.texts) else None,
                      "cached": c.texts[k] if k < len(c.texts) else None}
    same_ids = sum(b.ids == c.ids for b, c in zip(base_eps, cached_eps, strict=True))

    ratios = {
        "wall": _ratio(base["wall_s"], cached["wall_s"]),
        "decision_p50": _ratio(base["decision_s"]["p50"], cached["decision_s"]["p50"]),
        "decision_mean": _ratio(base["decision_s"]["mean"], cached["decision_s"]["mean"]),
        "prefill_tokens": _ratio(base["prompt_tokens_total"], cached["prefilled_tokens_total"]),
        "prefill_tokens_with_warm": _ratio(
            base["prompt_tokens_total"],
            cached["prefilled_tokens_total"]
            + (cached["warm_prefix_tokens"] if args.warm else 0)),
    }
    report: dict[str, Any] = {
        "what": "rl policy decisions (greedy) on RouterBench test episodes through the serving "
                "runtime on the replay pool: baseline HFGenerator (batch_size=1, re-prefills the "
                "whole transcript each decision) vs CachedHFGenerator (re-uses key/value caches "
                "of token prefixes" + ("; the shared system prompt warmed once before the first "
                                       "run, not counted in wall_s" if args.warm else "")
                + "). Episodes run sequentially, one at a time, for both, so the baseline gets "
                "no batching the cached one lacks. Each generator first makes one untimed "
                "decision on an unrelated prompt as long as a run's first one (first-call "
                "costs). Ratios are baseline / cached; prefill_tokens = baseline prompt tokens "
                "/ cached prefilled tokens (prefill_tokens_with_warm adds the warmed prefix).",
        "artifact": str(art),
        "settings": {**settings, "rl_json": meta},
        "queries": len(indices),
        "query_ids": [base_eps[i].query_id for i in range(len(base_eps))],
        "seed": args.seed,
        "lam": lam,
        "warm": args.warm,
        "machine": {"platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "note": "shared with other work",
                    "python": platform.python_version(), "versions": _versions(),
                    "load_average_at_start": load_start,
                    "load_average_at_end": list(os.getloadavg())},
        "baseline": base,
        "cached": cached,
        "ratios": ratios,
        "identical_decisions": not differing,
        "differing_queries": len(differing),
        "identical_token_ids": same_ids == len(base_eps),
        "first_difference": first_diff,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))

    def f(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    t = Table(title=f"rl decisions: {len(indices)} queries, λ={lam:g}, sequential")
    for col in ("", "baseline", "cached", "ratio"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("wall s", f(base["wall_s"], ".2f"), f(cached["wall_s"], ".2f"),
              f(ratios["wall"], ".2f"))
    t.add_row("decision p50 s", f(base["decision_s"]["p50"], ".3f"),
              f(cached["decision_s"]["p50"], ".3f"), f(ratios["decision_p50"], ".2f"))
    t.add_row("decision mean s", f(base["decision_s"]["mean"], ".3f"),
              f(cached["decision_s"]["mean"], ".3f"), f(ratios["decision_mean"], ".2f"))
    t.add_row("decisions", str(base["decisions"]), str(cached["decisions"]), "")
    t.add_row("prefill tokens", str(base["prompt_tokens_total"]),
              str(cached["prefilled_tokens_total"]), f(ratios["prefill_tokens"], ".2f"))
    t.add_row("cache hits", "", f"{cached['hits']}/{cached['decisions']}", "")
    con.print(t)
    verdict = ("[green]identical decisions[/]" if not differing else
               f"[red]{len(differing)} of {len(indices)} queries decided differently[/] "
               f"(first: {first_diff})")
    con.print(f"{verdict}; wrote {args.out}")


if __name__ == "__main__":
    main()

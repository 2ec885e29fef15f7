"""The bandit learning from 200 graded runs' exported traces, against baselines, on RouterBench.

Run from the repository root (needs the shared data: ``../shared/data``, or set
``$ORCHESTRA_SHARED_DATA``)::

    .venv/bin/python benchmarks/bandit_from_traces.py            # served, 3 seeds, ~3 min
    .venv/bin/python benchmarks/bandit_from_traces.py --seeds 1 --runs 50   # quicker
    .venv/bin/python benchmarks/bandit_from_traces.py --mode orchestra      # in-process runs

**The runs, ``--mode served`` (the default): real HTTP requests to ``orchestra serve``.** For
each seed, the benchmark starts ``orchestra serve --pool replay:routerbench:train --policy
<recipe> --store traces.sqlite`` on 127.0.0.1 (a free port, a subprocess; the recipe is the
``bandit`` policy with this benchmark's λ, α, seed and cost scale: cold start, LinUCB
exploration) and sends 200 RouterBench *train-split* queries (random order) with the official
``openai`` client, one at a time, each with ``metadata={"task", "query_id"}`` (the run's meta:
the bandit's task feature, the replay pool's row). The replay pool answers with each model's
recorded answer and cost through the real runtime and budget ledger. After each answer the
client posts its gold grade to ``POST /v1/feedback`` (``{"trace_id": <x-orchestra-trace-id>,
"score": g}``), ``g`` being the recorded correctness of the model that answered (the response's
``model``; RouterBench's grade against the gold answer), so the served bandit learns online.
The server is then stopped and the store exported with ``orchestra traces export`` (the
command): the grades come from the feedback events.

**``--mode orchestra``** (the first version of this benchmark, before the server had a feedback
route): the same 200 runs through ``Orchestra`` in-process (``ReplayBackend``, a real SQLite
trace store) and ``Orchestra.feedback(run_id, score=<grade>)``, exported with
:func:`~orchestra.trace.export.export_runs`; its results are kept in
``bandit_from_traces.orchestra.json`` / ``.png``.

**Training from the traces.** ``orchestra train bandit --data traces.jsonl --pool routerbench``
(run as a command, its summary and phase times kept), and the same learning replayed one trace
at a time to draw the **learning curve**: after 0, 10, 20, ..., 200 traces, the frozen state is
asked greedily (no exploration bonus) for each of the 953 *test-split* queries, which no run saw;
reported: mean reward ``score - lam * cost / cost_scale``, accuracy, cost per query and regret
against the per-query oracle. The state learned from the 200 traces must equal the state the
served bandit learned online (the log holds exactly what it saw).

**Online.** The 200 served runs themselves: reward (``score - lam * cost / cost_scale``) of
the bandit's own choices run by run, its running mean and cumulative regret, against the
expected reward of a uniform random choice and the cheapest model on the same queries.

**Baselines, side by side on the test split.** The bandit trained on the *full* train table
(every model's outcome on each of the 2,225 train queries: 24,475 observations, full
information), random (expected), the cheapest model, the strongest (``gpt-4-1106-preview``) and
the oracle. The headline ratio: the 200-trace bandit's test reward as a share of the full-table
bandit's, and its share of the full-table bandit's gain over random.

````cost_scale`` (the λ unit) is the priciest model's mean cost per train query, as for the other
learned routers. Results: ``benchmarks/results/bandit_from_traces.json`` and ``.png`` (served),
``bandit_from_traces.orchestra.json`` and ``.png`` (``--mode orchestra``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
os.environ.setdefault("ORCHESTRA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

STRONGEST = "gpt-4-1106-preview"
EVERY = 10
#: How long ``orchestra serve`` may take to answer its health check.
START_S = 180.0


def policy_for(pool: Any, *, seed: int, lam: float, scale: float, alpha: float) -> Any:
    from orchestra.policies.bandit.policy import BanditPolicy

    return BanditPolicy(pool, lam=lam, alpha=alpha, seed=seed, cost_scale=scale,
                        embedder="minilm")


def serve(train: Any, pool: Any, idx: np.ndarray, *, seed: int, lam: float, scale: float,
          alpha: float, workdir: Path) -> tuple[Path, Any, list[dict[str, Any]], float]:
    """200 bandit runs with gold feedback, exported; (traces file, policy, per-run rows, s)."""
    from orchestra import Orchestra
    from orchestra.backends.replay import ReplayBackend
    from orchestra.trace.export import export_runs
    from orchestra.trace.store import SQLiteTraceStore

    store = SQLiteTraceStore(workdir / f"traces-{seed}.sqlite")
    policy = policy_for(pool, seed=seed, lam=lam, scale=scale, alpha=alpha)
    orch = Orchestra(pool, policy=policy, backend=ReplayBackend(), store=store)
    scores, costs = train.score_matrix(), train.cost_matrix()
    col = {m: j for j, m in enumerate(train.models)}
    rows = []
    t0 = time.perf_counter()
    for q in idx.tolist():
        res = orch.run(train.query_texts[q], meta={"query_id": train.queries[q],
                                                   "task": train.query_tasks[q]})
        call = res.answer_call()
        if call is None:
            raise SystemExit(f"run {res.trace_id} answered from no call ({res.stop_reason})")
        model = str(call["model"])
        grade = float(np.nan_to_num(scores[q, col[model]]))
        orch.feedback(res.trace_id, score=grade)
        rows.append({"q": q, "model": model, "score": grade, "cost": float(res.cost_usd),
                     "recorded_cost": float(costs[q, col[model]])})
    secs = time.perf_counter() - t0
    out = workdir / f"traces-{seed}.jsonl"
    export_runs(store, out)
    store.close()
    return out, policy, rows, secs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestra.cli", *args]


def serve_http(train: Any, idx: np.ndarray, *, seed: int, lam: float, scale: float,
               alpha: float, workdir: Path, con: Any
               ) -> tuple[Path, Path, list[dict[str, Any]], dict[str, Any]]:
    """200 requests to ``orchestra serve --policy bandit`` with gold feedback over HTTP, then
    ``orchestra traces export``; (traces file, the served bandit's saved state, per-run rows,
    facts about the serving)."""
    import httpx
    import openai

    state = workdir / f"served-{seed}.npz"
    recipe = workdir / f"bandit-{seed}.yaml"
    # The served bandit saves its state once, after the last feedback (to compare with the
    # state learned from the exported traces).
    recipe.write_text(json.dumps({"policy": "bandit", "params": {
        "lam": lam, "alpha": alpha, "seed": seed, "cost_scale": scale, "embedder": "minilm",
        "path": str(state), "save_every": len(idx)}}), encoding="utf-8")
    db = workdir / f"traces-{seed}.sqlite"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = workdir / f"serve-{seed}.log"
    cmd = cli("serve", "--pool", "replay:routerbench:train", "--policy", str(recipe),
              "--host", "127.0.0.1", "--port", str(port), "--store", str(db))
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    scores, costs = train.score_matrix(), train.cost_matrix()
    col = {m: j for j, m in enumerate(train.models)}
    rows: list[dict[str, Any]] = []
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"orchestra serve exited ({proc.returncode}):\n"
                                 f"{log.read_text()[-3000:]}")
            if time.perf_counter() - t0 > START_S:
                raise SystemExit(f"orchestra serve did not answer /health within {START_S:g} s; "
                                 f"see {log}")
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        start_s = time.perf_counter() - t0
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0,
                               timeout=120)
        http = httpx.Client(base_url=base, timeout=60)
        t1 = time.perf_counter()
        for q in idx.tolist():
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": train.query_texts[q]}],
                metadata={"task": train.query_tasks[q], "query_id": train.queries[q]})
            done = raw.parse()
            trace_id = raw.headers["x-orchestra-trace-id"]
            model = done.model
            facts = (done.model_extra or {})["orchestra"]
            if model not in col:
                raise SystemExit(f"run {trace_id} answered from {model!r}, not a pool model "
                                 f"({facts['stop_reason']})")
            grade = float(np.nan_to_num(scores[q, col[model]]))
            fb = http.post("/v1/feedback", json={"trace_id": trace_id, "score": grade})
            if fb.status_code != 200:
                raise SystemExit(f"POST /v1/feedback for {trace_id} answered "
                                 f"{fb.status_code}: {fb.text}")
            rows.append({"q": q, "model": model, "score": grade, "trace_id": trace_id,
                         "cost": float(facts["cost_usd"]),
                         "recorded_cost": float(costs[q, col[model]]),
                         "observed": bool(fb.json()["observed"])})
        serve_s = time.perf_counter() - t1
        http.close()
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    traces = workdir / f"traces-{seed}.jsonl"
    t2 = time.perf_counter()
    res = subprocess.run(cli("traces", "export", "--db", str(db), "--out", str(traces)),
                         cwd=REPO, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"orchestra traces export failed:\n{res.stderr}")
    export_s = time.perf_counter() - t2
    exported = {r["run_id"]: r for r in map(json.loads,
                                            traces.read_text(encoding="utf-8").splitlines())}
    facts = {"server_start_seconds": start_s, "export_seconds": export_s,
             "export_stdout": res.stdout.strip().splitlines()[-1:],
             "requests_per_second": len(rows) / serve_s if serve_s > 0 else None,
             "feedback_observed": sum(r["observed"] for r in rows),
             "exported_runs": len(exported),
             "exported_scores_equal_posted": all(
                 exported[r["trace_id"]]["score"] == r["score"] for r in rows),
             "command": " ".join(["orchestra", *cmd[3:]]).replace(str(workdir), "$TMP")}
    con.print(f"  orchestra serve up in {start_s:.1f}s; {len(rows)} requests + feedback in "
              f"{serve_s:.1f}s; exported {len(exported)} runs in {export_s:.1f}s")
    return traces, state, rows, {"serve_seconds": serve_s, **facts}


def evaluate_greedy(policy: Any, x_test: np.ndarray, test: Any, lam: float, scale: float,
                    col: dict[str, int]) -> dict[str, float]:
    """The frozen state's greedy choice on every test query: reward, accuracy, cost, regret."""
    alpha = policy.alpha
    policy.alpha = 0.0
    try:
        pick = np.array([col[policy.choose(x_test[i], test.query_texts[i], lam=lam)[0]]
                         for i in range(test.n_queries)])
    finally:
        policy.alpha = alpha
    s = np.nan_to_num(test.score_matrix())
    c = np.nan_to_num(test.cost_matrix())
    rows = np.arange(test.n_queries)
    reward = s[rows, pick] - lam * c[rows, pick] / scale
    oracle = (s - lam * c / scale).max(axis=1)
    return {"mean_reward": float(reward.mean()), "accuracy": float(s[rows, pick].mean()),
            "cost_per_query": float(c[rows, pick].mean()),
            "regret_per_query": float((oracle - reward).mean())}


def references(test: Any, lam: float, scale: float, best_single: str
               ) -> dict[str, dict[str, float]]:
    s = np.nan_to_num(test.score_matrix())
    c = np.nan_to_num(test.cost_matrix())
    r = s - lam * c / scale
    oracle = r.max(axis=1)
    cheapest = int(np.argmin(c.mean(axis=0)))
    strong = test.models.index(STRONGEST)

    def of(reward: np.ndarray, acc: np.ndarray, cost: np.ndarray) -> dict[str, float]:
        return {"mean_reward": float(reward.mean()), "accuracy": float(acc.mean()),
                "cost_per_query": float(cost.mean()),
                "regret_per_query": float((oracle - reward).mean())}

    return {"random": of(r.mean(axis=1), s.mean(axis=1), c.mean(axis=1)),
            f"cheapest ({test.models[cheapest]})": of(r[:, cheapest], s[:, cheapest],
                                                      c[:, cheapest]),
            f"strongest ({STRONGEST})": of(r[:, strong], s[:, strong], c[:, strong]),
            f"best single on train ({best_single})": of(
                r[:, test.models.index(best_single)], s[:, test.models.index(best_single)],
                c[:, test.models.index(best_single)]),
            "oracle": of(oracle, s[np.arange(len(s)), r.argmax(axis=1)],
                         c[np.arange(len(s)), r.argmax(axis=1)])}


def train_command(traces: Path, out: Path) -> dict[str, Any]:
    """``orchestra train bandit --data traces --pool routerbench`` as a user runs it."""
    cmd = [sys.executable, "-m", "orchestra.cli", "train", "bandit", "--data", str(traces),
           "--pool", "routerbench", "--out", str(out), "--json"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr}")
    summary: dict[str, Any] = json.loads(res.stdout[res.stdout.index("{"):])
    summary["wall_s_with_startup"] = time.perf_counter() - t0
    summary["command"] = "orchestra train bandit --data traces.jsonl --pool routerbench --json"
    summary["stderr_lines"] = res.stderr.strip().splitlines()[:6]
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--lam", type=float, default=0.2)
    ap.add_argument("--alpha", type=float, default=0.25)
    ap.add_argument("--mode", choices=("served", "orchestra"), default="served",
                    help="served: HTTP requests to orchestra serve + POST /v1/feedback; "
                         "orchestra: in-process Orchestra runs + Orchestra.feedback")
    ap.add_argument("--out", type=Path, default=None,
                    help="results JSON (default: results/bandit_from_traces.json, or "
                         "bandit_from_traces.orchestra.json with --mode orchestra)")
    args = ap.parse_args()
    if args.out is None:
        args.out = ROOT / "results" / ("bandit_from_traces.json" if args.mode == "served"
                                       else "bandit_from_traces.orchestra.json")

    from rich.console import Console

    from orchestra.backends.replay import pool_from_outcomes
    from orchestra.outcomes import load_outcomes
    from orchestra.policies.learned.features import embed_queries
    from orchestra.training.bandit_fit import observations_from_table, train_bandit
    from orchestra.training.lambdas import cost_scale_of
    from orchestra.training.trace_data import observations_from_traces

    con = Console(stderr=True)
    train = load_outcomes("routerbench", split="train")
    test = load_outcomes("routerbench", split="test")
    pool = pool_from_outcomes(train, table_name="rb-traces-train")
    scale = cost_scale_of(train.cost_matrix())
    lam = args.lam
    col = {m: j for j, m in enumerate(test.models)}
    assert list(test.models) == list(train.models)

    probe = policy_for(pool, seed=0, lam=lam, scale=scale, alpha=args.alpha)
    t0 = time.perf_counter()
    emb_test = embed_queries(probe.features.embedder, test.query_texts)
    x_test = probe.features.assemble(emb_test, test.query_texts, test.query_tasks)
    embed_s = time.perf_counter() - t0

    r_train = (np.nan_to_num(train.score_matrix())
               - lam * np.nan_to_num(train.cost_matrix()) / scale)
    refs = references(test, lam, scale, train.models[int(r_train.mean(axis=0).argmax())])
    con.print("[bold]full-table bandit[/bold]: every recorded cell of the train split")
    t0 = time.perf_counter()
    full, full_counts = train_bandit(pool, observations_from_table(train),
                                     params={"lam": lam, "cost_scale": scale, "seed": 0})
    full_s = time.perf_counter() - t0
    full_eval = evaluate_greedy(full, x_test, test, lam, scale, col)
    con.print(f"  {full_counts['learned']} observations in {full_s:.1f}s: test reward "
              f"{full_eval['mean_reward']:.4f}")

    s_tr = np.nan_to_num(train.score_matrix())
    c_tr = np.nan_to_num(train.cost_matrix())
    r_tr = s_tr - lam * c_tr / scale
    cheapest_tr = int(np.argmin(c_tr.mean(axis=0)))
    checkpoints = list(range(0, args.runs + 1, EVERY))
    seeds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in range(args.seeds):
            idx = np.random.default_rng(100 + seed).permutation(train.n_queries)[:args.runs]
            serving: dict[str, Any] = {}
            if args.mode == "served":
                from orchestra.policies.bandit.policy import BanditPolicy

                traces, state, rows, serving = serve_http(
                    train, idx, seed=seed, lam=lam, scale=scale, alpha=args.alpha,
                    workdir=work, con=con)
                serve_s = serving["serve_seconds"]
                # The served bandit's own state, as it saved it after the last feedback.
                online = BanditPolicy(pool, path=str(state), lam=lam, cost_scale=scale)
            else:
                traces, online, rows, serve_s = serve(train, pool, idx, seed=seed, lam=lam,
                                                      scale=scale, alpha=args.alpha,
                                                      workdir=work)
            obs, stats = observations_from_traces(traces)
            # The learning curve: the same learning as `train bandit`, one trace at a time.
            learner = policy_for(pool, seed=seed, lam=lam, scale=scale, alpha=args.alpha)
            texts = [o.query for o in obs]
            x = learner.features.assemble(embed_queries(learner.features.embedder, texts),
                                          texts, [o.task for o in obs])
            curve = [{"traces": 0, **evaluate_greedy(learner, x_test, test, lam, scale, col)}]
            for k, o in enumerate(obs, start=1):
                learner.learn(o.model, x[k - 1], o.query, o.score, o.cost_usd)
                if k in checkpoints:
                    curve.append({"traces": k,
                                  **evaluate_greedy(learner, x_test, test, lam, scale, col)})
            same_state = bool(np.allclose(learner.learner.A, online.learner.A)
                              and np.allclose(learner.learner.bq, online.learner.bq))
            cmd = train_command(traces, work / f"bandit-{seed}.npz") if seed == 0 else None
            if cmd is not None:
                from orchestra.policies.bandit.policy import BanditPolicy

                served = BanditPolicy(pool, path=cmd["artifact"], lam=lam, cost_scale=scale)
                cmd_eval = evaluate_greedy(served, x_test, test, lam, scale, col)
                cmd["test"] = cmd_eval
                cmd["same_as_replayed_state"] = bool(np.allclose(served.learner.A,
                                                                 learner.learner.A))
            # Online: the served runs' own rewards.
            qs = np.array([r["q"] for r in rows])
            picked = np.array([col[r["model"]] for r in rows])
            r_online = r_tr[qs, picked]
            r_random = r_tr[qs].mean(axis=1)
            r_cheap = r_tr[qs, cheapest_tr]
            r_oracle = r_tr[qs].max(axis=1)
            charged_ok = bool(np.allclose([r["cost"] for r in rows],
                                          [r["recorded_cost"] for r in rows], rtol=1e-9,
                                          atol=1e-15))
            half = len(rows) // 2
            seeds.append({
                "seed": seed, "serve_seconds": serve_s, "runs": len(rows), "traces": stats,
                **({"served": {k: v for k, v in serving.items() if k != "serve_seconds"}}
                   if serving else {}),
                "replayed_state_equals_online_state": same_state,
                "charged_equals_recorded": charged_ok,
                "curve": curve,
                "online": {
                    "reward_per_run": {"bandit": r_online.tolist(),
                                       "models": [r["model"] for r in rows]},
                    "cumulative": {k: np.cumsum(v)[EVERY - 1::EVERY].tolist() for k, v in
                                   (("bandit", r_online), ("random", r_random),
                                    ("cheapest", r_cheap), ("oracle", r_oracle))},
                    "mean_reward": {"bandit": float(r_online.mean()),
                                    "random": float(r_random.mean()),
                                    "cheapest": float(r_cheap.mean()),
                                    "oracle": float(r_oracle.mean())},
                    "first_half_mean_reward": float(r_online[:half].mean()),
                    "second_half_mean_reward": float(r_online[half:].mean()),
                    "regret_total": float((r_oracle - r_online).sum()),
                    "regret_total_random": float((r_oracle - r_random).sum()),
                    "calls": {m: int((picked == j).sum()) for m, j in col.items()
                              if (picked == j).any()},
                },
                "train_command": cmd,
            })
            end = curve[-1]
            con.print(f"seed {seed}: {len(rows)} runs served in {serve_s:.1f}s; online reward "
                      f"{r_online[:half].mean():.3f} → {r_online[half:].mean():.3f} (random "
                      f"{r_random.mean():.3f}); test reward after {end['traces']} traces "
                      f"{end['mean_reward']:.4f} vs full table {full_eval['mean_reward']:.4f}; "
                      f"state = online: {same_state}")

    final = np.array([s["curve"][-1]["mean_reward"] for s in seeds])
    rand = refs["random"]["mean_reward"]
    summary = {
        "mode": args.mode,
        "traces_bandit_test_reward": {"mean": float(final.mean()), "std": float(final.std())},
        "full_table_bandit_test_reward": full_eval["mean_reward"],
        "ratio_traces_to_full_table": float(final.mean() / full_eval["mean_reward"]),
        "share_of_full_table_gain_over_random": float(
            (final.mean() - rand) / (full_eval["mean_reward"] - rand)),
        "best_single_test_reward": next(v["mean_reward"] for k, v in refs.items()
                                        if k.startswith("best single")),
        "observations": {"traces": args.runs, "full_table": full_counts["learned"]},
        "online_regret_total": {"bandit": float(np.mean([s["online"]["regret_total"]
                                                         for s in seeds])),
                                "random": float(np.mean([s["online"]["regret_total_random"]
                                                         for s in seeds]))},
        "online_mean_reward": {k: float(np.mean([s["online"]["mean_reward"][k] for s in seeds]))
                               for k in ("bandit", "random", "cheapest", "oracle")},
        "online_mean_reward_by_half": {
            "first": float(np.mean([s["online"]["first_half_mean_reward"] for s in seeds])),
            "second": float(np.mean([s["online"]["second_half_mean_reward"] for s in seeds]))},
        "replayed_state_equals_online_state": all(s["replayed_state_equals_online_state"]
                                                  for s in seeds),
        "charged_equals_recorded": all(s["charged_equals_recorded"] for s in seeds),
    }
    if args.mode == "served":
        summary["served"] = {
            "feedback_observed": sum(s["served"]["feedback_observed"] for s in seeds),
            "exported_scores_equal_posted": all(s["served"]["exported_scores_equal_posted"]
                                                for s in seeds),
            "requests_per_second": float(np.mean([s["served"]["requests_per_second"]
                                                  for s in seeds])),
            "server_start_seconds": float(np.mean([s["served"]["server_start_seconds"]
                                                   for s in seeds]))}
    result = {
        "config": {"runs": args.runs, "seeds": args.seeds, "lam": lam, "alpha": args.alpha,
                   "cost_scale_usd": scale, "embedder": probe.features.embedder.name,
                   "features": probe.features.width, "train_queries": train.n_queries,
                   "test_queries": test.n_queries, "models": list(train.models),
                   "mode": args.mode,
                   "served": (
                       "HTTP: orchestra serve --pool replay:routerbench:train --policy <bandit "
                       "recipe> (a subprocess on 127.0.0.1), the official openai client, "
                       "POST /v1/feedback {trace_id, score: recorded grade}, then orchestra "
                       "traces export" if args.mode == "served" else
                       "Orchestra runs (bandit policy, ReplayBackend on the RouterBench train "
                       "split) + Orchestra.feedback(score=recorded grade), export_runs"),
                   "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)"},
        "embedding_test_seconds": embed_s,
        "full_table_bandit": {"observations": full_counts["learned"], "seconds": full_s,
                              "test": full_eval},
        "references_test": refs,
        "seeds": seeds,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    plot(result, args.out.with_suffix(".png"))
    con.print(json.dumps(summary, indent=1))
    con.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    served = res["config"].get("mode", "orchestra") == "served"
    how = "POST /v1/feedback" if served else "Orchestra.feedback"
    fig, (r, a, b) = plt.subplots(1, 3, figsize=(19, 4.8))
    colors = {"bandit": "C0", "random": "C7", "cheapest": "C2", "oracle": "k"}
    for s in res["seeds"]:
        per_run = s["online"].get("reward_per_run")
        if per_run is None:
            continue
        rew = np.array(per_run["bandit"])
        n = np.arange(1, len(rew) + 1)
        r.plot(n, np.cumsum(rew) / n, color="C0", alpha=0.8,
               label="bandit: mean reward so far" if s["seed"] == 0 else None)
        w = min(20, len(rew))
        r.plot(n[w - 1:], np.convolve(rew, np.ones(w) / w, mode="valid"), color="C0", ls=":",
               alpha=0.6, label=f"bandit: last {w} runs" if s["seed"] == 0 else None)
    for k in ("random", "cheapest", "oracle"):
        vals = [s["online"]["mean_reward"][k] for s in res["seeds"]]
        r.axhline(float(np.mean(vals)), color=colors[k], ls="--",
                  label=f"{k} on the same queries")
    r.set_xlabel(f"served runs (graded with {how})")
    r.set_ylabel(f"reward (score - {res['config']['lam']}·cost/scale)")
    r.set_title("online: the served bandit's reward, run by run")
    r.legend(fontsize=7, loc="lower right")
    for s in res["seeds"]:
        cum = s["online"]["cumulative"]
        steps = np.arange(1, len(cum["bandit"]) + 1) * EVERY
        oracle = np.array(cum["oracle"])
        for k in ("bandit", "random", "cheapest"):
            a.plot(steps, oracle - np.array(cum[k]), color=colors[k], alpha=0.8,
                   label=k if s["seed"] == 0 else None)
    a.set_xlabel(f"served runs (graded with {how})")
    a.set_ylabel("cumulative regret vs oracle")
    a.set_title("online: cumulative regret of the served bandit")
    a.legend()
    for s in res["seeds"]:
        xs = [p["traces"] for p in s["curve"]]
        b.plot(xs, [p["mean_reward"] for p in s["curve"]], color="C0", marker=".", alpha=0.8,
               label="bandit from N exported traces" if s["seed"] == 0 else None)
    full = res["full_table_bandit"]["test"]["mean_reward"]
    b.axhline(full, color="C1", ls="--",
              label=f"bandit, full train table ({res['full_table_bandit']['observations']} obs.)")
    styles = ["C7", "C2", "C3", "C4", "k"]
    for (name, ref), c in zip(res["references_test"].items(), styles, strict=True):
        b.axhline(ref["mean_reward"], color=c, ls=":", label=name)
    b.set_xlabel("exported traces learned")
    b.set_ylabel(f"test mean reward (score - {res['config']['lam']}·cost/scale)")
    b.set_title(f"greedy on the {res['config']['test_queries']} test queries")
    b.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

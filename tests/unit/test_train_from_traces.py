"""Training from exported traces (logged bandit feedback), and the training commands' progress,
phase times and data repairs.

Runs are real ``Orchestra`` runs over a test pool (``FunctionBackend``: model A is right on
arithmetic queries, B on poetry, C on both), stored in a real SQLite trace store, graded with
``Orchestra.feedback`` and exported with ``export_runs``: the file a user would train on.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestra import Orchestra, UserError
from orchestra.backends.base import CompletionRequest
from orchestra.embed import HashingEmbedder
from orchestra.outcomes import OutcomeTable
from orchestra.policies.bandit.policy import BanditPolicy
from orchestra.testing import FunctionBackend, make_pool
from orchestra.trace.export import export_runs, read_examples
from orchestra.trace.store import SQLiteTraceStore
from orchestra.training.bandit_fit import observations_from_table, train_bandit
from orchestra.training.cli import train_app
from orchestra.training.progress import PhaseTimer, embed_with_progress, stage_progress
from orchestra.training.router_data import prepare_data
from orchestra.training.router_fit import train_router
from orchestra.training.trace_data import (
    is_trace_file,
    observations_from_traces,
    table_from_traces,
)

X_WORDS = ["add", "sum", "multiply", "divide", "subtract", "integer", "equation", "fraction"]
Y_WORDS = ["poem", "sonnet", "haiku", "verse", "rhyme", "stanza", "ballad", "ode"]
PRICES = {"A": (1.0, 1.0), "B": (1.2, 1.2), "C": (20.0, 20.0)}


def query(topic: str, rng: np.random.Generator) -> str:
    words = X_WORDS if topic == "X" else Y_WORDS
    return f"please {' '.join(rng.choice(words, size=4, replace=False))} {rng.integers(10_000)}"


def right(model: str, q: str) -> bool:
    topic = "X" if any(w in q.split() for w in X_WORDS) else "Y"
    return model == "C" or (model == "A" and topic == "X") or (model == "B" and topic == "Y")


def pool() -> Any:
    return make_pool(prices=list(PRICES.values()), names=list(PRICES), max_output_tokens=64)


def answer(req: CompletionRequest) -> str:
    return "right" if right(req.model.name, req.messages[-1]["content"]) else "wrong"


def serve_and_export(tmp_path: Path, n: int, *, grade: bool = True, policy: Any = None,
                     seed: int = 0) -> tuple[Path, Any]:
    """``n`` runs of the bandit (or ``policy``) on the test pool, graded with feedback (1 when
    the called model is right), exported: the traces file and the policy that served."""
    store = SQLiteTraceStore(tmp_path / f"traces-{seed}.sqlite")
    served = policy or BanditPolicy(pool(), embedder=HashingEmbedder(), dim=32, seed=seed,
                                    lam=0.5)
    orch = Orchestra(pool(), policy=served, backend=FunctionBackend(answer), store=store)
    rng = np.random.default_rng(seed)
    for i in range(n):
        topic = "X" if i % 2 == 0 else "Y"
        res = orch.run(query(topic, rng), meta={"task": f"topic-{topic}"})
        if grade:
            orch.feedback(res.trace_id, score=1.0 if res.answer == "right" else 0.0)
    out = tmp_path / f"runs-{seed}.jsonl"
    export_runs(store, out)
    store.close()
    return out, served


# ---------------------------------------------------------------------- export and reading


def test_export_carries_feedback_scores_task_and_the_table_is_logged(tmp_path: Path) -> None:
    path, _ = serve_and_export(tmp_path, 24)
    examples = list(read_examples(path))
    assert len(examples) == 24
    assert all(e.score in (0.0, 1.0) for e in examples)  # from the feedback events
    assert {e.task for e in examples} == {"topic-X", "topic-Y"}
    assert is_trace_file(path) and not is_trace_file(tmp_path / "nope.jsonl")

    table = table_from_traces(path)
    assert table.meta["feedback"] == "logged"
    assert table.meta["traces"]["used"] == 24 and table.meta["traces"]["ungraded"] == 0
    # Logged feedback: one observed model per query, the others unknown.
    observed = (~np.isnan(table.score_matrix())).sum(axis=1)
    assert (observed == 1).all() and table.n_queries == 24
    # Each cell is the called model's graded outcome.
    for e in examples:
        model = e.calls[0].model
        qi = table.query_index(e.query)
        assert table.score_matrix()[qi, table.model_index(model)] == e.score
        assert table.cost_matrix()[qi, table.model_index(model)] == pytest.approx(
            e.calls[0].cost_usd)


def test_traces_without_grades_say_how_to_add_them(tmp_path: Path) -> None:
    path, _ = serve_and_export(tmp_path, 4, grade=False)
    with pytest.raises(UserError) as e:
        table_from_traces(path)
    msg = str(e.value)
    assert "none of the 4 runs" in msg and "Orchestra.feedback" in msg and "--grades" in msg


def test_fan_out_runs_are_skipped_and_counted(tmp_path: Path) -> None:
    from orchestra.policies.baselines import EnsemblePolicy

    path, _ = serve_and_export(tmp_path, 3, policy=EnsemblePolicy(pool(), k=2))
    with pytest.raises(UserError, match="3 called several models"):
        observations_from_traces(path)


# ---------------------------------------------------------------------- the bandit


def test_bandit_trained_from_its_own_log_rebuilds_its_online_state(tmp_path: Path) -> None:
    path, served = serve_and_export(tmp_path, 40)
    obs, stats = observations_from_traces(path)
    assert stats["used"] == 40
    from orchestra.training.bandit_fit import BanditObservation

    trained, counts = train_bandit(
        pool(), [BanditObservation(o.query, o.task, o.model, o.score, o.cost_usd) for o in obs],
        embedder="hashing", params={"dim": 32, "seed": 0})
    assert counts == {"learned": 40, "skipped_unknown_model": 0}
    assert trained.learner.updates == served.learner.updates == 40
    np.testing.assert_allclose(trained.learner.A, served.learner.A, atol=1e-9)
    np.testing.assert_allclose(trained.learner.bq, served.learner.bq, atol=1e-9)


def test_bandit_learns_the_specialists_from_logged_feedback(tmp_path: Path) -> None:
    path, _ = serve_and_export(tmp_path, 120, seed=1)
    from orchestra.training.bandit_fit import BanditObservation

    obs, _ = observations_from_traces(path)
    trained, _ = train_bandit(
        pool(), [BanditObservation(o.query, o.task, o.model, o.score, o.cost_usd) for o in obs],
        embedder="hashing", params={"dim": 32, "seed": 0})
    trained.alpha = 0.0
    rng = np.random.default_rng(7)
    hits = 0
    for i in range(20):
        topic = "X" if i % 2 == 0 else "Y"
        q = query(topic, rng)
        name, _ = trained.choose(trained.featurize(q, f"topic-{topic}"), q, lam=0.5)
        hits += name == ("A" if topic == "X" else "B")
    assert hits >= 16


def test_train_bandit_command_from_traces(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCHESTRA_CACHE_DIR", str(tmp_path / "cache"))
    path, _ = serve_and_export(tmp_path, 12)
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(pool().to_yaml(), encoding="utf-8")
    no_pool = CliRunner().invoke(train_app, ["bandit", "--data", str(path), "--embedder",
                                             "hashing"])
    assert no_pool.exit_code == 2 and "--pool" in " ".join(no_pool.output.split())
    out = tmp_path / "state.npz"
    res = CliRunner().invoke(train_app, ["bandit", "--data", str(path), "--pool", str(pool_file),
                                         "--embedder", "hashing", "--param", "dim=32",
                                         "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["feedback"] == "logged" and summary["n_train"] == 12
    assert sum(summary["observations"].values()) == 12
    assert set(summary["phase_seconds"]) == {"load", "embed", "fit", "save", "total"}
    assert json.loads(Path(f"{out}.json").read_text())["n_train"] == 12
    served = BanditPolicy(pool(), path=str(out), embedder=HashingEmbedder(), dim=32)
    assert served.learner.updates == 12


def test_bandit_on_a_full_table_learns_every_cell() -> None:
    rows = [{"query_id": f"q{i}", "query": f"please add {i}", "task": "t", "model": m,
             "score": 1.0, "cost_usd": 0.001} for i in range(5) for m in PRICES]
    obs = observations_from_table(OutcomeTable(rows))
    trained, counts = train_bandit(pool(), obs, embedder="hashing", params={"dim": 16})
    assert counts["learned"] == 15 and list(trained.learner.n) == [5, 5, 5]


# ---------------------------------------------------------------------- knn / mlp / mf / escalate


@pytest.mark.parametrize("kind", ["knn", "mf"])
def test_knn_and_mf_train_from_logged_feedback(tmp_path: Path, kind: str) -> None:
    path, _ = serve_and_export(tmp_path, 80, seed=2)
    data = prepare_data(table_from_traces(path), HashingEmbedder(), source=str(path))
    assert data.logged and np.isnan(data.scores).any()
    params = ({"k": 10, "weighting": "distance", "task_weight": 0.0, "prior": 0.0} if kind == "knn"
              else {"dim": 8, "weight_decay": 1e-4, "lr": 3e-2, "ensemble": 1, "max_epochs": 40,
                    "patience": 10})
    router = train_router(kind, data, params=params, folds=3)  # type: ignore[arg-type]
    assert router.config["feedback"] == "logged"
    assert router.config["cv"]["selected_by"].startswith("oof_bce")
    cal = router.config["calibration"]
    assert np.isfinite(cal["quality"]).all() and np.isfinite(cal["cost_per_query"]).all()


def test_cv_on_logged_feedback_ranks_by_log_loss(tmp_path: Path) -> None:
    from orchestra.training.cv import cross_validate

    path, _ = serve_and_export(tmp_path, 60, seed=3)
    data = prepare_data(table_from_traces(path), HashingEmbedder())
    grid: dict[str, list[Any]] = {"k": [1, 15], "weighting": ["uniform"], "task_weight": [0.0], "prior": [0.0]}
    cv = cross_validate("knn", data, grid=grid, folds=3)
    best = min(cv.table, key=lambda r: r["oof_bce"])
    assert cv.best == best["params"] and cv.selected_by == "bce"


def test_escalate_and_gnn_refuse_traces_naming_what_is_missing(tmp_path: Path) -> None:
    path, _ = serve_and_export(tmp_path, 4)
    res = CliRunner().invoke(train_app, ["escalate", "--data", str(path)])
    text = " ".join(res.output.split())
    assert res.exit_code == 2
    assert "logged bandit feedback" in text and "other models' outcomes" in text
    assert "bandit, knn, mlp or mf" in text
    res = CliRunner().invoke(train_app, ["gnn", "--data", str(path)])
    assert res.exit_code == 2 and "cannot learn from" in " ".join(res.output.split())


def test_train_knn_command_from_traces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCHESTRA_CACHE_DIR", str(tmp_path / "cache"))
    path, _ = serve_and_export(tmp_path, 30, seed=4)
    res = CliRunner().invoke(train_app, ["knn", "--data", str(path), "--embedder", "hashing",
                                         "--folds", "3", "--param", "k=5", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["feedback"] == "logged" and summary["traces"]["used"] == 30
    cfg = json.loads((Path(summary["artifact"]) / "config.json").read_text())
    assert set(cfg["phase_seconds"]) == {"load", "embed", "fit", "save", "total"}
    assert summary["seconds"] == summary["phase_seconds"]["total"]
    assert summary["phase_seconds"]["total"] >= summary["phase_seconds"]["fit"]


# ---------------------------------------------------------------------- progress and phases


def test_redirected_progress_prints_plain_lines() -> None:
    buf = io.StringIO()
    con = Console(file=buf, width=200)  # not a terminal, as when stderr is redirected
    assert not con.is_terminal
    with stage_progress(con, interval_s=0.0) as progress:
        emb = embed_with_progress(lambda t: np.ones((len(t), 2)), [f"q{i}" for i in range(10)],
                                  progress, chunk=4)
    assert emb.shape == (10, 2)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("embedding: 0/10")
    assert any(line.startswith("embedding: 4/10 (40%)") for line in lines)
    assert lines[-1].startswith("embedding: 10/10 (100%)") and lines[-1].endswith("done")


def test_plain_progress_is_throttled_between_start_and_end() -> None:
    buf = io.StringIO()
    with stage_progress(Console(file=buf, width=200), interval_s=3600.0) as progress:
        for i in range(101):
            progress("fit", i, 100)
    lines = buf.getvalue().splitlines()
    assert [ln.split(":")[1].split()[0] for ln in lines] == ["0/100", "100/100"]


def test_chunked_embedding_equals_one_call() -> None:
    texts = [f"text number {i} about sums" for i in range(11)]
    emb = HashingEmbedder()
    np.testing.assert_array_equal(embed_with_progress(emb.embed, texts, None, chunk=3),
                                  np.asarray(emb.embed(texts)))


def test_phase_timer_totals_cover_the_phases() -> None:
    t = PhaseTimer()
    with t.phase("load"):
        pass
    with t.phase("fit"):
        pass
    s = t.seconds()
    assert set(s) == {"load", "fit", "total"} and s["total"] >= s["load"]


def test_train_command_repairs_on_request_and_reports_them(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCHESTRA_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        q = query("X" if i % 2 else "Y", rng)
        rows += [{"query_id": f"q{i}", "query": q, "task": "t", "model": m,
                  "score": float(right(m, q)), "cost_usd": PRICES[m][0] / 1000} for m in PRICES]
    rows[0]["score"] = 2.0
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, rows[4]]), encoding="utf-8")
    args = ["knn", "--data", str(path), "--embedder", "hashing", "--folds", "3", "--param", "k=5",
            "--json"]
    strict = CliRunner().invoke(train_app, args)
    assert strict.exit_code == 2 and "--clip-scores" in " ".join(strict.output.split())
    res = CliRunner().invoke(train_app, [*args, "--clip-scores", "--dedupe"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    rep = summary["repairs"]
    assert (rep["clipped_scores"], rep["duplicate_pairs"], rep["conflicting_rows"]) == (1, 1, 0)
    assert summary["n_train"] == 30

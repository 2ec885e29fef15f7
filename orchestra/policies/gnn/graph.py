"""The routing graph: node features from outcome tables and pools, and the ``HeteroData`` builder.

Node types and their raw features (``D`` = embedding size, 384 for MiniLM):

==========  ==================================================================================
``query``   text embedding ``(V·D)``, one unit vector per *view* (the whole text as the embedder
            reads it, and its last 800 characters, where prompts put the actual question;
            :func:`orchestra.policies.learned.features.embed_queries`) + standardised log
            length ``(1)``
``task``    embedding of the task name ``(D)``
``model``   embedding of ``"<name>. <prose description>"`` ``(D)`` + standardised side features
            ``(S = 6)``: log input price, log output price, log parameters and its known-flag,
            log context window and its known-flag (see :func:`model_side_features`)
``agent``   embedding of ``"<name>. <description>"`` ``(D)``
==========  ==================================================================================

Relations (source → destination; "context" queries are those whose outcomes are visible):

==============================  ==========================================  ==================
``query -rated-> model``        a context query's observed outcome          ``[score, cost]``
``model -rated_by-> query``     the same, reversed                          ``[score, cost]``
``query -near-> query``         context query to each query among whose     ``[cosine sim]``
                                k nearest neighbours it is (same task first
                                when the query is linked to its task)
``task -has-> query``           task to each of its queries                 none
``query -of-> task``            context query to its task                   none
``model -on-> task``            a model's mean outcome on a task            ``[score, cost]``
``task -rates-> model``         the same, reversed                          ``[score, cost]``
``model -runs-> agent``         which model an agent may run on             none
``model -like-> model``         every other model, so a model without       ``[cos, Δin, Δout,
                                outcomes learns from the models whose       Δsize]``
                                descriptions and prices resemble its own
==============================  ==========================================  ==================

``cost`` is the standardised log USD of the call. Queries that are *not* context (held-out
training targets, validation and new queries at serving time) only receive messages: no edge
leaves them, so the states of the context graph never depend on them. That is what lets
serving precompute the whole training graph once and add a query as one new node.

A model enters through its features alone: nothing here is a per-model free embedding, so a
model never seen in training is routed to from its description, price, size and context
window (and, when given, a handful of profiled outcomes as ``rated`` edges).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError

if TYPE_CHECKING:
    from torch_geometric.data import HeteroData

    from orchestra.embed import Embedder
    from orchestra.outcomes import OutcomeTable
    from orchestra.spec import AgentSpec, ModelSpec

__all__ = [
    "ATTENTION_RELATIONS",
    "KNOWN_CONTEXT_WINDOWS",
    "LIKE",
    "NODE_TYPES",
    "RELATIONS",
    "SIDE_FEATURES",
    "TRAINING_AGENTS",
    "VOTE",
    "EdgeSet",
    "GraphData",
    "Normalizer",
    "agent_text",
    "build_graph",
    "model_side_features",
    "model_text",
    "nearest",
    "parse_params_b",
]

NODE_TYPES = ("query", "task", "model", "agent")
#: Every relation and the size of its edge attributes.
RELATIONS: dict[tuple[str, str, str], int] = {
    ("query", "rated", "model"): 2,
    ("model", "rated_by", "query"): 2,
    ("query", "near", "query"): 1,
    ("task", "has", "query"): 0,
    ("query", "of", "task"): 0,
    ("model", "on", "task"): 2,
    ("task", "rates", "model"): 2,
    ("model", "runs", "agent"): 0,
    ("model", "like", "model"): 4,
}
#: Relations aggregated with attention (the rest: mean).
ATTENTION_RELATIONS = (("query", "near", "query"), ("model", "like", "model"))
#: Nearest context queries whose outcomes the neighbour vote reads (not message passing).
VOTE = ("query", "vote", "query")
#: Model-to-model resemblance (message passing, and borrowing estimates for new models).
LIKE = ("model", "like", "model")
SIDE_FEATURES = (
    "log_input_price",
    "log_output_price",
    "log_params_b",
    "params_known",
    "log_context_window",
    "context_known",
)
_SCALED = np.array([True, True, True, False, True, False])

#: Context windows (tokens) of the models of the bundled benchmarks, as published at release.
#: Outcome tables do not record them; a pool's ``ModelSpec.context_window`` is used at serving.
KNOWN_CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4-1106-preview": 128_000,
    "gpt-3.5-turbo-1106": 16_385,
    "claude-v2": 100_000,
    "claude-v1": 100_000,
    "claude-instant-v1": 100_000,
    "meta/llama-2-70b-chat": 4_096,
    "meta/code-llama-instruct-34b-chat": 16_384,
    "mistralai/mixtral-8x7b-chat": 32_768,
    "mistralai/mistral-7b-chat": 8_192,
    "zero-one-ai/Yi-34B-Chat": 4_096,
    "WizardLM/WizardLM-13B-V1.2": 4_096,
    "qwen2.5-7b-instruct": 32_768,
    "codegemma-7b": 8_192,
    "gemma-2-9b-it": 8_192,
    "llama-3.1-8b-instruct": 131_072,
    "llama3-chatqa-1.5-8b": 8_192,
    "llama3-chatqa-1.5-70b": 8_192,
    "mistral-7b-instruct-v0.3": 32_768,
    "llama-3.3-nemotron-super-49b-v1": 131_072,
    "llama-3.1-nemotron-51b-instruct": 131_072,
}

#: Agents used when training on outcome tables, which record no agent: each step connects
#: them at random to the models, so the network learns that, without agent-specific
#: outcomes, an agent's wording must not move a (query, model) prediction.
TRAINING_AGENTS: tuple[tuple[str, str], ...] = (
    ("assistant", "General assistant that answers the question."),
    ("solver", "Solves the task step by step and gives the final answer."),
    ("concise", "Answers concisely and correctly, with the answer only."),
    ("coder", "Writes and explains code."),
)

_PARAMS = re.compile(r"(?<![\w.])(?:(\d+)\s*x\s*)?(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)


def parse_params_b(*texts: str | None) -> float | None:
    """Parameter count in billions from a size, name or description ("8x7B" → 56, "135M").

    The first text with a match wins; ``None`` when none states a size.

    Example:
        >>> parse_params_b(None, "mistralai/mixtral-8x7b-chat")
        56.0
    """
    for text in texts:
        if not text:
            continue
        for m in _PARAMS.finditer(text):
            value = float(m.group(2)) * float(m.group(1) or 1)
            if m.group(3).lower() == "b":
                return value
            if value >= 10:  # "135M" is a size; "1M context" is not
                return value / 1000.0
    return None


def model_side_features(
    input_price: float | None,
    output_price: float | None,
    params_b: float | None,
    context_window: int | None,
) -> NDArray[np.float32]:
    """Raw (unscaled) side features of a model, in the order of :data:`SIDE_FEATURES`.

    Prices are USD per 1M tokens (unknown: 0); sizes and context windows are logged, with a
    known-flag so that "unknown" is not confused with "small".
    """
    return np.array(
        [
            math.log(float(input_price or 0.0) + 0.01),
            math.log(float(output_price or 0.0) + 0.01),
            math.log(params_b) if params_b else 0.0,
            1.0 if params_b else 0.0,
            math.log2(context_window / 1024.0) if context_window else 0.0,
            1.0 if context_window else 0.0,
        ],
        dtype=np.float32,
    )


def model_text(name: str, description: str | None) -> str:
    """The text embedded for a model node."""
    d = (description or "").strip()
    return f"{name}. {d}" if d else name


def agent_text(name: str, description: str | None) -> str:
    """The text embedded for an agent node."""
    d = (description or "").strip()
    return f"{name}. {d}" if d else name


def nearest(
    queries: NDArray[np.float32],
    keys: NDArray[np.float32],
    k: int,
    *,
    exclude_self: bool = False,
    query_groups: NDArray[np.int64] | None = None,
    key_groups: NDArray[np.int64] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The ``k`` keys most cosine-similar to each query (rows are unit vectors).

    With groups (task indices; -1 is unknown), keys of the query's own group rank first
    (similarity + 2 for the ranking only), so neighbours come from the same task while it
    has enough queries, as the kNN router's ``task_weight=2`` does.

    Returns:
        ``(index (n, k), similarity (n, k))``, best first; the similarities are the cosines.
    """
    k = min(k, keys.shape[0] - (1 if exclude_self else 0))
    if k <= 0 or queries.shape[0] == 0:
        return np.zeros((queries.shape[0], 0), np.int64), np.zeros((queries.shape[0], 0), np.float32)
    out_idx = np.empty((queries.shape[0], k), np.int64)
    out_sim = np.empty((queries.shape[0], k), np.float32)
    # float64 products: BLAS sums in an order that depends on its thread count, and float32
    # round-off could then reorder near-ties; the neighbour lists must not depend on threads.
    keys_t = np.asarray(keys, np.float64).T
    for start in range(0, queries.shape[0], 1024):  # bounded memory for large tables
        stop = min(start + 1024, queries.shape[0])
        sim = np.asarray(queries[start:stop], np.float64) @ keys_t
        rank = sim.copy()
        if query_groups is not None and key_groups is not None:
            qg = query_groups[start:stop, None]
            rank += 2.0 * ((qg == key_groups[None, :]) & (qg >= 0))
        if exclude_self:
            rows = np.arange(stop - start)
            rank[rows, rows + start] = -np.inf
        idx = np.argpartition(-rank, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(rank, idx, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, axis=1)
        out_idx[start:stop] = idx
        out_sim[start:stop] = np.take_along_axis(sim, idx, axis=1)
    return out_idx, out_sim


@dataclass
class Neighbours:
    """Each query's nearest queries, most similar first, ``(Q, K)`` index and cosine arrays:
    ``any_task`` by similarity alone, ``same_task`` with the query's own task first (used
    when the query is linked to its task)."""

    any_task: tuple[NDArray[np.int64], NDArray[np.float32]]
    same_task: tuple[NDArray[np.int64], NDArray[np.float32]]

    @classmethod
    def of(cls, emb: NDArray[np.float32], tasks: NDArray[np.int64], k: int) -> Neighbours:
        """Precompute both lists over one set of queries (each excludes itself)."""
        return cls(nearest(emb, emb, k, exclude_self=True),
                   nearest(emb, emb, k, exclude_self=True, query_groups=tasks, key_groups=tasks))


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class Normalizer:
    """Statistics that standardise costs, query lengths and model side features.

    Computed on training data only and saved with the model, so serving scales a new model's
    price or a new query's length exactly as training did.
    """

    cost_mu: float
    cost_sd: float
    len_mu: float
    len_sd: float
    side_mu: list[float]
    side_sd: list[float]

    @classmethod
    def fit(
        cls, cost: NDArray[np.floating[Any]], log_len: NDArray[np.floating[Any]],
        side: NDArray[np.floating[Any]],
    ) -> Normalizer:
        lc = np.log(np.asarray(cost, np.float64)[np.isfinite(cost)] + 1e-9)
        mu = side.mean(axis=0)
        sd = side.std(axis=0)
        mu = np.where(_SCALED, mu, 0.0)
        sd = np.where(_SCALED & (sd > 1e-6), sd, 1.0)
        return cls(
            cost_mu=float(lc.mean()) if lc.size else 0.0,
            cost_sd=float(lc.std()) + 1e-6 if lc.size else 1.0,
            len_mu=float(np.mean(log_len)) if len(log_len) else 0.0,
            len_sd=float(np.std(log_len)) + 1e-6 if len(log_len) else 1.0,
            side_mu=[float(x) for x in mu],
            side_sd=[float(x) for x in sd],
        )

    def cost(self, usd: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """USD → standardised log cost."""
        return ((np.log(np.asarray(usd, np.float64) + 1e-9) - self.cost_mu) / self.cost_sd).astype(np.float32)

    def usd(self, z: Any) -> Any:
        """Standardised log cost → USD (numpy or torch)."""
        if isinstance(z, np.ndarray):
            return np.exp(z * self.cost_sd + self.cost_mu)
        return (z * self.cost_sd + self.cost_mu).exp()

    def length(self, log_len: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        return ((np.asarray(log_len, np.float64) - self.len_mu) / self.len_sd).astype(np.float32)

    def side(self, side: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        return ((side - np.asarray(self.side_mu)) / np.asarray(self.side_sd)).astype(np.float32)


def embed_query_texts(embedder: Embedder, texts: Sequence[str],
                      views: Sequence[str] = ("full", "tail")) -> NDArray[np.float32]:
    """Query embeddings, one unit vector per view, concatenated and scaled to unit norm.

    The same features as the kNN / MLP / MF routers
    (:func:`orchestra.policies.learned.features.embed_queries`): ``full`` is the text as the
    embedder reads it (MiniLM: its first 256 word pieces), ``tail`` its last 800 characters.
    Few-shot prompts repeat the same examples first and put the question last, so without the
    tail view queries of one task look alike.

    Shapes:
        ``(len(texts), embedder.dim * len(views))``.
    """
    from orchestra.policies.learned.features import embed_queries

    return np.ascontiguousarray(embed_queries(embedder, list(texts), views=tuple(views)),
                                dtype=np.float32)


def log_length(texts: Sequence[str]) -> NDArray[np.float32]:
    """``log(1 + characters)`` of each text: the query's size, which drives its cost."""
    return np.log1p(np.array([len(t) for t in texts], dtype=np.float64)).astype(np.float32)


@dataclass
class GraphData:
    """Everything the routing graph is built from, as plain arrays (picklable, ``ray.put``-able).

    Attributes:
        query_ids: ``(Q,)`` query ids.
        query_emb: ``(Q, D)`` unit text embeddings.
        query_log_len: ``(Q,)`` ``log(1 + characters)``.
        query_task: ``(Q,)`` index into ``task_names`` (-1: unknown).
        score: ``(Q, M)`` observed scores in [0, 1], NaN where not recorded.
        cost: ``(Q, M)`` observed USD, NaN where not recorded.
        task_names / task_emb: ``(T,)`` / ``(T, D)``.
        model_names / model_emb / model_side: ``(M,)`` / ``(M, D)`` / ``(M, S)`` raw side
            features (:func:`model_side_features`).
        agent_names / agent_emb: ``(A,)`` / ``(A, D)``.
        embedder: the embedder's name (queries at serving must use the same one).
        query_views: how queries were embedded (``("full", "tail")``; see
            :func:`embed_query_texts`).
        cost_estimated: the costs were estimated, not recorded (LLMRouter).
    """

    query_ids: list[str]
    query_emb: NDArray[np.float32]
    query_log_len: NDArray[np.float32]
    query_task: NDArray[np.int64]
    score: NDArray[np.float32]
    cost: NDArray[np.float32]
    task_names: list[str]
    task_emb: NDArray[np.float32]
    model_names: list[str]
    model_emb: NDArray[np.float32]
    model_side: NDArray[np.float32]
    agent_names: list[str]
    agent_emb: NDArray[np.float32]
    embedder: str
    cost_estimated: bool = False
    query_views: tuple[str, ...] = ("full",)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def n_models(self) -> int:
        return len(self.model_names)

    @property
    def dim(self) -> int:
        """Size of a text embedding (task, model and agent features)."""
        return int(self.task_emb.shape[1])

    @property
    def query_dim(self) -> int:
        """Size of a query embedding (one text embedding per view)."""
        return int(self.query_emb.shape[1])

    @classmethod
    def from_table(
        cls,
        table: OutcomeTable,
        embedder: Embedder,
        *,
        agents: Sequence[tuple[str, str]] = TRAINING_AGENTS,
        context_windows: Mapping[str, int] | None = None,
        views: Sequence[str] = ("full", "tail"),
    ) -> GraphData:
        """Embed a table's queries, tasks and models (the slow part; cached by the embedder).

        Args:
            table: the outcome table.
            embedder: text embedder (use a cached one).
            agents: ``(name, description)`` of the agent nodes.
            views: query views (:func:`embed_query_texts`).
            context_windows: context window per model name (default
                :data:`KNOWN_CONTEXT_WINDOWS`); unknown ones get the "unknown" flag.
        """
        windows = KNOWN_CONTEXT_WINDOWS if context_windows is None else context_windows
        texts = table.query_texts
        tasks = sorted(set(table.query_tasks))
        tindex = {t: i for i, t in enumerate(tasks)}
        info = table.models_info
        models = list(table.models)
        mtexts, side = [], []
        for m in models:
            mi = info.get(m)
            desc = mi.description if mi else ""
            mtexts.append(model_text(m, desc))
            side.append(
                model_side_features(
                    mi.input_price if mi else None,
                    mi.output_price if mi else None,
                    parse_params_b(mi.size if mi else None, m, desc),
                    windows.get(m),
                )
            )
        q_emb = embed_query_texts(embedder, texts, views)
        emb = embedder.embed([f"task: {t}" for t in tasks] + mtexts
                             + [agent_text(n, d) for n, d in agents])
        nt, nm = len(tasks), len(models)
        return cls(
            query_ids=list(table.queries),
            query_emb=q_emb,
            query_log_len=log_length(texts),
            query_task=np.array([tindex[t] for t in table.query_tasks], dtype=np.int64),
            score=table.score_matrix().astype(np.float32),
            cost=table.cost_matrix().astype(np.float32),
            task_names=tasks,
            task_emb=np.ascontiguousarray(emb[:nt]),
            model_names=models,
            model_emb=np.ascontiguousarray(emb[nt : nt + nm]),
            model_side=np.stack(side) if side else np.zeros((0, len(SIDE_FEATURES)), np.float32),
            agent_names=[n for n, _ in agents],
            agent_emb=np.ascontiguousarray(emb[nt + nm :]),
            embedder=embedder.name,
            cost_estimated=bool(getattr(table, "estimated_cost", False)),
            query_views=tuple(views),
        )

    def subset(self, queries: NDArray[np.intp] | Sequence[int]) -> GraphData:
        """The same graph restricted to some queries (rows)."""
        q = np.asarray(queries, dtype=np.intp)
        return GraphData(
            query_ids=[self.query_ids[i] for i in q],
            query_emb=self.query_emb[q],
            query_log_len=self.query_log_len[q],
            query_task=self.query_task[q],
            score=self.score[q],
            cost=self.cost[q],
            task_names=self.task_names,
            task_emb=self.task_emb,
            model_names=self.model_names,
            model_emb=self.model_emb,
            model_side=self.model_side,
            agent_names=self.agent_names,
            agent_emb=self.agent_emb,
            embedder=self.embedder,
            cost_estimated=self.cost_estimated,
            query_views=self.query_views,
            meta=dict(self.meta),
        )

    def save(self, path: str | Path) -> Path:
        """Write as ``.npz`` (arrays) with the lists and flags in a JSON entry."""
        p = Path(path)
        header = {
            "query_ids": self.query_ids, "task_names": self.task_names,
            "model_names": self.model_names, "agent_names": self.agent_names,
            "embedder": self.embedder, "cost_estimated": self.cost_estimated, "meta": self.meta,
            "query_views": list(self.query_views),
        }
        np.savez_compressed(
            p, header=np.array(json.dumps(header)), query_emb=self.query_emb,
            query_log_len=self.query_log_len, query_task=self.query_task, score=self.score,
            cost=self.cost, task_emb=self.task_emb, model_emb=self.model_emb,
            model_side=self.model_side, agent_emb=self.agent_emb,
        )
        return p

    @classmethod
    def load(cls, path: str | Path) -> GraphData:
        """Read what :meth:`save` wrote."""
        try:
            z = np.load(Path(path), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"expected a GNN graph file at {str(path)!r} (got {e})") from e
        with z:
            h = json.loads(str(z["header"]))
            return cls(
                query_ids=h["query_ids"], query_emb=z["query_emb"],
                query_log_len=z["query_log_len"], query_task=z["query_task"], score=z["score"],
                cost=z["cost"], task_names=h["task_names"], task_emb=z["task_emb"],
                model_names=h["model_names"], model_emb=z["model_emb"],
                model_side=z["model_side"], agent_names=h["agent_names"],
                agent_emb=z["agent_emb"], embedder=h["embedder"],
                cost_estimated=h["cost_estimated"], meta=h.get("meta", {}),
                query_views=tuple(h.get("query_views", ["full"])),
            )

    def with_models(
        self,
        names: Sequence[str],
        emb: NDArray[np.float32],
        side: NDArray[np.float32],
        score: NDArray[np.float32] | None = None,
        cost: NDArray[np.float32] | None = None,
    ) -> GraphData:
        """This graph with extra model nodes (new models; outcomes NaN unless profiled)."""
        n = len(names)
        s = np.full((self.n_queries, n), np.nan, np.float32) if score is None else score
        c = np.full((self.n_queries, n), np.nan, np.float32) if cost is None else cost
        out = self.subset(np.arange(self.n_queries))
        out.model_names = [*self.model_names, *names]
        out.model_emb = np.concatenate([self.model_emb, emb]).astype(np.float32)
        out.model_side = np.concatenate([self.model_side, side]).astype(np.float32)
        out.score = np.concatenate([self.score, s], axis=1)
        out.cost = np.concatenate([self.cost, c], axis=1)
        return out

    def with_agents(self, names: Sequence[str], emb: NDArray[np.float32]) -> GraphData:
        """This graph with its agent nodes replaced."""
        out = self.subset(np.arange(self.n_queries))
        out.agent_names = list(names)
        out.agent_emb = np.asarray(emb, np.float32)
        return out


def spec_side_features(m: ModelSpec) -> NDArray[np.float32]:
    """Raw side features of a pool model (prices, size parsed from its texts, context window)."""
    return model_side_features(
        m.input_price,
        m.output_price,
        parse_params_b(m.name, m.id, m.description, " ".join(m.tags)),
        m.context_window,
    )


def spec_texts(models: Sequence[ModelSpec], agents: Sequence[AgentSpec]) -> tuple[list[str], list[str]]:
    """Texts embedded for pool models and agents."""
    return ([model_text(m.name, m.description) for m in models],
            [agent_text(a.name, a.description) for a in agents])


# --------------------------------------------------------------------------------------------
# Edges and HeteroData


@dataclass
class EdgeSet:
    """Which parts of :class:`GraphData` are visible in one graph.

    Attributes:
        context: ``(Q,)`` bool, queries whose outcomes (``visible`` pairs) are edges.
        visible: ``(Q, M)`` bool, observed (query, model) pairs shown as ``rated`` edges
            (only counted for context queries).
        task_known: ``(Q,)`` bool, whether a query is linked to its task.
        agent_model: ``(A, M)`` bool, which agent may run on which model.
        k: neighbours per query for ``near`` edges.
        vote_k: neighbours per query for the neighbour vote (``query -vote-> query``; 0: the
            ``near`` edges).
    """

    context: NDArray[np.bool_]
    visible: NDArray[np.bool_]
    task_known: NDArray[np.bool_]
    agent_model: NDArray[np.bool_]
    k: int
    vote_k: int = 0


def _near_edges(
    neighbours: Neighbours, use_task: NDArray[np.bool_], context: NDArray[np.bool_], k: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """The first ``k`` context neighbours of every query (from the precomputed lists)."""
    idx = np.where(use_task[:, None], neighbours.same_task[0], neighbours.any_task[0])
    sims = np.where(use_task[:, None], neighbours.same_task[1], neighbours.any_task[1])
    ok = context[idx]
    rank = np.cumsum(ok, axis=1)
    ok &= rank <= k
    dst, col = np.nonzero(ok)
    return idx[dst, col], dst.astype(np.int64), sims[dst, col]


def build_graph(
    data: GraphData,
    norm: Normalizer,
    edges: EdgeSet,
    neighbours: Neighbours,
) -> HeteroData:
    """Build the ``HeteroData`` of one view of the data.

    Args:
        data: the arrays.
        norm: feature and cost scaling.
        edges: what is visible (context queries, outcome pairs, task links, agent links).
        neighbours: each query's nearest queries (:class:`Neighbours`); the first ``edges.k``
            context queries of its list (same task first when it is linked to its task)
            become ``near`` edges.

    Returns:
        A ``HeteroData`` with ``x`` for every node type, ``edge_index`` for every relation,
        ``edge_attr`` where the relation has attributes, the vote's neighbours (:data:`VOTE`),
        ``query.outcomes`` ``(Q, M, 2)`` / ``query.observed`` ``(Q, M)`` (the visible outcomes
        as dense tables), ``task.summary`` ``(T, M, 3)`` (each model's mean outcome per task)
        and ``query.task_index`` ``(Q,)`` (-1 where a query is not linked to its task).
    """
    import torch
    from torch_geometric.data import HeteroData

    g = HeteroData()
    nm = data.score.shape[1]
    g["query"].x = torch.from_numpy(
        np.concatenate([data.query_emb, norm.length(data.query_log_len)[:, None]], axis=1)
    )
    g["task"].x = torch.from_numpy(np.asarray(data.task_emb, np.float32))
    g["model"].x = torch.from_numpy(
        np.concatenate([data.model_emb, norm.side(data.model_side)], axis=1).astype(np.float32)
    )
    g["agent"].x = torch.from_numpy(np.asarray(data.agent_emb, np.float32))

    def put(et: tuple[str, str, str], src: Any, dst: Any, attr: Any = None) -> None:
        g[et].edge_index = torch.from_numpy(np.stack([np.asarray(src, np.int64), np.asarray(dst, np.int64)]))
        if attr is not None:
            g[et].edge_attr = torch.from_numpy(np.asarray(attr, np.float32).reshape(len(src), -1))

    # Outcomes of context queries: as edges, and as dense (query, model) tables for the
    # neighbour vote (zeros where not visible).
    observed = np.isfinite(data.score) & np.isfinite(data.cost)
    vis = observed & edges.visible & edges.context[:, None]
    qi, mi = np.nonzero(vis)
    attr = np.stack([data.score[qi, mi], norm.cost(data.cost[qi, mi])], axis=1)
    dense = np.zeros((data.score.shape[0], nm, 2), np.float32)
    dense[qi, mi] = attr
    g["query"].outcomes = torch.from_numpy(dense)
    g["query"].observed = torch.from_numpy(vis)
    put(("query", "rated", "model"), qi, mi, attr)
    put(("model", "rated_by", "query"), mi, qi, attr)
    # Nearest context queries.
    use_task = (data.query_task >= 0) & edges.task_known
    src, dst, sim = _near_edges(neighbours, use_task, edges.context, edges.k)
    put(("query", "near", "query"), src, dst, sim[:, None])
    if edges.vote_k and edges.vote_k != edges.k:
        src, dst, sim = _near_edges(neighbours, use_task, edges.context, edges.vote_k)
    # Not a message-passing relation: read by the neighbour vote only.
    put(VOTE, src, dst, sim[:, None])
    # Tasks.
    has_task = (data.query_task >= 0) & edges.task_known
    q_t = np.flatnonzero(has_task)
    put(("task", "has", "query"), data.query_task[q_t], q_t)
    q_c = np.flatnonzero(has_task & edges.context)
    put(("query", "of", "task"), q_c, data.query_task[q_c])
    # Model-on-task summaries from the visible outcomes.
    nt = len(data.task_names)
    known = data.query_task[qi] >= 0
    ti, mj = data.query_task[qi][known], mi[known]
    flat = ti * nm + mj
    count = np.bincount(flat, minlength=nt * nm).astype(np.float64)
    s_sum = np.bincount(flat, weights=attr[known, 0], minlength=nt * nm)
    c_sum = np.bincount(flat, weights=attr[known, 1], minlength=nt * nm)
    cells = np.flatnonzero(count > 0)
    summ = np.stack([s_sum[cells] / count[cells], c_sum[cells] / count[cells]], axis=1)
    put(("model", "on", "task"), cells % nm, cells // nm, summ)
    put(("task", "rates", "model"), cells // nm, cells % nm, summ)
    # The same summaries as a dense (task, model) table, for each query a prior from its task:
    # [mean score, mean cost, log(1 + count)], zeros where the task has no outcome of the model.
    table = np.zeros((nt * nm, 3), np.float32)
    table[cells, :2] = summ
    table[cells, 2] = np.log1p(count[cells])
    g["task"].summary = torch.from_numpy(table.reshape(nt, nm, 3))
    g["query"].task_index = torch.from_numpy(np.where(has_task, data.query_task, -1).astype(np.int64))
    # Agents.
    ai, am = np.nonzero(edges.agent_model)
    put(("model", "runs", "agent"), am, ai)
    # Model to model: description cosine and differences of the scaled log prices and size
    # (size only where both are known), from every other model.
    if nm > 1:
        src, dst = np.nonzero(~np.eye(nm, dtype=bool))
        memb = np.asarray(data.model_emb, np.float64)
        unit = memb / np.maximum(np.linalg.norm(memb, axis=1, keepdims=True), 1e-12)
        side = norm.side(data.model_side)
        both = data.model_side[src, 3] * data.model_side[dst, 3]
        like = np.stack([
            np.sum(unit[src] * unit[dst], axis=1),
            side[src, 0] - side[dst, 0],
            side[src, 1] - side[dst, 1],
            (side[src, 2] - side[dst, 2]) * both,
        ], axis=1)
        put(("model", "like", "model"), src, dst, like)
    return g

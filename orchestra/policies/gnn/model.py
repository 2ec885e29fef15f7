"""``GNNRouter``: a heterogeneous message-passing network that predicts score and cost per
(query, agent, model).

Architecture (``F`` = ``hidden``, ``D`` = embedding size, ``S`` = model side features):

1. Encoders per node type: ``query (V·D+1) -> F``, ``task (D) -> F``, ``model (D+S) -> F``
   (two layers), ``agent (D) -> F``.
2. ``layers`` x :class:`~orchestra.policies.gnn.hetero_layer.HeteroRouterLayer` over the
   relations of :data:`~orchestra.policies.gnn.graph.RELATIONS` (``near`` with attention).
3. Low-variance estimates per candidate pair ``e_qm``, read from the graph:
   :class:`~orchestra.policies.gnn.neighbour_vote.NeighbourVote`, the similarity-weighted
   outcomes ``v_qm`` (score, cost, evidence) of the query's nearest context queries with that
   model (paths ``q <-vote- q' -rated-> m``); the task prior ``t_qm``, the model's mean outcome
   on the query's task (the ``on`` edge of ``(m, task(q))``, zeros when unknown); and both as
   borrowed from similar models (:class:`~orchestra.policies.gnn.similar_models.SimilarModels`
   over ``like`` edges), ``ṽ_qm`` and ``t̃_qm`` — what a new model starts from.
4. Two heads on a candidate ``(q, a, m)`` with
   ``z = [h_q ‖ h_m ‖ h_a ‖ h_q ⊙ h_m ‖ v_qm ‖ t_qm ‖ ṽ_qm ‖ t̃_qm]``:

   - score: ``ŝ = σ(MLP_s(z) + a·logit(t_qm) + b·logit(v_qm) + c·logit(t̃_qm) + d·logit(ṽ_qm))``
     (learned ``a..d``; the own terms only where the model has evidence, the borrowed ones only
     where it has none), the probability that the answer is right (expected score);
   - cost: ``ĉ = MLP_c([z ‖ x_q^len ‖ x_m^side])``, the standardised log USD of the call,
     its own channel so that quality and price are never traded inside the network; the
     raw length and price features skip straight to it because cost ≈ length × price.

The network has no per-node free parameters: every node's state is computed from its
features and its edges, so new queries, tasks, models and agents need no retraining.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from orchestra.policies.gnn.graph import (
    ATTENTION_RELATIONS,
    LIKE,
    NODE_TYPES,
    RELATIONS,
    SIDE_FEATURES,
    VOTE,
)
from orchestra.policies.gnn.hetero_layer import EdgeType, HeteroRouterLayer
from orchestra.policies.gnn.neighbour_vote import NeighbourVote
from orchestra.policies.gnn.similar_models import SimilarModels

__all__ = ["GNNRouter", "ModelConfig", "task_prior"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a :class:`GNNRouter` (saved with every checkpoint).

    Args:
        emb_dim: text embedding size ``D`` (task, model and agent features).
        query_dim: query embedding size (``D`` per query view; 0: same as ``emb_dim``).
        hidden: node state size ``F``.
        layers: message-passing rounds.
        dropout: dropout in encoders, layers and heads.
        attention: attention over ``near`` neighbours (else a plain mean).
    """

    emb_dim: int = 384
    query_dim: int = 0
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    attention: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mlp(inp: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out))


class GNNRouter(nn.Module):
    r"""Predicts, for a query and each candidate (agent, model), the expected score and cost.

    Args:
        config: sizes (:class:`ModelConfig`).

    Shapes:
        - **forward input:** a ``HeteroData`` (see :func:`~orchestra.policies.gnn.graph.build_graph`)
          and candidate indices ``pairs`` :math:`(3, P)`: rows (query, model, agent)
        - **forward output:** ``(score_logit (P,), cost_z (P,))``; ``sigmoid(score_logit)`` is
          the expected score, ``cost_z`` the standardised log USD
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d, f, s = config.emb_dim, config.hidden, len(SIDE_FEATURES)
        dq = config.query_dim or d
        self.side_dim = s
        self.encoders = nn.ModuleDict(
            {
                "query": nn.Linear(dq + 1, f),
                "task": nn.Linear(d, f),
                "model": _mlp(d + s, f, f, 0.0),
                "agent": nn.Linear(d, f),
            }
        )
        self.in_drop = nn.Dropout(config.dropout)
        att: Sequence[EdgeType] = ATTENTION_RELATIONS if config.attention else ()
        self.layers = nn.ModuleList(
            [
                HeteroRouterLayer(NODE_TYPES, RELATIONS, f, dropout=config.dropout, attention=att)
                for _ in range(config.layers)
            ]
        )
        self.vote = NeighbourVote()
        self.similar = SimilarModels(RELATIONS[LIKE])
        # Weights of the logits added to the score logit: task prior, vote, and the two as
        # borrowed from similar models (used where the model has no evidence of its own).
        self.skip = nn.Parameter(torch.tensor([1.0, 0.0, 1.0, 0.0]))
        self.score_head = _mlp(4 * f + 12, f, 1, config.dropout)
        self.cost_head = _mlp(4 * f + 12 + 1 + s, f, 1, config.dropout)

    # ---------------------------------------------------------------------------- encoders
    def encode(self, x_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Raw features → initial states ``h^0`` (``(N_t, F)`` per type)."""
        return {t: torch.relu(self.encoders[t](self.in_drop(x))) for t, x in x_dict.items()}

    def states(
        self,
        x_dict: Mapping[str, Tensor],
        edge_index_dict: Mapping[EdgeType, Tensor],
        edge_attr_dict: Mapping[EdgeType, Tensor],
    ) -> list[dict[str, Tensor]]:
        """Full-graph message passing; every layer's states ``[h^0, ..., h^L]``."""
        h = self.encode(x_dict)
        out = [h]
        for layer in self.layers:
            h = layer(h, edge_index_dict, edge_attr_dict)
            out.append(h)
        return out

    def extend(
        self,
        context: Sequence[Mapping[str, Tensor]],
        x_new: Mapping[str, Tensor],
        edge_index_dict: Mapping[EdgeType, Tensor],
        edge_attr_dict: Mapping[EdgeType, Tensor],
    ) -> dict[str, Tensor]:
        """Final states of new nodes that only *receive* from a precomputed graph.

        Gives exactly what :meth:`states` gives for nodes that send no edges (held-out
        queries), at the cost of the new nodes only.

        Args:
            context: the graph's per-layer states from :meth:`states` (``L + 1`` dicts).
            x_new: raw features of the new nodes by type.
            edge_index_dict: edges from context nodes (row 0) into new nodes (row 1).
            edge_attr_dict: their attributes.

        Returns:
            ``{type: (N_new_t, F)}``.
        """
        h = self.encode(x_new)
        for layer, ctx in zip(self.layers, context, strict=False):
            h = layer(ctx, edge_index_dict, edge_attr_dict, x_dst=h)
        return h

    # ---------------------------------------------------------------------------- heads
    def heads(
        self, h_q: Tensor, h_m: Tensor, h_a: Tensor, evidence: Tensor, q_len: Tensor,
        m_side: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Score logit and standardised log cost of candidates.

        Args:
            h_q, h_m, h_a: final states of each candidate's query, model and agent.
            evidence: ``[vote ‖ task prior ‖ borrowed vote ‖ borrowed prior]``, 3 columns each
                (estimated score, estimated cost, log evidence), from :meth:`evidence`.
            q_len, m_side: the raw length and model side features (for the cost head).

        Shapes:
            inputs ``(P, F)`` x3, ``(P, 12)``, ``(P, 1)``, ``(P, S)``; outputs ``(P,)``, ``(P,)``.
        """
        z = torch.cat([h_q, h_m, h_a, h_q * h_m, evidence], dim=-1)
        # The estimates also enter the logit directly, so the network starts from them and
        # learns corrections: on small, noisy outcome tables a model's mean score on the task
        # is hard to beat and must not be lost to overfitting. A model without evidence of its
        # own (a new one) starts from what similar models did instead.
        vote, prior, b_vote, b_prior = evidence.split(3, dim=-1)
        own_p, own_v = prior[:, 2] > 0, vote[:, 2] > 0
        skip = (self.skip[0] * _logit(prior[:, 0]) * own_p
                + self.skip[1] * _logit(vote[:, 0]) * own_v
                + self.skip[2] * _logit(b_prior[:, 0]) * (~own_p & (b_prior[:, 2] > 0))
                + self.skip[3] * _logit(b_vote[:, 0]) * (~own_v & (b_vote[:, 2] > 0)))
        score = self.score_head(z).squeeze(-1) + skip
        cost = self.cost_head(torch.cat([z, q_len, m_side], dim=-1)).squeeze(-1)
        return score, cost

    def borrowed(self, votes: Tensor, summary: Tensor, like: tuple[Tensor, Tensor] | None
                 ) -> tuple[Tensor, Tensor]:
        """Votes ``(Q, M, 3)`` and task summaries ``(T, M, 3)`` as borrowed from similar models
        (:class:`SimilarModels`); zeros without ``like`` edges."""
        if like is None or like[0].numel() == 0:
            return torch.zeros_like(votes), torch.zeros_like(summary)
        w = self.similar.weights(like[1])
        return (self.similar(votes[:, :, :2], votes[:, :, 2] > 0, like[0], w),
                self.similar(summary[:, :, :2], summary[:, :, 2] > 0, like[0], w))

    def forward(self, graph: Any, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """Predict for candidate ``(query, model, agent)`` index triples of ``graph``."""
        if pairs.dim() != 2 or pairs.shape[0] != 3:
            raise ValueError(f"expected pairs of shape (3, P) (got {tuple(pairs.shape)})")
        x = graph.x_dict
        h = self.states(x, graph.edge_index_dict, graph.edge_attr_dict)[-1]
        near = graph[VOTE]
        votes = self.vote(near.edge_index, near.edge_attr, graph["query"].outcomes,
                          graph["query"].observed, x["query"].shape[0])
        summary = graph["task"].summary
        like = (graph[LIKE].edge_index, graph[LIKE].edge_attr) if LIKE in graph.edge_types else None
        b_votes, b_summary = self.borrowed(votes, summary, like)
        q, m, a = pairs
        tq = graph["query"].task_index[q]
        evidence = torch.cat([votes[q, m], task_prior(summary, tq, m), b_votes[q, m],
                              task_prior(b_summary, tq, m)], dim=-1)
        return self.heads(
            h["query"][q], h["model"][m], h["agent"][a], evidence,
            x["query"][q, -1:], x["model"][m, -self.side_dim :],
        )


def _logit(p: Tensor, eps: float = 0.02) -> Tensor:
    p = p.clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def task_prior(summary: Tensor, task: Tensor, model: Tensor) -> Tensor:
    """``summary[task, model]`` per pair, zeros where the task is unknown (-1).

    Shapes:
        ``summary`` ``(T, M, 3)``, ``task`` / ``model`` ``(P,)``; output ``(P, 3)``.
    """
    known = task >= 0
    out = summary[task.clamp(min=0), model]
    return out * known[:, None].to(out.dtype)

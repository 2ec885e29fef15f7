"""What one GNN training step sees: GraphRouter's masked-edge prediction, masking whole queries.

A step holds a chunk of the training queries out as *targets*: :func:`step_edges` removes their
outcome edges, so they enter the graph as new queries do at serving time (only receiving
messages), drops a random ``edge_dropout`` share of the context edges, hides the task of a
``task_dropout`` share of the targets, draws which agents may run which models, and with
probability ``cold_model_prob`` makes one model *cold* (all but 0..``max_profile`` of its
outcome edges removed), so that predicting a model from its description and price alone is
trained too. :func:`target_pairs` lists the (target, model, agent) pairs the loss is computed
on, with their recorded score and standardised log cost.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from orchestra.policies.gnn.graph import EdgeSet
from orchestra.training.gnn_config import GNNTrainConfig
from orchestra.training.gnn_data import Bundle

__all__ = ["step_edges", "target_pairs"]


def step_edges(bundle: Bundle, config: GNNTrainConfig, targets: NDArray[np.int64],
               rng: np.random.Generator) -> EdgeSet:
    """The edges of one step's graph, with ``targets`` held out (drawn with ``rng``)."""
    d = bundle.data
    nq, nm = d.score.shape
    context = np.zeros(nq, dtype=bool)
    context[bundle.train_idx] = True
    context[targets] = False
    visible = rng.random((nq, nm)) >= config.edge_dropout
    if nm > 1 and rng.random() < config.cold_model_prob:
        cold = int(rng.integers(nm))
        visible[:, cold] = False
        ctx = np.flatnonzero(context)
        keep = int(rng.integers(0, config.max_profile + 1)) if config.max_profile else 0
        if keep and len(ctx):
            visible[rng.choice(ctx, size=min(keep, len(ctx)), replace=False), cold] = True
    task_known = np.ones(nq, dtype=bool)
    task_known[targets] = rng.random(len(targets)) >= config.task_dropout
    agents = rng.random((len(d.agent_names), nm)) < 0.7
    lonely = ~agents.any(axis=0)
    agents[rng.integers(len(d.agent_names), size=int(lonely.sum())), np.flatnonzero(lonely)] = True
    return EdgeSet(context=context, visible=visible, task_known=task_known, agent_model=agents,
                   k=config.k, vote_k=config.vote_k)


def target_pairs(bundle: Bundle, targets: NDArray[np.int64], agents: NDArray[np.bool_],
                 rng: np.random.Generator) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]:
    """(3, P) (query, model, agent) of every observed target pair, with its score and cost."""
    d = bundle.data
    obs = np.isfinite(d.score[targets]) & np.isfinite(d.cost[targets])
    ti, mi = np.nonzero(obs)
    q = targets[ti]
    # A random agent among those that may run the model.
    weights = agents[:, mi].T.astype(np.float64)
    weights /= weights.sum(axis=1, keepdims=True)
    u = rng.random(len(mi))[:, None]
    ai = (u > np.cumsum(weights, axis=1)).sum(axis=1)
    return (np.stack([q, mi, np.minimum(ai, agents.shape[0] - 1)]).astype(np.int64),
            d.score[q, mi].astype(np.float32), bundle.norm.cost(d.cost[q, mi]))

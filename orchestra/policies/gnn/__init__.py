"""The GNN routing policy: a heterogeneous graph of queries, tasks, models and agents.

Modules (torch and torch-geometric load only when one of them is imported):

- :mod:`~orchestra.policies.gnn.edge_attr_conv`, :mod:`~orchestra.policies.gnn.hetero_layer`,
  :mod:`~orchestra.policies.gnn.neighbour_vote`, :mod:`~orchestra.policies.gnn.similar_models`
  (re-exported by :mod:`~orchestra.policies.gnn.layers`): the layers, one a file;
- :mod:`~orchestra.policies.gnn.graph`: node features and the ``HeteroData`` builder;
- :mod:`~orchestra.policies.gnn.model`: :class:`GNNRouter`, the network (score and cost heads);
- :mod:`~orchestra.policies.gnn.policy`: :class:`GNNScorer` and :class:`GNNPolicy` (serving).

Training: ``orchestra train gnn`` (the training package, above this one). Importing this package
registers the ``gnn`` policy (``--policy gnn --param path=DIR``, recipe ``policies/gnn.yaml``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestra.policies.registry import register_policy

if TYPE_CHECKING:
    from orchestra.embed import Embedder
    from orchestra.policies.gnn.policy import GNNPolicy
    from orchestra.spec import Pool

__all__ = ["make_gnn_policy"]


def make_gnn_policy(pool: Pool, path: str | None = None, lam: float | None = None, k: int = 1,
                    agent: str | None = None, embedder: Embedder | None = None,
                    profile: str | None = None) -> GNNPolicy:
    """GNN router over (query, task, agent, model): max predicted score - lam·cost (path=, lam=,
    k=, profile= outcomes of new models on training queries)."""
    try:
        from orchestra.policies.gnn.policy import GNNPolicy
    except ImportError as e:  # torch / torch-geometric missing
        from orchestra.errors import UserError

        raise UserError(
            f"the gnn policy needs torch and torch-geometric (got {e.msg!r}); install them with "
            "pip install 'orchestra[learn]'"
        ) from e
    return GNNPolicy(pool, path=path, lam=lam, k=k, agent=agent, embedder=embedder,
                     profile=profile)


def __getattr__(name: str) -> Any:
    # Lazy access to the heavy classes: orchestra.policies.gnn.GNNPolicy etc.
    lazy = {
        "GNNPolicy": "orchestra.policies.gnn.policy",
        "GNNScorer": "orchestra.policies.gnn.policy",
        "GNNRouter": "orchestra.policies.gnn.model",
        "ModelConfig": "orchestra.policies.gnn.model",
        "EdgeAttrConv": "orchestra.policies.gnn.edge_attr_conv",
        "HeteroRouterLayer": "orchestra.policies.gnn.hetero_layer",
        "NeighbourVote": "orchestra.policies.gnn.neighbour_vote",
        "SimilarModels": "orchestra.policies.gnn.similar_models",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_policy(
    "gnn", make_gnn_policy,
    doc="learned GNN router over (query, task, agent, model): max score - lam·cost "
        "(path=, lam=, k=, profile=)",
)

"""The GNN router's layers (one a file, PyG style), re-exported in one place.

- :class:`EdgeAttrConv` (``edge_attr_conv.py``): edge-attribute-aware messages over one relation,
  mean or attention aggregation.
- :class:`HeteroRouterLayer` (``hetero_layer.py``): one round over every relation, with a
  per-type root weight, residual and LayerNorm.
- :class:`NeighbourVote` (``neighbour_vote.py``): each (query, model) pair reads the outcomes of
  the query's nearest context queries with that model.
- :class:`SimilarModels` (``similar_models.py``): estimates borrowed from the models that
  resemble a model (how a new model gets a starting point).
"""

from orchestra.policies.gnn.edge_attr_conv import EdgeAttrConv
from orchestra.policies.gnn.hetero_layer import EdgeType, HeteroRouterLayer, edge_key
from orchestra.policies.gnn.neighbour_vote import NeighbourVote
from orchestra.policies.gnn.similar_models import SimilarModels

__all__ = ["EdgeAttrConv", "EdgeType", "HeteroRouterLayer", "NeighbourVote", "SimilarModels",
           "edge_key"]

"""``HeteroRouterLayer``: one round of message passing over every relation of the routing graph."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from orchestra.policies.gnn.edge_attr_conv import EdgeAttrConv

__all__ = ["EdgeType", "HeteroRouterLayer", "edge_key"]

#: ``(source node type, relation, destination node type)``, as in PyG's ``HeteroData``.
EdgeType = tuple[str, str, str]


def edge_key(edge_type: EdgeType) -> str:
    """The ``ModuleDict`` key of a relation (``"query__near__query"``)."""
    return "__".join(edge_type)


class HeteroRouterLayer(nn.Module):
    r"""One heterogeneous message-passing layer with a residual connection and layer norm.

    For a node :math:`i` of type :math:`\tau(i)`, with one :class:`EdgeAttrConv` per relation
    :math:`r = (\sigma, \rho, \tau(i))` that points into its type,

    .. math::
        \mathbf{h}_i' = \operatorname{LayerNorm}_{\tau(i)}\Big(\mathbf{h}_i + \operatorname{Dropout}
        \big(\operatorname{ReLU}\big(\mathbf{W}^{\tau(i)}_{\text{root}} \mathbf{h}_i
        + \sum_{r} \mathbf{a}^{r}_i\big)\big)\Big),

    where :math:`\mathbf{a}^{r}_i` is relation :math:`r`'s aggregated message
    (:class:`EdgeAttrConv`). Weights are shared by all nodes of a type and all edges of a
    relation, and aggregation is a (weighted) mean, so the layer is equivariant to the order of
    the nodes of every type: permuting the model or agent nodes permutes the outputs the same
    way. LayerNorm (not BatchNorm) keeps a node's output independent of the other nodes in the
    batch, so serving one new query gives exactly what full-graph inference gives.

    Source and destination states may differ (``x_dst``): serving passes the precomputed
    states of the training graph as sources and only the new query (and task) nodes as
    destinations, so a decision costs a few small matrix products.

    Args:
        node_types: the node types (``query``, ``task``, ``model``, ``agent``).
        relations: ``{edge type: edge attribute size}`` (0: no attributes).
        channels: hidden size of every node state.
        dropout: dropout on the update.
        attention: relations whose neighbours are weighted by attention (others: mean).

    Shapes:
        - **input:** ``x_dict[t]`` :math:`(|\mathcal{V}_t|, F)`; ``edge_index_dict[r]``
          :math:`(2, |\mathcal{E}_r|)`; ``edge_attr_dict[r]`` :math:`(|\mathcal{E}_r|, D_r)`
          for relations with attributes; optional ``x_dst[t]`` :math:`(|\mathcal{V}'_t|, F)`
        - **output:** ``{t: (|V'_t|, F)}`` for every type of the destinations (``x_dst``, else
          ``x_dict``)
    """

    def __init__(
        self,
        node_types: Sequence[str],
        relations: Mapping[EdgeType, int],
        channels: int,
        *,
        dropout: float = 0.0,
        attention: Sequence[EdgeType] = (),
    ) -> None:
        super().__init__()
        self.node_types = tuple(node_types)
        self.relations = dict(relations)
        for src, _, dst in self.relations:
            if src not in self.node_types or dst not in self.node_types:
                raise ValueError(
                    f"expected relation endpoints among node types {self.node_types!r} "
                    f"(got {src!r} -> {dst!r})"
                )
        self.channels = channels
        self.convs = nn.ModuleDict(
            {
                edge_key(et): EdgeAttrConv(channels, channels, dim, attention=et in attention)
                for et, dim in self.relations.items()
            }
        )
        self.root = nn.ModuleDict({t: nn.Linear(channels, channels) for t in self.node_types})
        self.norm = nn.ModuleDict({t: nn.LayerNorm(channels) for t in self.node_types})
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x_dict: Mapping[str, Tensor],
        edge_index_dict: Mapping[EdgeType, Tensor],
        edge_attr_dict: Mapping[EdgeType, Tensor] | None = None,
        x_dst: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Update destination node states from their in-neighbours.

        Args:
            x_dict: source states by node type.
            edge_index_dict: edges by relation, indexing ``x_dict`` (row 0) and the
                destinations (row 1). Relations missing here send nothing.
            edge_attr_dict: edge attributes by relation (for relations with ``edge_dim > 0``).
            x_dst: destination states by type; ``None`` updates ``x_dict`` itself.

        Returns:
            New states for every node type of the destinations.
        """
        dst = x_dict if x_dst is None else x_dst
        attrs = edge_attr_dict or {}
        agg = {t: self.root[t](h) for t, h in dst.items()}
        for et, edge_index in edge_index_dict.items():
            src_t, _, dst_t = et
            if dst_t not in dst or et not in self.relations or edge_index.numel() == 0:
                continue
            conv = self.convs[edge_key(et)]
            agg[dst_t] = agg[dst_t] + conv((x_dict[src_t], dst[dst_t]), edge_index, attrs.get(et))
        return {
            t: self.norm[t](h + self.dropout(torch.relu(agg[t]))) for t, h in dst.items()
        }

    def extra_repr(self) -> str:
        return f"channels={self.channels}, relations={len(self.relations)}"

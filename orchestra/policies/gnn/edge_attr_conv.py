"""``EdgeAttrConv``: message passing over one relation, with edge attributes and optional attention.

One layer a file, as in PyTorch Geometric. :class:`~orchestra.policies.gnn.hetero_layer.HeteroRouterLayer`
runs one of these per relation of the routing graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

__all__ = ["EdgeAttrConv"]


class EdgeAttrConv(MessagePassing):
    r"""Edge-attribute-aware message passing from source to destination nodes of one relation.

    The message from node :math:`j` to node :math:`i` along edge :math:`(j, i)` with
    attribute :math:`\mathbf{e}_{ji}` is a two-layer perceptron of both (GINE-style)

    .. math::
        \mathbf{m}_{j \to i} = \mathbf{W}_2 \operatorname{ReLU}\left(\mathbf{W}_1 \mathbf{h}_j
        + \mathbf{W}_e \mathbf{e}_{ji} + \mathbf{b}_1\right) + \mathbf{b}_2,

    or :math:`\mathbf{m}_{j \to i} = \mathbf{W}_1 \mathbf{h}_j + \mathbf{b}_1` for a relation
    without attributes. The non-linearity matters: with a message linear in
    :math:`\mathbf{e}_{ji}`, a query's mean over its outcome edges would only keep the mean
    score over models, not *which* model scored what. Node :math:`i` receives the weighted mean
    over its in-neighbours :math:`\mathcal{N}(i)`

    .. math::
        \mathbf{a}_i = \sum_{j \in \mathcal{N}(i)} \alpha_{ji} \, \mathbf{m}_{j \to i},

    with :math:`\alpha_{ji} = 1 / |\mathcal{N}(i)|` (``attention=False``) or, GATv2-style,

    .. math::
        \alpha_{ji} = \operatorname{softmax}_{j \in \mathcal{N}(i)} \left(
            \mathbf{a}^\top \operatorname{LeakyReLU}\left(
                \mathbf{W}_q \mathbf{h}_i + \mathbf{m}_{j \to i} \right) \right)

    (``attention=True``). A node without in-neighbours receives zeros. Both rules are invariant
    to the order of the neighbours (and equivariant to the order of the nodes), so the network
    does not depend on how models, agents or queries happen to be listed.

    Args:
        in_channels: size of source and destination node states :math:`\mathbf{h}`.
        out_channels: size of the aggregated message :math:`\mathbf{a}_i`.
        edge_dim: size of the edge attributes (0: the relation carries none).
        attention: weight neighbours by learned attention instead of a plain mean.
        negative_slope: LeakyReLU slope in the attention score.

    Shapes:
        - **input:** source states :math:`(|\mathcal{V}_s|, F_{in})`, destination states
          :math:`(|\mathcal{V}_d|, F_{in})`, ``edge_index`` :math:`(2, |\mathcal{E}|)` (row 0
          indexes sources, row 1 destinations), ``edge_attr`` :math:`(|\mathcal{E}|, D)` or
          ``None`` when ``edge_dim == 0``
        - **output:** :math:`(|\mathcal{V}_d|, F_{out})`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        edge_dim: int = 0,
        *,
        attention: bool = False,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__(aggr="sum", node_dim=0)
        if in_channels < 1 or out_channels < 1 or edge_dim < 0:
            raise ValueError(
                "expected in_channels >= 1, out_channels >= 1 and edge_dim >= 0 (got "
                f"{in_channels!r}, {out_channels!r}, {edge_dim!r})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.edge_dim = edge_dim
        self.attention = attention
        self.negative_slope = negative_slope
        # W_1 h_j is computed once per node, not once per edge (a model node has thousands of
        # outcome edges); W_e e_ji and the second layer run per edge.
        self.lin = nn.Linear(in_channels, out_channels)
        self.lin_edge = nn.Linear(edge_dim, out_channels, bias=False) if edge_dim else None
        self.lin_out = nn.Linear(out_channels, out_channels) if edge_dim else None
        if attention:
            self.lin_query = nn.Linear(in_channels, out_channels, bias=False)
            self.att = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin.reset_parameters()
        if self.lin_edge is not None and self.lin_out is not None:
            self.lin_edge.reset_parameters()
            self.lin_out.reset_parameters()
        if self.attention:
            self.lin_query.reset_parameters()
            nn.init.normal_(self.att, std=self.out_channels**-0.5)

    def forward(
        self,
        x: tuple[Tensor, Tensor],
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
    ) -> Tensor:
        """Aggregate messages into every destination node.

        Args:
            x: ``(source states, destination states)``.
            edge_index: ``(2, E)`` long tensor of (source, destination) indices.
            edge_attr: ``(E, edge_dim)`` attributes, ``None`` when ``edge_dim == 0``.

        Returns:
            ``(num_destinations, out_channels)``.
        """
        x_src, x_dst = x
        if self.edge_dim and (edge_attr is None or edge_attr.shape != (edge_index.shape[1], self.edge_dim)):
            got = None if edge_attr is None else tuple(edge_attr.shape)
            raise ValueError(
                f"expected edge_attr of shape ({edge_index.shape[1]}, {self.edge_dim}) (got {got})"
            )
        src = edge_index[0]
        # Transform nodes then gather (many edges per node) or gather then transform (a new
        # node's few edges into a large precomputed graph); the same result either way.
        msg = self.lin(x_src)[src] if src.numel() >= x_src.shape[0] else self.lin(x_src[src])
        if self.lin_edge is not None and self.lin_out is not None:
            assert edge_attr is not None
            msg = self.lin_out(torch.relu(msg + self.lin_edge(edge_attr)))
        index = edge_index[1]
        num_dst = x_dst.shape[0]
        if self.attention:
            score = nn.functional.leaky_relu(
                msg + self.lin_query(x_dst)[index], self.negative_slope
            ) @ self.att
            alpha = softmax(score, index, num_nodes=num_dst)
        else:
            deg = torch.zeros(num_dst, dtype=msg.dtype, device=msg.device)
            deg.index_add_(0, index, torch.ones_like(index, dtype=msg.dtype))
            alpha = 1.0 / deg.clamp(min=1.0)[index]
        return self.propagate(edge_index, msg=msg, alpha=alpha, size=(x_src.shape[0], num_dst))

    def message(self, msg: Tensor, alpha: Tensor) -> Tensor:  # type: ignore[override]
        return msg * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
            f"edge_dim={self.edge_dim}, attention={self.attention})"
        )

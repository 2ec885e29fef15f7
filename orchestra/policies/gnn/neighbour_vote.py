"""``NeighbourVote``: each (query, model) pair reads the outcomes of the query's neighbours with
that model — message passing along ``query <-near- query' -rated-> model`` paths."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["NeighbourVote"]


class NeighbourVote(nn.Module):
    r"""Similarity-weighted outcomes of a query's nearest context queries, per model.

    For a query :math:`q` with near neighbours :math:`\mathcal{N}(q)` (context queries, edge
    similarity :math:`s_{nq}`) and a model :math:`m`, over the neighbours whose outcome with
    :math:`m` is observed (:math:`o_{nm} = 1`),

    .. math::
        w_{nq} = \exp\big(\beta\,(s_{nq} - 1)\big), \qquad
        \mathbf{v}_{qm} = \frac{\sum_{n} o_{nm}\, w_{nq}\, \mathbf{y}_{nm}}
                               {\sum_{n} o_{nm}\, w_{nq}}, \qquad
        c_{qm} = \log\Big(1 + \sum_{n} o_{nm}\, w_{nq}\Big),

    where :math:`\mathbf{y}_{nm}` is the observed (score, standardised log cost) and
    :math:`\beta > 0` a learned sharpness. The output is :math:`[\mathbf{v}_{qm} \,\Vert\,
    c_{qm}]`; a pair with no observed neighbour gets zeros (so :math:`c_{qm} = 0` says "no
    evidence", as for a model that joined without outcomes). This is the signal of a kNN
    router, given to the GNN's heads next to the node states, computed on the same graph.

    Args:
        beta: initial sharpness :math:`\beta`.

    Shapes:
        - **input:** ``edge_index`` :math:`(2, |\mathcal{E}|)` (row 0: neighbour, row 1:
          query), ``sim`` :math:`(|\mathcal{E}|,)`, ``outcomes`` :math:`(|\mathcal{V}_s|, M, 2)`,
          ``observed`` :math:`(|\mathcal{V}_s|, M)` bool, ``num_dst``
        - **output:** :math:`(\text{num\_dst}, M, 3)`
    """

    def __init__(self, beta: float = 10.0) -> None:
        super().__init__()
        self.log_beta = nn.Parameter(torch.tensor(math.log(beta)))

    def forward(self, edge_index: Tensor, sim: Tensor, outcomes: Tensor, observed: Tensor,
                num_dst: int) -> Tensor:
        src, dst = edge_index
        m = outcomes.shape[1]
        w = torch.exp(self.log_beta.exp() * (sim.reshape(-1) - 1.0))  # (E,)
        ow = observed[src].to(w.dtype) * w[:, None]  # (E, M)
        den = torch.zeros(num_dst, m, dtype=w.dtype, device=w.device).index_add_(0, dst, ow)
        num = torch.zeros(num_dst, m, 2, dtype=w.dtype, device=w.device).index_add_(
            0, dst, ow[:, :, None] * outcomes[src]
        )
        vote = num / den.clamp(min=1e-12)[:, :, None]
        return torch.cat([vote, torch.log1p(den)[:, :, None]], dim=-1)

    def extra_repr(self) -> str:
        return f"beta={self.log_beta.exp().item():.3g}"

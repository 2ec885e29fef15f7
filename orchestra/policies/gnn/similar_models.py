"""``SimilarModels``: estimates for a model borrowed from the models that resemble it, along
``model -like-> model`` edges — how a model without outcomes gets a starting point."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SimilarModels"]


class SimilarModels(nn.Module):
    r"""Weighted mean of other models' estimates, weights learned from how alike they are.

    Each ``like`` edge :math:`(m' \to m)` carries attributes :math:`\mathbf{e}_{m'm}`
    (description cosine, price and size differences) and gets a positive weight
    :math:`w_{m'm} = \exp(\operatorname{MLP}(\mathbf{e}_{m'm}))`. For a table of per-row
    estimates :math:`\mathbf{y}_{rm'}` (a row is a task or a query) with evidence flags
    :math:`o_{rm'}`,

    .. math::
        \tilde{\mathbf{y}}_{rm} = \frac{\sum_{m'} o_{rm'}\, w_{m'm}\, \mathbf{y}_{rm'}}
                                       {\sum_{m'} o_{rm'}\, w_{m'm}}, \qquad
        \tilde{c}_{rm} = \log\Big(1 + \sum_{m'} o_{rm'}\, w_{m'm}\Big),

    output :math:`[\tilde{\mathbf{y}}_{rm} \,\Vert\, \tilde{c}_{rm}]` (zeros without evidence).
    A new model, which has no outcome of its own, thus starts from what the models most like
    it achieved on the same task, or on the same query's neighbours. The weights depend only
    on edge attributes (no per-model parameters), so they apply to unseen models as they are.

    Args:
        edge_dim: size of the ``like`` edge attributes.
        hidden: width of the weight MLP.

    Shapes:
        - **weights input:** ``edge_attr`` :math:`(|\mathcal{E}|, D)`; **output** :math:`(|\mathcal{E}|,)`
        - **input:** ``values`` :math:`(R, M, V)`, ``evidence`` :math:`(R, M)` bool,
          ``edge_index`` :math:`(2, |\mathcal{E}|)` (row 0: the model borrowed from), ``weight``
          :math:`(|\mathcal{E}|,)`
        - **output:** :math:`(R, M, V + 1)`
    """

    def __init__(self, edge_dim: int = 4, hidden: int = 8) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(edge_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def weights(self, edge_attr: Tensor) -> Tensor:
        """Positive weight of each ``like`` edge."""
        return torch.exp(self.score(edge_attr).squeeze(-1).clamp(-20.0, 20.0))

    def forward(self, values: Tensor, evidence: Tensor, edge_index: Tensor, weight: Tensor) -> Tensor:
        r, m, v = values.shape
        src, dst = edge_index
        ew = evidence[:, src].to(values.dtype) * weight[None, :]  # (R, E)
        den = torch.zeros(r, m, dtype=values.dtype, device=values.device).index_add_(1, dst, ew)
        num = torch.zeros(r, m, v, dtype=values.dtype, device=values.device).index_add_(
            1, dst, ew[:, :, None] * values[:, src]
        )
        out = num / den.clamp(min=1e-12)[:, :, None]
        return torch.cat([out, torch.log1p(den)[:, :, None]], dim=-1)

"""What GNN router training reads (driver side, before Ray): a :class:`Bundle`.

:func:`prepare_bundle` loads the outcome table, drops excluded models, embeds every query, task,
model description and agent (cached on disk), splits the training queries into train /
validation (stratified by task, seeded) and precomputes each query's nearest neighbours. The
bundle is numpy arrays, ``ray.put`` once and read by every worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError
from orchestra.policies.gnn.graph import GraphData, Neighbours, Normalizer
from orchestra.training.gnn_config import GNNTrainConfig
from orchestra.training.lambdas import cost_scale_of

if TYPE_CHECKING:
    from orchestra.outcomes import OutcomeTable

__all__ = ["Bundle", "bundle_from_table", "prepare_bundle"]

#: Neighbours kept per query before filtering to context queries (>= k / (1 - held-out share)).
_TOP_K = 64


@dataclass
class Bundle:
    """What workers train on: the graph arrays, scaling, the split and the neighbour lists."""

    data: GraphData
    norm: Normalizer
    train_idx: NDArray[np.int64]
    val_idx: NDArray[np.int64]
    neighbours: Neighbours
    cost_scale: float


def prepare_bundle(config: GNNTrainConfig) -> Bundle:
    """Load ``config.data``, embed it on this machine (cached) and split it."""
    from orchestra.outcomes import load_outcomes

    return bundle_from_table(load_outcomes(config.data), config)


def bundle_from_table(table: OutcomeTable, config: GNNTrainConfig, embedder: Any = None) -> Bundle:
    """Embed a table and split it (see :func:`prepare_bundle`)."""
    from orchestra.embed import get_embedder

    if config.exclude_models:
        unknown = [m for m in config.exclude_models if m not in table.models]
        if unknown:
            raise UserError(
                f"--exclude-model {unknown[0]!r} is not a model of {config.data!r}; expected one "
                f"of {table.models!r}"
            )
        table = table.filter(models=[m for m in table.models if m not in config.exclude_models])
    emb = embedder if embedder is not None else get_embedder(config.embedder)
    data = GraphData.from_table(table, emb, views=config.views)
    if data.n_queries < 10:
        raise UserError(f"expected at least 10 training queries in {config.data!r} (got {data.n_queries})")
    split_seed = config.seed if config.split_seed is None else config.split_seed
    train_idx, val_idx = _split(data.query_task, config.val_fraction, split_seed)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise UserError(f"val_fraction={config.val_fraction!r} leaves an empty train or validation split")
    tr = data.subset(train_idx)
    norm = Normalizer.fit(tr.cost, tr.query_log_len, data.model_side)
    # Enough candidates that k context queries remain after held-out ones are filtered out.
    top = max(_TOP_K, 2 * max(config.k, config.vote_k) + 16)
    neighbours = Neighbours.of(data.query_emb, data.query_task, top)
    return Bundle(data=data, norm=norm, train_idx=train_idx, val_idx=val_idx,
                  neighbours=neighbours, cost_scale=cost_scale_of(tr.cost))


def _split(tasks: NDArray[np.int64], fraction: float, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(train, validation) indices: ``fraction`` of each task's queries, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(tasks), dtype=bool)
    for t in np.unique(tasks):
        g = np.flatnonzero(tasks == t)
        val[rng.permutation(g)[: round(len(g) * fraction)]] = True
    return np.flatnonzero(~val).astype(np.int64), np.flatnonzero(val).astype(np.int64)

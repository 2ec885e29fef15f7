"""What a learned router trains on: a table's queries embedded, with score and cost matrices."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError
from orchestra.policies.learned.features import VIEWS, FloatArray, embed_queries, embedder_key_of

if TYPE_CHECKING:
    from orchestra.embed import Embedder
    from orchestra.outcomes.table import OutcomeTable

__all__ = ["RouterData", "prepare_data"]


@dataclass
class RouterData:
    """Everything a router trains on, as arrays over the same query order.

    Attributes:
        embeddings: ``(n, d)`` float32 unit rows.
        tasks: the task name of each query.
        lengths: ``(n,)`` characters of each query text.
        scores: ``(n, m)`` recorded scores in [0, 1]; NaN where not recorded.
        costs: ``(n, m)`` recorded costs in USD; NaN where not recorded.
        models: the ``m`` model names (column order).
        embedder: the embedder's name (identifies model and settings).
        embedder_key: ``"minilm"`` / ``"hashing"`` when it came from
            :func:`~orchestra.embed.get_embedder`.
        source: where the data came from (a table name or path), for the artifact's record.
        logged: the outcomes are logged bandit feedback (exported traces: one model's outcome
            per query, :mod:`orchestra.training.trace_data`), not a full table; training then
            selects by out-of-fold log-loss and calibrates λ with predicted outcomes for the
            choices no one observed.
    """

    embeddings: NDArray[np.float32]
    tasks: list[str]
    lengths: FloatArray
    scores: FloatArray
    costs: FloatArray
    models: list[str]
    embedder: str
    embedder_key: str | None = None
    source: str = ""
    views: tuple[str, ...] = ("full", "tail")
    tail_chars: int = 800
    logged: bool = False

    @property
    def n(self) -> int:
        return int(self.scores.shape[0])

    def subset(self, idx: NDArray[np.intp]) -> RouterData:
        return RouterData(
            embeddings=self.embeddings[idx], tasks=[self.tasks[i] for i in idx.tolist()],
            lengths=self.lengths[idx], scores=self.scores[idx], costs=self.costs[idx],
            models=self.models, embedder=self.embedder, embedder_key=self.embedder_key,
            source=self.source, views=self.views, tail_chars=self.tail_chars,
            logged=self.logged,
        )


def prepare_data(table: OutcomeTable, embedder: Embedder, *, source: str = "",
                 views: Sequence[str] = VIEWS, tail_chars: int = 800,
                 progress: Callable[[str, int, int], None] | None = None) -> RouterData:
    """Embed a table's queries (:func:`~orchestra.policies.learned.features.embed_queries`) and
    collect its score and cost matrices.

    Args:
        table: the (training) outcome table.
        embedder: turns query texts into vectors (a cached one avoids recomputing).
        source: a name for the artifact's record (e.g. ``"routerbench:train"``).
        views: which views of each query to embed (see
            :func:`~orchestra.policies.learned.features.embed_queries`).
        tail_chars: characters of the ``tail`` view.
        progress: called ``("embedding", done, total)`` as the queries are embedded, in chunks
            (:func:`~orchestra.training.progress.embed_with_progress`).

    Raises:
        UserError: the table has no queries or no models.
    """
    if table.n_queries == 0 or table.n_models == 0:
        raise UserError(
            f"expected a table with queries and models to train on (got {table.n_queries} "
            f"queries x {table.n_models} models)"
        )
    from orchestra.training.progress import embed_with_progress

    texts = table.query_texts
    x = embed_with_progress(
        lambda part: embed_queries(embedder, part, views=views, tail_chars=tail_chars),
        texts, progress).astype(np.float32)
    return RouterData(
        embeddings=x, tasks=list(table.query_tasks),
        lengths=np.array([len(t) for t in texts], dtype=np.float64),
        scores=np.asarray(table.score_matrix(), dtype=np.float64),
        costs=np.asarray(table.cost_matrix(), dtype=np.float64),
        models=list(table.models), embedder=embedder.name, embedder_key=embedder_key_of(embedder),
        source=source, views=tuple(views), tail_chars=int(tail_chars),
        logged=table.meta.get("feedback") == "logged",
    )

"""Query features of the learned routers (kNN, MLP, MF): embeddings, tasks, scorer inputs.

* the query's sentence embedding (:mod:`orchestra.embed`; MiniLM by default) in two *views*
  (:func:`embed_queries`): the text as the embedder reads it (MiniLM: its first 256 word
  pieces) and its last 800 characters, concatenated. Few-shot prompts (RouterBench's ARC and
  Winogrande) open with the same examples, so the first view alone is the same for every
  query of a task; the tail is where the question is;
* the query's **task** as a one-hot vector (:class:`TaskEncoder`) when the training table has
  more than one task (RouterBench ``eval_name``, LLMRouter ``task_name``). At inference the task
  comes from the run's metadata (``view.meta["task"]``); when it is absent or was not seen in
  training it is *inferred* as the training task whose mean embedding (centroid) is the most
  similar, so a router never sees an input it was not trained on;
* the query's length in characters (only for the cost model,
  :class:`~orchestra.policies.learned.cost.CostModel`).

The MLP and MF scorers read ``[embedding, task one-hot]`` (:func:`scorer_inputs`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError

if TYPE_CHECKING:
    from orchestra.embed import Embedder

__all__ = ["VIEWS", "FloatArray", "TaskEncoder", "col_means", "embed_queries", "embedder_key_of",
           "scorer_inputs", "tail_text"]

FloatArray = NDArray[np.float64]

VIEWS = ("full", "tail")


def embedder_key_of(embedder: Embedder) -> str | None:
    """``"minilm"`` / ``"hashing"`` when ``embedder`` (or the one it caches) is what
    :func:`~orchestra.embed.get_embedder` gives for that key, else ``None``."""
    from orchestra.embed import CachedEmbedder, HashingEmbedder, MiniLMEmbedder

    inner = embedder.inner if isinstance(embedder, CachedEmbedder) else embedder
    if isinstance(inner, MiniLMEmbedder):
        return "minilm"
    if isinstance(inner, HashingEmbedder) and inner.name == HashingEmbedder().name:
        return "hashing"
    return None


def tail_text(text: str, chars: int = 800) -> str:
    """The last ``chars`` characters of ``text``, starting at a line or word boundary.

    Returns ``text`` itself when it is not longer than ``chars``.
    """
    if len(text) <= chars:
        return text
    s = text[-chars:]
    i = s.find("\n")
    if 0 <= i < chars // 4:
        return s[i + 1:]
    j = s.find(" ")
    return s[j + 1:] if 0 <= j < 40 else s


def embed_queries(embedder: Embedder, texts: Sequence[str], *,
                  views: Sequence[str] = VIEWS, tail_chars: int = 800) -> NDArray[np.float32]:
    """Embed queries as the concatenation of one unit vector per *view*, scaled to unit norm.

    Views: ``full`` embeds the text as the embedder sees it (MiniLM reads only its first 256
    word pieces), ``tail`` its last ``tail_chars`` characters (:func:`tail_text`). Prompts put
    the actual question last (few-shot prompts repeat the same examples first), so for long
    prompts the tail is what tells queries apart; for a text no longer than ``tail_chars`` the
    tail *is* the text and its vector is reused. The cosine of two such vectors is the mean of
    the per-view cosines.

    Shapes:
        ``(len(texts), embedder.dim * len(views))``.
    """
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise UserError(f"expected views among {list(VIEWS)} (got {list(views)!r})")
    texts = list(texts)
    blocks: list[NDArray[np.float32]] = []
    full = _unit(np.asarray(embedder.embed(texts), dtype=np.float32))
    for v in views:
        if v == "full":
            blocks.append(full)
        else:
            tails = full.copy()
            long = [i for i, t in enumerate(texts) if len(t) > tail_chars]
            if long:
                tails[long] = _unit(np.asarray(
                    embedder.embed([tail_text(texts[i], tail_chars) for i in long]),
                    dtype=np.float32))
            blocks.append(tails)
    out = np.concatenate(blocks, axis=1) / np.sqrt(len(views))
    return out.astype(np.float32)


def _unit(x: NDArray[Any]) -> NDArray[np.float32]:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class TaskEncoder:
    """Task names → indices / one-hot rows, with nearest-centroid inference for unknown tasks.

    With a single training task the one-hot is empty (there is nothing to tell apart).

    Args:
        vocab: the training tasks, in index order.
        centroids: ``(len(vocab), d)`` unit mean embedding of each task's training queries.
    """

    def __init__(self, vocab: Sequence[str], centroids: NDArray[np.float32]) -> None:
        self.vocab = list(vocab)
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.centroids = np.asarray(centroids, dtype=np.float32)

    @classmethod
    def fit(cls, tasks: Sequence[str], embeddings: NDArray[np.float32]) -> TaskEncoder:
        vocab = sorted(set(tasks))
        idx = np.array([vocab.index(t) for t in tasks]) if vocab else np.zeros(0, dtype=int)
        cent = np.stack([embeddings[idx == i].mean(axis=0) for i in range(len(vocab))])
        return cls(vocab, _unit(cent))

    @property
    def width(self) -> int:
        """Columns of the one-hot block (0 with a single task)."""
        return len(self.vocab) if len(self.vocab) > 1 else 0

    def indices(self, tasks: Sequence[str | None], embeddings: NDArray[np.float32]
                ) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """Task index of each query and whether it was inferred (unknown or missing task)."""
        idx = np.array([self.index.get(t, -1) if t is not None else -1 for t in tasks],
                       dtype=np.intp)
        inferred = idx < 0
        if inferred.any():
            sims = embeddings[inferred] @ self.centroids.T
            idx[inferred] = np.argmax(sims, axis=1)
        return idx, inferred

    def onehot(self, idx: NDArray[np.intp]) -> NDArray[np.float32]:
        out = np.zeros((len(idx), self.width), dtype=np.float32)
        if self.width:
            out[np.arange(len(idx)), idx] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "centroids": self.centroids.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskEncoder:
        return cls(d["vocab"], np.asarray(d["centroids"], dtype=np.float32))


def scorer_inputs(x: NDArray[np.float32], onehot: NDArray[np.float32]) -> NDArray[np.float32]:
    """The MLP / MF input: ``[embedding, task one-hot]`` (the embedding alone with one task)."""
    return np.concatenate([x, onehot], axis=1).astype(np.float32) if onehot.shape[1] else x


def col_means(a: FloatArray) -> FloatArray:
    """Column means ignoring NaN; 0 for a column with no value."""
    seen = ~np.isnan(a)
    return np.where(seen, a, 0.0).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)

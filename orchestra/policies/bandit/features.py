"""What the bandit sees of a query: features for its estimators, price priors for its costs.

Features (:class:`QueryFeatures`), one ``(d,)`` vector per query, general to any pool:

* ``1`` (the intercept) and ``log(1 + chars) / 10`` (long prompts cost more);
* the query's sentence embedding in the learned routers' two views (the text and its tail:
  :func:`~orchestra.policies.learned.features.embed_queries`), by the project's embedders
  (``minilm`` by default, ``hashing`` for tests), projected to ``dim`` columns by a fixed
  Gaussian matrix (seeded, so the same in every process) and scaled to unit norm. A projection
  keeps the per-arm ridge estimators small (``d²`` per arm) and their exploration bonus tight;
  ``dim=None`` keeps the full embedding;
* the task, when the run's ``meta["task"]`` names one: a one-hot over ``task_slots`` columns,
  the slot chosen by a stable hash of the name (tasks are not known in advance; two tasks may
  share a slot). No task: all zeros.

Price priors (:func:`price_priors`): for each model, the cost of a call on this query from the
pool's prices: ``ceil(chars / 4)`` input tokens plus ``min(200, max_output_tokens)`` output
tokens (expected) or ``max_output_tokens`` (the worst case, what the budget reserves).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError
from orchestra.policies.learned.features import embed_queries

if TYPE_CHECKING:
    from orchestra.embed import Embedder
    from orchestra.spec import ModelSpec

__all__ = ["EXPECTED_OUTPUT_TOKENS", "QueryFeatures", "price_priors", "resolve_embedder"]

#: Output tokens of a typical call, for the expected price prior.
EXPECTED_OUTPUT_TOKENS = 200
_PROJECTION_SEED = 20_240_612


def resolve_embedder(embedder: str | Embedder | None) -> Embedder:
    """An embedder from a name (``"minilm"``, ``"hashing"``) or an instance (kept as given)."""
    from orchestra.embed import get_embedder

    if embedder is None or isinstance(embedder, str):
        name = embedder or "minilm"
        if name not in ("minilm", "hashing"):
            raise UserError(f"embedder must be 'minilm' or 'hashing' (got {embedder!r}); pass an "
                            "Embedder instance for another one")
        return get_embedder(name)  # type: ignore[arg-type]
    if not callable(getattr(embedder, "embed", None)):
        raise UserError(f"expected an embedder name or an object with embed() (got {embedder!r})")
    return embedder


class QueryFeatures:
    """Query text (and task) → the bandit's feature vectors (see the module docstring).

    Args:
        embedder: the sentence embedder.
        dim: projected embedding width (``None``: the full two-view embedding).
        task_slots: columns of the hashed task one-hot (0: no task feature).

    Shapes:
        ``__call__(texts (n,), tasks (n,))`` -> ``(n, width)``, ``width = 2 + dim + task_slots``.
    """

    def __init__(self, embedder: Embedder, dim: int | None = 128, task_slots: int = 16) -> None:
        self.embedder = embedder
        self.input_dim = 2 * int(embedder.dim)
        if dim is not None and dim < 1:
            raise UserError(f"dim must be >= 1, or null for the full embedding (got {dim!r})")
        if task_slots < 0:
            raise UserError(f"task_slots must be >= 0 (got {task_slots!r})")
        self.dim = dim
        self.task_slots = int(task_slots)
        self.projection: NDArray[np.float64] | None = None
        if dim is not None:
            rng = np.random.default_rng(_PROJECTION_SEED)
            self.projection = rng.standard_normal((self.input_dim, dim)) / math.sqrt(dim)
        self.width = 2 + (dim if dim is not None else self.input_dim) + self.task_slots

    def describe(self) -> dict[str, Any]:
        """What must match for a saved state to be reused with these features."""
        return {"embedder": self.embedder.name, "input_dim": self.input_dim, "dim": self.dim,
                "task_slots": self.task_slots, "projection_seed": _PROJECTION_SEED}

    def task_slot(self, task: str | None) -> int | None:
        """The one-hot column of ``task`` (``None`` without a task or task slots)."""
        if task is None or self.task_slots == 0:
            return None
        h = hashlib.blake2b(str(task).encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") % self.task_slots

    def __call__(self, texts: Sequence[str], tasks: Sequence[str | None] | None = None
                 ) -> NDArray[np.float64]:
        texts = list(texts)
        tasks = list(tasks) if tasks is not None else [None] * len(texts)
        emb = embed_queries(self.embedder, texts).astype(np.float64)
        return self.assemble(emb, texts, tasks)

    def assemble(self, emb: NDArray[Any], texts: Sequence[str], tasks: Sequence[str | None]
                 ) -> NDArray[np.float64]:
        """Features from already computed two-view embeddings ``(n, input_dim)``."""
        emb = np.asarray(emb, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[1] != self.input_dim:
            raise UserError(f"expected embeddings of shape (n, {self.input_dim}) "
                            f"(got {emb.shape})")
        if self.projection is not None:
            emb = emb @ self.projection
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            emb = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
        n = len(texts)
        lengths = np.log1p(np.array([len(t) for t in texts], dtype=np.float64)) / 10.0
        onehot = np.zeros((n, self.task_slots))
        for i, t in enumerate(tasks):
            slot = self.task_slot(t)
            if slot is not None:
                onehot[i, slot] = 1.0
        return np.column_stack([np.ones(n), lengths, emb, onehot])


def price_priors(models: Sequence[ModelSpec], text: str) -> tuple[NDArray[np.float64],
                                                                   NDArray[np.float64]]:
    """Each model's expected and worst-case USD for one call on ``text``, from its prices."""
    n_in = math.ceil(len(text) / 4)
    pin = np.array([m.input_price or 0.0 for m in models])
    pout = np.array([m.output_price or 0.0 for m in models])
    max_out = np.array([m.max_output_tokens for m in models], dtype=np.float64)
    expected = (n_in * pin + np.minimum(EXPECTED_OUTPUT_TOKENS, max_out) * pout) / 1e6
    worst = (n_in * pin + max_out * pout) / 1e6
    return expected, worst

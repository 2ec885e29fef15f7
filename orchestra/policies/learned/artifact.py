"""A trained router (kNN, MLP or MF) and its artifact directory: load, save, predict.

A :class:`TrainedRouter` is a scorer (:mod:`~orchestra.policies.learned.scorers`), a cost model
(:mod:`~orchestra.policies.learned.cost`), a task encoder
(:mod:`~orchestra.policies.learned.features`) and the cost normalisation; it predicts every
model's score and cost for a query, and picks λ from its calibration curve.

An artifact is a directory: ``config.json`` (kind, format version, models, embedder, task
vocabulary and centroids, cost model, ``cost_scale``, hyperparameters, CV results, calibration
curve, training data name and seed) and ``weights.npz`` (kNN: training embeddings, task ids and
scores) or ``weights.pt`` (MLP / MF: ``torch.save`` of the state dicts). The default location is
``<data home>/artifacts/<data>-<kind>``
(:func:`~orchestra.policies.learned.locations.default_artifact_dir`; ``$ORCHESTRA_HOME`` or the
user data dir). ``orchestra train <kind>`` writes them.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError
from orchestra.policies.learned.chooser import fine_lambda_grid
from orchestra.policies.learned.cost import CostModel
from orchestra.policies.learned.features import VIEWS, TaskEncoder, embed_queries, scorer_inputs
from orchestra.policies.learned.locations import resolve_artifact, train_command
from orchestra.policies.learned.scorers import RouterKind, make_scorer

if TYPE_CHECKING:
    from orchestra.embed import Embedder

__all__ = ["ARTIFACT_VERSION", "MEMO_SIZE", "TrainedRouter", "load_router"]

#: Version of the artifact layout written by :meth:`TrainedRouter.save`.
ARTIFACT_VERSION = 1

#: Predictions a :class:`TrainedRouter` keeps in memory (per query and task).
MEMO_SIZE = 100_000


class TrainedRouter:
    """A trained router: scorer + cost model + task encoder + normalisation, saved as an artifact.

    Build one with ``orchestra train <kind>`` (``train_router`` of the training package); load
    one with :func:`load_router`. Use :meth:`predict` for batches of queries, :meth:`choose` for
    one query.
    """

    def __init__(self, *, kind: RouterKind, scorer: Any, cost: CostModel, tasks: TaskEncoder,
                 models: list[str], cost_scale: float, embedder: str, embedder_key: str | None,
                 embedder_dim: int, config: dict[str, Any],
                 views: Sequence[str] = VIEWS, tail_chars: int = 800) -> None:
        self.kind = kind
        self.views = tuple(views)
        self.tail_chars = int(tail_chars)
        self.scorer = scorer
        self.cost = cost
        self.tasks = tasks
        self.models = list(models)
        self.cost_scale = float(cost_scale)
        self.embedder_name = embedder
        self.embedder_key = embedder_key
        self.embedder_dim = int(embedder_dim)
        self.config = config
        self.path: Path | None = None
        self._memo: OrderedDict[tuple[str, str, str | None], dict[str, Any]] = OrderedDict()
        self._memo_lock = threading.Lock()
        self._embedder: Embedder | None = None

    # ------------------------------------------------------------------ predictions
    @property
    def calibration(self) -> dict[str, list[float]]:
        return dict(self.config.get("calibration") or {})

    @property
    def strong_model(self) -> str:
        """The model with the highest mean training cost (``target_strong_share`` counts it)."""
        return self.models[int(np.argmax(self.cost.mean))]

    def predict_embedded(self, embeddings: NDArray[np.float32], texts_len: Sequence[int],
                         tasks: Sequence[str | None]) -> dict[str, Any]:
        """Predictions from precomputed embeddings.

        Returns:
            ``{"scores": (n, m), "costs": (n, m), "high_costs": (n, m), "task": [...],
            "task_inferred": (n,) bool}``.
        """
        x = np.asarray(embeddings, dtype=np.float32)
        want = self.embedder_dim * len(self.views)
        if x.ndim != 2 or x.shape[1] != want:
            raise UserError(
                f"expected {want}-d query vectors ({len(self.views)} view(s) of "
                f"{self.embedder_name!r}, see embed_queries) (got shape {x.shape!r})"
            )
        tidx, inferred = self.tasks.indices(list(tasks), x)
        onehot = self.tasks.onehot(tidx)
        lengths = np.asarray(texts_len, dtype=np.float64)
        if self.kind == "knn":
            scores = self.scorer.predict(x, tidx)
        else:
            scores = self.scorer.predict(scorer_inputs(x, onehot))
        return {"scores": np.clip(scores, 0.0, 1.0), "costs": self.cost.predict(lengths, onehot),
                "high_costs": self.cost.high(lengths, onehot),
                "task": [self.tasks.vocab[i] if self.tasks.vocab else None for i in tidx],
                "task_inferred": inferred}

    def predict(self, queries: Sequence[str], tasks: Sequence[str | None] | None = None, *,
                embedder: Embedder | None = None) -> dict[str, Any]:
        """Predicted scores and costs of every model for each query (see
        :meth:`predict_embedded`), embedding with ``embedder`` or the artifact's own."""
        emb = embedder or self.embedder()
        if emb.dim != self.embedder_dim:
            raise UserError(
                f"expected a {self.embedder_dim}-d embedder like {self.embedder_name!r} "
                f"(got {emb.name!r}, {emb.dim}-d)"
            )
        x = embed_queries(emb, list(queries), views=self.views, tail_chars=self.tail_chars)
        return self.predict_embedded(x, [len(q) for q in queries],
                                     list(tasks) if tasks is not None else [None] * len(queries))

    def predict_memo(self, queries: Sequence[str], tasks: Sequence[str | None], *,
                     embedder: Embedder | None = None) -> list[dict[str, Any]]:
        """Per-query predictions, memoised on this router (shared by every policy using it, so
        a λ sweep embeds each query once); misses are embedded in one batch.

        Returns:
            One dict per query: ``scores``, ``costs``, ``high_costs`` (``(m,)`` arrays over
            :attr:`models`), ``task`` and ``task_inferred``.
        """
        emb = embedder or self.embedder()
        keys = [(emb.name, q, t) for q, t in zip(queries, tasks, strict=True)]
        found: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        with self._memo_lock:
            for key in keys:
                if key in self._memo:
                    found[key] = self._memo[key]
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        if missing:
            rows = self._predict_rows([q for _, q, _ in missing], [t for _, _, t in missing], emb)
            new = dict(zip(missing, rows, strict=True))
            found.update(new)
            with self._memo_lock:
                self._memo.update(new)
                while len(self._memo) > MEMO_SIZE:
                    self._memo.popitem(last=False)
        return [found[key] for key in keys]

    def _predict_rows(self, queries: Sequence[str], tasks: Sequence[str | None],
                      emb: Embedder) -> list[dict[str, Any]]:
        pred = self.predict(queries, tasks, embedder=emb)
        return [{"scores": pred["scores"][i], "costs": pred["costs"][i],
                 "high_costs": pred["high_costs"][i], "task": pred["task"][i],
                 "task_inferred": bool(pred["task_inferred"][i])} for i in range(len(queries))]

    def embedder(self) -> Embedder:
        """The artifact's embedder (cached on disk), by the name it was trained with.

        Raises:
            UserError: the artifact was trained with a custom embedder; pass one explicitly.
        """
        from orchestra.embed import get_embedder

        if self._embedder is not None:  # built once: each decision asks for it
            return self._embedder
        if self.embedder_key not in ("minilm", "hashing"):
            raise UserError(
                f"this router was trained with the custom embedder {self.embedder_name!r}; "
                "pass the same embedder explicitly (embedder=...)"
            )
        emb = get_embedder(self.embedder_key)  # type: ignore[arg-type]
        if emb.name != self.embedder_name:
            raise UserError(
                f"expected embedder {self.embedder_name!r} for this router (got {emb.name!r} "
                f"from get_embedder({self.embedder_key!r})); retrain the router"
            )
        self._embedder = emb
        return emb

    def lambda_for(self, *, target_cost: float | None = None,
                   target_strong_share: float | None = None) -> float:
        """λ reaching a target on the training data (OOF predictions, actual training costs).

        Args:
            target_cost: USD per query; the smallest λ whose mean training cost per query does
                not exceed it (interpolated in log λ).
            target_strong_share: share of calls in [0, 1] to :attr:`strong_model`; the smallest
                λ whose share does not exceed it.

        Raises:
            UserError: neither or both targets given, or a target out of range.
        """
        if (target_cost is None) == (target_strong_share is None):
            raise UserError("give exactly one of target_cost= (USD per query) or "
                            "target_strong_share= (a fraction in [0, 1])")
        cal = self.calibration
        lam = np.asarray(cal["lam"])
        if target_cost is not None:
            if not target_cost > 0:
                raise UserError(f"target_cost must be a positive USD amount (got {target_cost!r})")
            y, t = np.asarray(cal["cost_per_query"]), float(target_cost)
        else:
            assert target_strong_share is not None
            if not 0.0 <= target_strong_share <= 1.0:
                raise UserError(
                    f"target_strong_share must be in [0, 1] (got {target_strong_share!r})"
                )
            y, t = np.asarray(cal["strong_share"]), float(target_strong_share)
        # y is non-increasing in λ up to ties; take its running minimum to be safe.
        y = np.minimum.accumulate(y)
        ok = np.flatnonzero(y <= t + 1e-15)
        if len(ok) == 0:
            return float(lam[-1])
        i = int(ok[0])
        if i == 0:
            return float(lam[0])
        # Interpolate between λ[i-1] (above target) and λ[i] (at or below) in log λ.
        lo, hi = max(lam[i - 1], 1e-6), lam[i]
        frac = (y[i - 1] - t) / (y[i - 1] - y[i]) if y[i - 1] != y[i] else 1.0
        return float(np.exp(np.log(lo) + frac * (np.log(hi) - np.log(lo))))

    def default_lambdas(self) -> list[float]:
        """A compact λ grid (<= 20 values) of the router's operating points on the training
        data (its hull vertices first), from the best quality (λ = 0) to the cheapest."""
        return list(self.config.get("lambdas") or fine_lambda_grid().tolist())

    @property
    def default_lam(self) -> float:
        """λ used when none is given: the cheapest with training quality within 0.01 of the
        best (OOF)."""
        return float(self.config.get("default_lam", 0.0))

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the artifact directory (``config.json`` + ``weights.npz`` / ``weights.pt``)."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        cfg = dict(self.config)
        cfg.update({
            "format": "orchestra.router", "version": ARTIFACT_VERSION, "kind": self.kind,
            "models": self.models, "cost_scale": self.cost_scale,
            "embedder": {"name": self.embedder_name, "key": self.embedder_key,
                         "dim": self.embedder_dim, "views": list(self.views),
                         "tail_chars": self.tail_chars},
            "tasks": self.tasks.to_dict(), "cost_model": self.cost.to_dict(),
            "params": self.scorer.params(),
        })
        if self.kind == "knn":
            np.savez_compressed(p / "weights.npz", **self.scorer.state())
            weights = "weights.npz"
        else:
            import torch

            torch.save(self.scorer.state(), p / "weights.pt")
            weights = "weights.pt"
        cfg["weights"] = weights
        (p / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
        self.config = cfg
        self.path = p
        return p


_LOADED: dict[tuple[str, float], TrainedRouter] = {}


def load_router(path: str | os.PathLike[str], *, kind: str | None = None) -> TrainedRouter:
    """Load an artifact directory written by :meth:`TrainedRouter.save` (memoised per file).

    Args:
        path: the artifact directory (or a name under
            :func:`~orchestra.policies.learned.locations.artifacts_home`).
        kind: the expected kind; a mismatch raises.

    Raises:
        UserError: missing or unreadable artifact, or a different kind / version.
    """
    p = resolve_artifact(path, kind or "knn") if kind else Path(path)
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"no router artifact at {str(p)!r}: expected {str(cfg_path)!r}")
    key = (str(p.resolve()), cfg_path.stat().st_mtime)
    if key in _LOADED:
        router = _LOADED[key]
    else:
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{cfg_path}: expected JSON ({e.msg})") from None
        if cfg.get("format") != "orchestra.router" or cfg.get("version") != ARTIFACT_VERSION:
            raise UserError(
                f"{cfg_path}: expected an orchestra router artifact version {ARTIFACT_VERSION} "
                f"(got format {cfg.get('format')!r}, version {cfg.get('version')!r}); retrain it"
            )
        k = cfg["kind"]
        seed = int(cfg.get("seed", 0))
        scorer = make_scorer(k, cfg["params"], seed)
        w = p / cfg["weights"]
        if k == "knn":
            with np.load(w) as st:
                scorer.load_state({name: st[name] for name in st.files})
        else:
            import torch

            scorer.load_state(torch.load(w, map_location="cpu", weights_only=True))
        emb = cfg["embedder"]
        router = TrainedRouter(
            kind=k, scorer=scorer, cost=CostModel.from_dict(cfg["cost_model"]),
            tasks=TaskEncoder.from_dict(cfg["tasks"]), models=cfg["models"],
            cost_scale=cfg["cost_scale"], embedder=emb["name"], embedder_key=emb.get("key"),
            embedder_dim=emb["dim"], config=cfg, views=emb.get("views", ["full"]),
            tail_chars=emb.get("tail_chars", 800),
        )
        router.path = p
        _LOADED[key] = router
    if kind is not None and router.kind != kind:
        raise UserError(
            f"{str(p)!r} holds a {router.kind!r} router; expected {kind!r} (use the "
            f"{router.kind!r} policy, or train one with `{train_command(kind)}`)"
        )
    return router

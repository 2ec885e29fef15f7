"""Learned routing policies: ``knn``, ``mlp`` and ``mf``, backed by a trained router artifact.

Each predicts every model's score and cost for the query (a
:class:`~orchestra.policies.learned.artifact.TrainedRouter`), routes in round 0 to the model(s)
maximising ``score - lam * cost / cost_scale`` among those whose cautious predicted cost fits
the USD budget left (:func:`~orchestra.policies.learned.chooser.choose_models`), then answers
after the first round. The predictions, utilities, λ and the decision are put in
``Route.scores``, so traces show why.

Parameters (``--param key=value`` or a recipe's ``params:``):

* ``path``: the artifact directory written by ``orchestra train <kind>``. A path that does not
  exist is looked up by its last component in ``<data home>/artifacts/`` (where ``orchestra
  train`` writes by default), so recipes can say ``path: routerbench-knn``. Default: the newest
  artifact of the kind in ``<data home>/artifacts/`` trained on exactly the pool's models (the
  agent's; ``routerbench-<kind>`` for the RouterBench replay pool), else a ``UserError`` naming
  ``path=`` and ``orchestra train <kind> --data <your recorded table>``
  (:func:`~orchestra.policies.learned.provenance.find_artifact_for_pool`); ``orchestra eval``
  instead picks the artifact trained on the evaluated data, or refuses
  (:func:`~orchestra.policies.learned.provenance.find_artifact`).
* ``lam``: the cost weight λ (cost normalised by the mean cost of the training data's most
  expensive model, so λ grids compare across datasets). Default: the artifact's ``default_lam``
  (the cheapest λ whose training quality is within 0.01 of the best).
* ``target_cost``: instead of λ, the USD per query to aim at (calibrated on the training data).
* ``target_strong_share``: instead of λ, the share of calls to the most expensive model.
* ``k``: fan out to the top-k models (default 1).
* ``agent``: the agent to call (default: the pool's answer agent).

The policy's models are the pool's models the artifact knows (matched by name, then by litellm
id); the others are never chosen.

Example:
    >>> from orchestra.policies import resolve_policy            # doctest: +SKIP
    >>> policy = resolve_policy("knn", pool, {"path": "routerbench-knn", "lam": 0.5})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orchestra.errors import UserError
from orchestra.policies.base import Action, Answer, Call, Route, RunView
from orchestra.policies.registry import register_policy

if TYPE_CHECKING:
    from orchestra.embed import Embedder
    from orchestra.policies.learned.artifact import TrainedRouter
    from orchestra.policies.learned.provenance import ArtifactChoice
    from orchestra.spec import ModelSpec, Pool

__all__ = ["KNNPolicy", "LearnedRouterPolicy", "MFPolicy", "MLPPolicy", "artifact_for_pool",
           "parse_k", "parse_lam", "route_or_answer"]

class LearnedRouterPolicy:
    """Route once with a trained router, then answer.

    Args:
        pool: the pool to route over.
        path: artifact directory or name (see the module docstring).
        lam: cost weight λ >= 0.
        k: number of models to call in parallel (top-k by utility).
        target_cost: calibrate λ to this USD per query instead.
        target_strong_share: calibrate λ to this share of calls to the priciest model instead.
        agent: the agent to call.
        embedder: an embedder instance to use instead of the artifact's (same vectors needed).
        router: an already loaded router (instead of ``path``).

    Raises:
        UserError: missing artifact (naming the ``orchestra train`` command), bad λ / k /
            targets, or no pool model known to the artifact.
    """

    kind = "knn"

    def __init__(self, pool: Pool, path: str | None = None, lam: float | None = None, k: int = 1,
                 target_cost: float | None = None, target_strong_share: float | None = None,
                 agent: str | None = None, embedder: Embedder | None = None,
                 router: TrainedRouter | None = None) -> None:
        from orchestra.policies.learned.artifact import load_router
        from orchestra.policies.learned.locations import resolve_artifact

        self.agent = pool.agent(agent).name if agent else pool.answer_agent.name
        allowed = pool.models_for(self.agent)
        #: How the artifact was found without ``path=`` (None: given by path= or router=).
        self.artifact: ArtifactChoice | None = None
        if router is None:
            if path is None:
                self.artifact = artifact_for_pool(self.kind, allowed)
                router = load_router(self.artifact.path, kind=self.kind)
            else:
                router = load_router(resolve_artifact(path, self.kind), kind=self.kind)
        elif router.kind != self.kind:
            raise UserError(f"expected a {self.kind!r} router (got a {router.kind!r} one)")
        self.router = router
        # Map artifact columns to pool models: by name first, then by litellm id.
        self.columns: list[int] = []
        self.model_names: list[str] = []
        for j, name in enumerate(router.models):
            spec = next((m for m in allowed if m.name == name), None) or next(
                (m for m in allowed if m.id == name), None)
            if spec is not None:
                self.columns.append(j)
                self.model_names.append(spec.name)
        if not self.columns:
            raise UserError(
                f"the {self.kind} router at {str(router.path)!r} knows none of the models agent "
                f"{self.agent!r} may use (router: {router.models}; pool: "
                f"{[m.name for m in allowed]}); train it on outcomes of this pool's models"
            )
        self.k = min(parse_k(k), len(self.columns))
        given = [n for n, v in (("lam", lam), ("target_cost", target_cost),
                                ("target_strong_share", target_strong_share)) if v is not None]
        if len(given) > 1:
            raise UserError(f"give at most one of lam, target_cost, target_strong_share "
                            f"(got {given})")
        if target_cost is not None or target_strong_share is not None:
            lam = router.lambda_for(
                target_cost=None if target_cost is None else _num(target_cost, "target_cost"),
                target_strong_share=None if target_strong_share is None
                else _num(target_strong_share, "target_strong_share"))
        elif lam is None:
            lam = router.default_lam
        self.lam = lam = parse_lam(lam)
        self._embedder = embedder
        import numpy as np  # here, not at the top: `orchestra policies list` skips numpy

        self._cols = np.asarray(self.columns, dtype=np.intp)
        self.name = f"{self.kind}(lam={lam:.4g}{f',k={self.k}' if self.k > 1 else ''})"

    # ------------------------------------------------------------------ API
    def default_lambdas(self) -> list[float]:
        """λ values for a sweep: the artifact's compact grid of distinct operating points."""
        return self.router.default_lambdas()

    def predict(self, queries: Sequence[str], tasks: Sequence[str | None] | None = None
                ) -> list[dict[str, Any]]:
        """Per-query predictions over the policy's models (:attr:`model_names`).

        Memoised on the loaded router, so policies at several λ share them; misses are embedded
        in one batch (call this with all queries first to warm a sweep).

        Returns:
            One dict per query: ``scores``, ``costs``, ``high_costs`` (arrays over
            :attr:`model_names`), ``task`` and ``task_inferred``.
        """
        tasks = list(tasks) if tasks is not None else [None] * len(queries)
        rows = self.router.predict_memo(list(queries), tasks, embedder=self._embedder)
        cols = self._cols
        return [{"scores": r["scores"][cols], "costs": r["costs"][cols],
                 "high_costs": r["high_costs"][cols], "task": r["task"],
                 "task_inferred": r["task_inferred"]} for r in rows]

    def _pick(self, p: dict[str, Any], budget_usd: float | None) -> list[int]:
        from orchestra.policies.learned.chooser import choose_models

        return choose_models(p["scores"], p["costs"], self.lam, self.router.cost_scale,
                             k=self.k, budget_usd=budget_usd, high_costs=p["high_costs"])

    def route_once_plan(self, queries: Sequence[str], tasks: Sequence[str | None],
                        budget_usd: float | None) -> list[tuple[tuple[str, str], ...]]:
        """What :meth:`decide` does with each query, without running it: the (agent, model)
        calls of its one route (round 0; then it answers with that round's answer), or ``()``
        when it answers at once (nothing fits ``budget_usd``). The evaluation harness runs each
        distinct (query, plan) once and shares the graded run among the λ points that chose it.
        """
        preds = self.predict(queries, tasks)
        return [tuple((self.agent, self.model_names[i]) for i in self._pick(p, budget_usd))
                for p in preds]

    def choose(self, query: str, task: str | None = None,
               budget_usd: float | None = None) -> tuple[list[str], dict[str, Any]]:
        """The chosen model names and the scores dict for the trace."""
        import numpy as np

        p = self.predict([query], [task])[0]
        picked = self._pick(p, budget_usd)
        util = p["scores"] - self.lam * p["costs"] / self.router.cost_scale
        fits = (np.ones(len(util), dtype=bool) if budget_usd is None
                else p["high_costs"] <= budget_usd)
        scores = {
            "router": self.kind, "lam": self.lam, "k": self.k,
            "cost_scale": self.router.cost_scale, "task": p["task"],
            "task_inferred": p["task_inferred"],
            "models": {n: {"score": float(p["scores"][i]), "cost": float(p["costs"][i]),
                           "utility": float(util[i]), "fits": bool(fits[i])}
                       for i, n in enumerate(self.model_names)},
            "chosen": [self.model_names[i] for i in picked],
        }
        return [self.model_names[i] for i in picked], scores

    def decide(self, view: RunView) -> Action:
        if view.rounds:
            return Answer(reason="routed once; answering")
        task = view.meta.get("task") if view.meta else None
        names, scores = self.choose(view.query, str(task) if task is not None else None,
                                    view.budget_left.usd)
        best = scores["models"][names[0]] if names else {}
        return route_or_answer(self.kind, self.lam, [(self.agent, n) for n in names], best,
                               scores, view.budget_left.usd)


def artifact_for_pool(kind: str, models: Sequence[ModelSpec]) -> ArtifactChoice:
    """The artifact a ``kind`` policy given no ``path=`` loads to route over ``models`` (the
    agent's): the newest trained on exactly these models, RouterBench's own for the RouterBench
    replay pool (:func:`~orchestra.policies.learned.provenance.find_artifact_for_pool`).

    Raises:
        UserError: none fits, or two fit equally (the message names ``path=`` and the
            ``orchestra train`` command).
    """
    from orchestra.policies.learned.provenance import find_artifact_for_pool

    return find_artifact_for_pool(kind, [(m.name, m.id) for m in models])


def parse_k(k: Any) -> int:
    """A fan-out ``k`` parameter as an int >= 1 (``UserError`` otherwise)."""
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise UserError(f"k must be an integer >= 1 (got {k!r})") from None
    if k < 1:
        raise UserError(f"k must be an integer >= 1 (got {k!r})")
    return k


def parse_lam(lam: Any) -> float:
    """A cost weight ``lam`` parameter as a float >= 0 (``UserError`` otherwise)."""
    value = _num(lam, "lam")
    if value < 0:
        raise UserError(f"lam must be >= 0 (got {lam!r}); 0 ignores cost")
    return value


def route_or_answer(kind: str, lam: float, chosen: Sequence[tuple[str, str]],
                    best: dict[str, Any], scores: dict[str, Any],
                    usd_left: float | None) -> Route | Answer:
    """The decision of a learned router: call the chosen (agent, model) pairs, or answer when
    no candidate's predicted cost fits the USD left. ``best`` is the first pair's entry of
    ``scores["models"]``."""
    if not chosen:
        return Answer(reason=f"no candidate's predicted cost fits the USD left ({usd_left!r})",
                      scores=scores)
    one_agent = len({a for a, _ in chosen}) == 1
    names = ", ".join(m if one_agent else f"{a}/{m}" for a, m in chosen)
    return Route([Call(agent=a, model=m) for a, m in chosen],
                 reason=f"{kind}: best predicted score - {lam:.3g}·cost: {names} "
                        f"(score {best['score']:.2f}, cost ${best['cost']:.2g})",
                 scores=scores)


def _num(v: Any, name: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number (got {v!r})") from None


class KNNPolicy(LearnedRouterPolicy):
    """kNN router over query embeddings (``orchestra train knn``)."""

    kind = "knn"


class MLPPolicy(LearnedRouterPolicy):
    """MLP router over query embeddings (``orchestra train mlp``)."""

    kind = "mlp"


class MFPolicy(LearnedRouterPolicy):
    """Matrix-factorisation router (``orchestra train mf``)."""

    kind = "mf"


register_policy("knn", KNNPolicy,
                doc="learned kNN router: max predicted score - lam·cost (path=, lam=, k=)")
register_policy("mlp", MLPPolicy,
                doc="learned MLP router: max predicted score - lam·cost (path=, lam=, k=)")
register_policy("mf", MFPolicy,
                doc="learned matrix-factorisation router (RouteLLM MF, N models) (path=, lam=, k=)")

"""The ``bandit`` policy: route each query to one model by LinUCB, learn from its outcome.

Round 0 routes to the model the learner (:class:`~orchestra.policies.bandit.learner.LinearBandit`)
chooses for the query's features; round 1 answers. :meth:`BanditPolicy.observe` learns from the
feedback of a run (``Orchestra.feedback(run_id, score=...)`` calls it): the chosen model's
score (``feedback.score``, else ``feedback.reward``) and cost (its route calls' ``cost_usd``).
Only the chosen model's outcome is ever seen (bandit feedback).

The cost weight λ is applied when deciding, never learned: ``lam=`` sets the default, a run's
``meta["lam"]`` overrides it for that run, and :attr:`BanditPolicy.lam` may be changed between
runs — the estimates stay the same, so the dial moves without retraining.

One instance serves concurrent runs: the learner is read and updated under one lock. With
``path=``, the state is loaded at start when the file exists and saved (atomically) after every
``save_every`` updates and on :meth:`BanditPolicy.save`.

Parameters (``--param key=value`` or a recipe's ``params:``): ``path``, ``lam`` (default 0.1),
``alpha`` (exploration bonus, default 0.25; 0: greedy), ``embedder`` (``minilm`` or ``hashing``),
``dim`` (projected embedding width, default 128), ``task_slots``, ``ridge``, ``cost_scale``
(USD; default: the priciest model's price for 400 input + 200 output tokens), ``save_every``,
``agent``, ``seed`` (tie-breaks).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError
from orchestra.policies.bandit.features import QueryFeatures, price_priors, resolve_embedder
from orchestra.policies.bandit.learner import LinearBandit, Prediction
from orchestra.policies.bandit.state import load_state, save_state
from orchestra.policies.base import Action, Answer, Call, Feedback, Route, RunView
from orchestra.policies.baselines import nominal_cost
from orchestra.policies.learned.policy import parse_lam

if TYPE_CHECKING:
    from orchestra.embed import Embedder
    from orchestra.spec import Pool

__all__ = ["BanditPolicy"]

_PENDING_MAX = 10_000  # features of runs decided but not yet observed, kept to skip re-embedding


class BanditPolicy:
    """Online contextual bandit over the agent's models (see the module docstring).

    Raises:
        UserError: a bad parameter, or a state file that is unreadable or learned for other
            models or features (naming the file and the fix).
    """

    def __init__(self, pool: Pool, path: str | None = None, lam: float = 0.1,
                 alpha: float = 0.25, embedder: str | Embedder | None = "minilm",
                 dim: int | None = 128, task_slots: int = 16, ridge: float = 1.0,
                 cost_scale: float | None = None, save_every: int = 20,
                 agent: str | None = None, seed: int | None = None) -> None:
        self.agent = pool.agent(agent).name if agent else pool.answer_agent.name
        self.models = list(pool.models_for(self.agent))
        self.arms = [m.name for m in self.models]
        self.lam = parse_lam(lam)
        self.alpha = _nonneg(alpha, "alpha")
        if save_every < 1:
            raise UserError(f"save_every must be >= 1 (got {save_every!r})")
        self.save_every = int(save_every)
        if cost_scale is None:
            cost_scale = max((nominal_cost(m) for m in self.models), default=0.0) or 1.0
        self.cost_scale = _nonneg(cost_scale, "cost_scale")
        if self.cost_scale == 0:
            raise UserError("cost_scale must be > 0 (got 0); it is the USD one unit of lam "
                            "weighs against one point of quality")
        self.features = QueryFeatures(resolve_embedder(embedder), dim=dim, task_slots=task_slots)
        self.path = Path(path).expanduser() if path else None
        if self.path is not None and self.path.is_dir():
            raise UserError(f"path={str(path)!r} is a folder; give the bandit state a file path "
                            "(e.g. bandit.npz)")
        if self.path is not None and self.path.exists():
            self.learner = load_state(self.path, self.arms, self.features.describe())
        else:
            self.learner = LinearBandit(self.arms, self.features.width, ridge=ridge,
                                        q_prior=[m.quality if m.quality is not None else 0.5
                                                 for m in self.models])
        self.rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, NDArray[np.float64]] = OrderedDict()
        self._since_save = 0
        self.name = f"bandit(lam={self.lam:.4g},alpha={self.alpha:.3g})"

    # ------------------------------------------------------------------ deciding
    def featurize(self, query: str, task: str | None) -> NDArray[np.float64]:
        """The ``(d,)`` features of one query."""
        return self.features([query], [task])[0]

    def predict(self, x: NDArray[np.float64], query: str) -> Prediction:
        """Every arm's estimates for features ``x`` of ``query`` (under the lock)."""
        price, worst = price_priors(self.models, query)
        with self._lock:
            return self.learner.predict(x, price, worst)

    def choose(self, x: NDArray[np.float64], query: str, *, lam: float | None = None,
               usd_left: float | None = None, task: str | None = None
               ) -> tuple[str | None, dict[str, Any]]:
        """The chosen model (``None`` when no model's cautious cost fits ``usd_left``) and the
        scores dict the decision carries (what :meth:`observe` reads back)."""
        lam = self.lam if lam is None else lam
        pred = self.predict(x, query)
        with self._lock:
            chosen, greedy, util, fits = LinearBandit.choose(pred, lam, self.cost_scale,
                                                             self.alpha, usd_left, self.rng)
        scores: dict[str, Any] = {
            "router": "bandit", "lam": lam, "alpha": self.alpha, "cost_scale": self.cost_scale,
            "task": task, "updates": self.learner.updates,
            "chosen": [] if chosen is None else [self.arms[chosen]],
            "explored": chosen is not None and chosen != greedy,
            "models": {n: {"score": float(pred.quality[i]), "bonus": float(pred.width[i]),
                           "cost": float(pred.cost[i]), "cost_high": float(pred.cost_high[i]),
                           "utility": float(util[i]), "fits": bool(fits[i]),
                           "n": int(pred.n[i])}
                       for i, n in enumerate(self.arms)},
        }
        return (None if chosen is None else self.arms[chosen]), scores

    def decide(self, view: RunView) -> Action:
        if view.rounds:
            return Answer(reason="routed once; answering")
        meta = view.meta or {}
        task = str(meta["task"]) if meta.get("task") is not None else None
        lam = parse_lam(meta["lam"]) if meta.get("lam") is not None else self.lam
        x = self.featurize(view.query, task)
        name, scores = self.choose(x, view.query, lam=lam, usd_left=view.budget_left.usd,
                                   task=task)
        if name is None:
            return Answer(reason=f"no model's cautious cost fits the USD left "
                                 f"({view.budget_left.usd!r})", scores=scores)
        if view.run_id:
            with self._lock:
                self._pending[view.run_id] = x
                while len(self._pending) > _PENDING_MAX:
                    self._pending.popitem(last=False)
        m = scores["models"][name]
        how = "explore" if scores["explored"] else "exploit"
        return Route([Call(agent=self.agent, model=name)],
                     reason=f"bandit ({how}): {name} (score {m['score']:.2f} + bonus, cost "
                            f"${m['cost']:.2g}, lam {lam:.3g})",
                     scores=scores)

    # ------------------------------------------------------------------ learning
    def observe(self, feedback: Feedback) -> None:
        """Learn the chosen model's outcome from a run's feedback.

        Nothing is learned when the run has no bandit decision, no score or reward was given,
        or every call to the chosen model failed (no outcome to learn from).
        """
        decision = next((d for d in feedback.decisions
                         if d.action == "route" and d.scores.get("router") == "bandit"
                         and d.scores.get("chosen")), None)
        if decision is None:
            return
        quality = feedback.score if feedback.score is not None else feedback.reward
        if quality is None:
            return
        if not math.isfinite(float(quality)):
            raise UserError(f"feedback score must be a finite number (got {quality!r})")
        arm_name = str(decision.scores["chosen"][0])
        if arm_name not in self.arms:
            return  # decided before the pool changed: not one of these arms
        calls = [c for c in feedback.calls if c.model == arm_name and c.role == "route"
                 and c.round == decision.round]
        if calls and all(c.error is not None for c in calls):
            return
        cost = sum(c.cost_usd for c in calls) if calls else feedback.cost_usd
        task = decision.scores.get("task")
        with self._lock:
            x = self._pending.pop(feedback.run_id, None)
        if x is None:
            x = self.featurize(feedback.query, None if task is None else str(task))
        self.learn(arm_name, x, feedback.query, float(quality), float(cost))

    def learn(self, arm: str, x: NDArray[np.float64], query: str, quality: float,
              cost_usd: float) -> None:
        """Learn one outcome directly (what :meth:`observe` does once it has read the feedback;
        also how an offline replay feeds the learner)."""
        i = self.arms.index(arm)
        price, _ = price_priors([self.models[i]], query)
        with self._lock:
            self.learner.update(i, x, quality, cost_usd, float(price[0]))
            self._since_save += 1
            due = self.path is not None and self._since_save >= self.save_every
        if due:
            self.save()

    def save(self, path: str | Path | None = None) -> Path:
        """Write the state now (to ``path``, else the policy's ``path``); the file written."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise UserError("this bandit has no path= to save to; pass save(path=...) or create "
                            "it with path=")
        with self._lock:
            out = save_state(target, self.learner, self.features.describe())
            self._since_save = 0
        return out

    def state_summary(self) -> Mapping[str, Any]:
        """Observations per model and updates so far."""
        with self._lock:
            return {"updates": self.learner.updates,
                    "n": dict(zip(self.arms, (int(v) for v in self.learner.n), strict=True))}


def _nonneg(v: Any, name: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number >= 0 (got {v!r})") from None
    if not (math.isfinite(f) and f >= 0):
        raise UserError(f"{name} must be a number >= 0 (got {v!r})")
    return f

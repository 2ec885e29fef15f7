"""The ``bandit`` policy: an online contextual bandit that learns routing from bandit feedback.

It starts cold, routes each query to one model, and learns only from that model's outcome
(``Orchestra.feedback`` → :meth:`~orchestra.policies.bandit.policy.BanditPolicy.observe`), the
setting of BaRP ("Learning to Route LLMs from Bandit Feedback"). The cost/quality trade-off λ
is a decide-time dial: the learner estimates quality and cost separately, so changing λ needs no
retraining. Modules, one job each (numpy loads only when the policy is built):

- :mod:`~orchestra.policies.bandit.learner`: per-model ridge estimators of quality and log-cost,
  LinUCB choice under the USD left;
- :mod:`~orchestra.policies.bandit.features`: query features (embedding, length, hashed task)
  and the price priors of cost;
- :mod:`~orchestra.policies.bandit.state`: the state file (``.npz``, atomic writes, checked reads);
- :mod:`~orchestra.policies.bandit.policy`: :class:`BanditPolicy` (decide, observe, save).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestra.policies.registry import register_policy

if TYPE_CHECKING:
    from orchestra.embed import Embedder
    from orchestra.policies.bandit.policy import BanditPolicy
    from orchestra.spec import Pool

__all__ = ["make_bandit_policy"]


def make_bandit_policy(pool: Pool, path: str | None = None, lam: float = 0.1,
                       alpha: float = 0.25, embedder: str | Embedder | None = "minilm",
                       dim: int | None = 128, task_slots: int = 16, ridge: float = 1.0,
                       cost_scale: float | None = None, save_every: int = 20,
                       agent: str | None = None, seed: int | None = None) -> BanditPolicy:
    """Online LinUCB bandit: max score + bonus - lam·cost, learns from feedback (path=, lam=,
    alpha=, embedder=, seed=)."""
    from orchestra.policies.bandit.policy import BanditPolicy

    return BanditPolicy(pool, path=path, lam=lam, alpha=alpha, embedder=embedder, dim=dim,
                        task_slots=task_slots, ridge=ridge, cost_scale=cost_scale,
                        save_every=save_every, agent=agent, seed=seed)


def __getattr__(name: str) -> Any:
    if name == "BanditPolicy":
        from orchestra.policies.bandit.policy import BanditPolicy

        return BanditPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_policy(
    "bandit", make_bandit_policy,
    doc="online contextual bandit (LinUCB), learns from feedback: max score + bonus - lam·cost "
        "(path=, lam=, alpha=, embedder=, seed=)",
)

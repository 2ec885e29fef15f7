"""The bandit's learner: per-arm ridge estimators of quality and log-cost, chosen by LinUCB.

For every arm (model) ``a`` and feature vector ``x`` (:mod:`~orchestra.policies.bandit.features`)
the learner keeps one ridge design ``A_a = ridge·I + Σ x xᵀ`` over the queries routed to ``a``,
and two regressions on it:

* quality: ``q̂_a(x) = q0_a + θq_a · x`` (``q0_a``: the arm's prior quality, the pool's
  ``quality`` or 0.5), fitted to the observed score minus ``q0_a``;
* cost: ``log ĉ_a(x) = log p_a(x) + θc_a · x``, where ``p_a(x)`` is the *price prior* (pool
  prices × the query's token estimate, given with every call), fitted to ``log(cost) - log p``.
  An arm never tried is thus predicted at its list price, and learning corrects it.

Choosing (:meth:`LinearBandit.choose`), for the cost weight ``lam``::

    utility_a = q̂_a(x) + alpha · sqrt(xᵀ A_a⁻¹ x) - lam · ĉ_a(x) / cost_scale

maximised over the arms whose **cautious cost** fits the USD left: the price prior's worst case
(what the budget would reserve) before the arm has ``min_cost_obs`` observations, the larger of
that and the learned upper bound ``exp(log ĉ + z·s·sqrt(1 + xᵀA⁻¹x))`` until then, the learned
bound after (``s``: the residual spread of log-cost, measured on each observation before it is
learned). The exploration bonus is added after that filter, so exploration never reaches an arm
the budget left cannot pay. The state holds no λ: the dial moves at decide time.

Shapes: ``m`` arms, ``d`` features; ``A`` is ``(m, d, d)``, ``bq`` and ``bc`` ``(m, d)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError

__all__ = ["COST_FLOOR", "LinearBandit", "Prediction"]

FloatArray = NDArray[np.float64]

#: Costs below this (free local models) are learned as this, so their log is finite.
COST_FLOOR = 1e-9


@dataclass(frozen=True)
class Prediction:
    """Every arm's estimates for one query (arrays of shape ``(m,)``).

    Attributes:
        quality: predicted quality ``q̂``.
        width: ``sqrt(xᵀ A⁻¹ x)``, the uncertainty the bonus multiplies.
        cost: predicted cost in USD.
        cost_high: the cautious cost the budget check uses.
        n: observations per arm so far.
    """

    quality: FloatArray
    width: FloatArray
    cost: FloatArray
    cost_high: FloatArray
    n: NDArray[np.int64]

    def utility(self, lam: float, cost_scale: float, alpha: float) -> FloatArray:
        """``q̂ + alpha·width - lam·ĉ/cost_scale`` per arm."""
        return self.quality + alpha * self.width - lam * self.cost / cost_scale


class LinearBandit:
    """LinUCB over per-arm ridge estimators of quality and log-cost (see the module docstring).

    Not thread-safe by itself: the policy holds a lock around :meth:`predict` and
    :meth:`update`.

    Args:
        arms: arm (model) names.
        dim: feature width ``d``.
        q_prior: ``(m,)`` prior quality per arm (what an untried arm is predicted at).
        ridge: the ridge penalty (the prior's weight, in observations).
        cost_z: the normal quantile of the learned cost bound (1.645: the 95th percentile).
        min_cost_obs: observations before the learned cost bound alone is trusted.

    Raises:
        UserError: no arms, a non-positive ``dim`` or ``ridge``, or a ``q_prior`` of the wrong
            length.
    """

    def __init__(self, arms: Sequence[str], dim: int, *,
                 q_prior: Sequence[float] | NDArray[np.float64] | None = None,
                 ridge: float = 1.0, cost_z: float = 1.645, min_cost_obs: int = 5) -> None:
        self.arms = list(arms)
        m = len(self.arms)
        if m == 0:
            raise UserError("a bandit needs at least one arm (got none); give the pool a model")
        if dim < 1:
            raise UserError(f"feature dim must be >= 1 (got {dim!r})")
        if not (ridge > 0 and math.isfinite(ridge)):
            raise UserError(f"ridge must be a positive number (got {ridge!r})")
        prior = np.full(m, 0.5) if q_prior is None else np.asarray(q_prior, dtype=np.float64)
        if prior.shape != (m,):
            raise UserError(f"q_prior must have one value per arm ({m}; got {prior.shape})")
        self.dim = dim
        self.ridge = float(ridge)
        self.cost_z = float(cost_z)
        self.min_cost_obs = int(min_cost_obs)
        self.q_prior = prior
        self.A = np.repeat(np.eye(dim)[None] * self.ridge, m, axis=0)
        self.bq = np.zeros((m, dim))
        self.bc = np.zeros((m, dim))
        self.n = np.zeros(m, dtype=np.int64)
        self.cost_sse = np.zeros(m)  # squared log-cost residuals, each before it was learned
        self.updates = 0
        self._refresh()

    # ------------------------------------------------------------------ state
    def _refresh(self, arm: int | None = None) -> None:
        """Recompute ``A⁻¹`` and the coefficients (of one arm, or of all)."""
        if arm is None:
            self.A_inv = np.linalg.inv(self.A)
            self.theta_q = np.einsum("mij,mj->mi", self.A_inv, self.bq)
            self.theta_c = np.einsum("mij,mj->mi", self.A_inv, self.bc)
        else:
            self.theta_q[arm] = self.A_inv[arm] @ self.bq[arm]
            self.theta_c[arm] = self.A_inv[arm] @ self.bc[arm]

    def cost_spread(self) -> FloatArray:
        """Per arm, the residual standard deviation of log-cost (1.0 before any observation)."""
        return np.sqrt((self.cost_sse + 1.0) / (self.n + 1.0))

    # ------------------------------------------------------------------ predict / choose
    def predict(self, x: FloatArray, price_cost: FloatArray, price_high: FloatArray) -> Prediction:
        """Every arm's estimates for features ``x``.

        Args:
            x: ``(d,)`` features of the query.
            price_cost: ``(m,)`` the price prior's expected cost of each arm for this query.
            price_high: ``(m,)`` its worst case (what the budget would reserve).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise UserError(f"expected {self.dim} features (got shape {x.shape})")
        ax = self.A_inv @ x  # (m, d)
        width = np.sqrt(np.maximum(ax @ x, 0.0))
        quality = self.q_prior + self.theta_q @ x
        log_cost = np.log(np.maximum(price_cost, COST_FLOOR)) + self.theta_c @ x
        spread = self.cost_spread() * np.sqrt(1.0 + width**2)
        with np.errstate(over="ignore"):
            cost = np.exp(log_cost)
            learned_high = np.exp(log_cost + self.cost_z * spread)
        high = np.where(self.n == 0, price_high,
                        np.where(self.n < self.min_cost_obs,
                                 np.maximum(price_high, learned_high), learned_high))
        return Prediction(quality=quality, width=width, cost=cost, cost_high=high, n=self.n.copy())

    @staticmethod
    def choose(pred: Prediction, lam: float, cost_scale: float, alpha: float,
               usd_left: float | None = None, rng: np.random.Generator | None = None
               ) -> tuple[int | None, int | None, FloatArray, NDArray[np.bool_]]:
        """The arm to call: best utility among the arms whose cautious cost fits ``usd_left``.

        Returns:
            ``(chosen, greedy, utility, fits)``: the chosen arm (``None`` when none fits), the
            arm the estimates alone (no bonus) would choose among those that fit, every arm's
            utility (with the bonus) and whether it fits. Ties break at random with ``rng``.
        """
        util = pred.utility(lam, cost_scale, alpha)
        fits = (np.ones(len(util), dtype=bool) if usd_left is None
                else pred.cost_high <= usd_left + 1e-15)
        if not fits.any():
            return None, None, util, fits
        greedy_util = pred.utility(lam, cost_scale, 0.0)
        return (_argmax(util, fits, rng), _argmax(greedy_util, fits, rng), util, fits)

    # ------------------------------------------------------------------ learn
    def update(self, arm: int, x: FloatArray, quality: float, cost_usd: float,
               price_cost: float) -> None:
        """Learn one outcome of ``arm`` on features ``x``.

        Args:
            arm: the arm's index.
            x: ``(d,)`` the features it was chosen on.
            quality: the observed score (in [0, 1] usually; any finite number is learned).
            cost_usd: what the call cost.
            price_cost: the arm's price prior for this query (as given to :meth:`predict`).
        """
        if not (math.isfinite(quality) and math.isfinite(cost_usd) and cost_usd >= 0):
            raise UserError(f"expected a finite quality and a cost >= 0 (got quality {quality!r}, "
                            f"cost {cost_usd!r})")
        x = np.asarray(x, dtype=np.float64)
        y_c = math.log(max(cost_usd, COST_FLOOR)) - math.log(max(price_cost, COST_FLOOR))
        resid = y_c - float(self.theta_c[arm] @ x)
        self.cost_sse[arm] += resid * resid
        # Sherman–Morrison: (A + x xᵀ)⁻¹ from A⁻¹ in O(d²).
        ax = self.A_inv[arm] @ x
        self.A_inv[arm] -= np.outer(ax, ax) / (1.0 + float(x @ ax))
        self.A[arm] += np.outer(x, x)
        self.bq[arm] += (quality - self.q_prior[arm]) * x
        self.bc[arm] += y_c * x
        self.n[arm] += 1
        self.updates += 1
        self._refresh(arm)


def _argmax(util: FloatArray, mask: NDArray[np.bool_], rng: np.random.Generator | None) -> int:
    masked = np.where(mask, util, -np.inf)
    best = np.flatnonzero(masked >= masked.max() - 1e-12)
    if rng is None or len(best) == 1:
        return int(best[0])
    return int(rng.choice(best))

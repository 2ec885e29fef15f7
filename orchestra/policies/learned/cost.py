"""The learned routers' cost model: every model's expected cost for a query.

The cost a model will charge for a query is predicted from the training outcomes only
(:class:`CostModel`): per model, a ridge regression of ``log(cost)`` on ``[1, log(1 + chars),
task one-hot]``, turned into the expected cost with the log-normal mean
``exp(mu + sigma^2 / 2)``. Long prompts and verbose tasks are thus predicted to cost more, the
way recorded costs behave. Its **high** prediction (the 95th percentile of actual / predicted on
the training queries, times the prediction) is what must fit the budget left.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orchestra.policies.learned.features import FloatArray, col_means

__all__ = ["CostModel"]


class CostModel:
    """Per-model expected cost from query length and task (training outcomes only).

    For each model ``m``, a ridge regression (penalty ``ridge`` on every coefficient but the
    intercept) of ``log(cost)`` on ``z = [1, log(1 + chars), task one-hot]`` over the training
    queries with a recorded positive cost; the prediction is the log-normal mean
    ``p0 * exp(z . w + s^2 / 2)`` where ``s^2`` is the residual variance and ``p0`` the share of
    positive costs. A model whose recorded costs are all zero is predicted to cost zero.
    :meth:`high` multiplies by the 95th percentile of actual / predicted on the training queries.

    Shapes:
        predict(lengths ``(n,)``, task one-hot ``(n, t)``) -> ``(n, m)``.
    """

    def __init__(self, coef: FloatArray, var: FloatArray, positive: FloatArray,
                 high_ratio: FloatArray, mean: FloatArray) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)  # (m, 2 + t)
        self.var = np.asarray(var, dtype=np.float64)  # (m,)
        self.positive = np.asarray(positive, dtype=np.float64)  # (m,)
        self.high_ratio = np.asarray(high_ratio, dtype=np.float64)  # (m,)
        self.mean = np.asarray(mean, dtype=np.float64)  # (m,) training mean cost

    @staticmethod
    def _design(lengths: FloatArray, onehot: NDArray[np.float32]) -> FloatArray:
        n = len(lengths)
        return np.column_stack([np.ones(n), np.log1p(np.asarray(lengths, dtype=np.float64)),
                                np.asarray(onehot, dtype=np.float64).reshape(n, -1)])

    @classmethod
    def fit(cls, lengths: FloatArray, onehot: NDArray[np.float32], costs: FloatArray,
            *, ridge: float = 1.0) -> CostModel:
        z = cls._design(lengths, onehot)
        m = costs.shape[1]
        coef = np.zeros((m, z.shape[1]))
        var = np.zeros(m)
        positive = np.zeros(m)
        mean = col_means(costs)
        pen = np.eye(z.shape[1]) * ridge
        pen[0, 0] = 0.0
        for j in range(m):
            c = costs[:, j]
            seen = ~np.isnan(c)
            pos = seen & (c > 0)
            positive[j] = pos.sum() / max(1, seen.sum())
            if pos.sum() == 0:
                coef[j, 0] = -np.inf
                continue
            zj, y = z[pos], np.log(c[pos])
            coef[j] = np.linalg.solve(zj.T @ zj + pen, zj.T @ y)
            resid = y - zj @ coef[j]
            var[j] = float(np.mean(resid**2))
        model = cls(coef, var, positive, np.ones(m), mean)
        pred = model.predict(lengths, onehot)
        ratio = np.where((pred > 0) & ~np.isnan(costs), costs / np.where(pred > 0, pred, 1), np.nan)
        high = np.array([np.nanquantile(ratio[:, j], 0.95) if np.isfinite(ratio[:, j]).any()
                         else 1.0 for j in range(m)])
        model.high_ratio = np.maximum(high, 1.0)
        return model

    def predict(self, lengths: FloatArray, onehot: NDArray[np.float32]) -> FloatArray:
        z = self._design(lengths, onehot)
        with np.errstate(over="ignore", invalid="ignore"):
            mu = z @ self.coef.T + self.var[None, :] / 2.0
            out = np.exp(mu) * self.positive[None, :]
        return np.nan_to_num(out, nan=0.0, posinf=np.finfo(np.float64).max)

    def high(self, lengths: FloatArray, onehot: NDArray[np.float32]) -> FloatArray:
        return self.predict(lengths, onehot) * self.high_ratio[None, :]

    def to_dict(self) -> dict[str, Any]:
        coef = np.where(np.isinf(self.coef), -1e300, self.coef)
        return {"coef": coef.tolist(), "var": self.var.tolist(), "positive": self.positive.tolist(),
                "high_ratio": self.high_ratio.tolist(), "mean": self.mean.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CostModel:
        return cls(np.asarray(d["coef"]), np.asarray(d["var"]), np.asarray(d["positive"]),
                   np.asarray(d["high_ratio"]), np.asarray(d["mean"]))

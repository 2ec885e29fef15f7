"""A small calibrated classifier served in numpy: standardise, one hidden layer, sigmoid.

Trained by :mod:`orchestra.training.escalate_fit` (torch, binary cross-entropy, so its outputs
are probabilities); serving needs numpy only, so a decision costs microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["NumpyMLP"]

FloatArray = NDArray[np.float64]


class NumpyMLP:
    """``sigmoid(w2 . tanh(W1 (x - mean) / std + b1) + b2)``; ``W1`` empty: logistic.

    Shapes: ``mean``/``std`` ``(d,)``, ``w1`` ``(d, h)``, ``b1`` ``(h,)``, ``w2`` ``(h or d,)``,
    ``b2`` scalar.
    """

    def __init__(self, mean: FloatArray, std: FloatArray, w1: FloatArray, b1: FloatArray,
                 w2: FloatArray, b2: float) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.w1 = np.asarray(w1, dtype=np.float64)
        self.b1 = np.asarray(b1, dtype=np.float64)
        self.w2 = np.asarray(w2, dtype=np.float64)
        self.b2 = float(b2)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def predict(self, x: FloatArray) -> FloatArray:
        """P(positive) of each row of ``x`` ``(n, d)``."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        if self.w1.size:
            z = np.tanh(z @ self.w1 + self.b1)
        out: FloatArray = 1.0 / (1.0 + np.exp(-(z @ self.w2 + self.b2)))
        return out

    def state(self, prefix: str) -> dict[str, FloatArray]:
        return {f"{prefix}.mean": self.mean, f"{prefix}.std": self.std, f"{prefix}.w1": self.w1,
                f"{prefix}.b1": self.b1, f"{prefix}.w2": self.w2,
                f"{prefix}.b2": np.asarray([self.b2])}

    @classmethod
    def from_state(cls, st: Mapping[str, Any], prefix: str) -> NumpyMLP:
        return cls(st[f"{prefix}.mean"], st[f"{prefix}.std"], st[f"{prefix}.w1"],
                   st[f"{prefix}.b1"], st[f"{prefix}.w2"], float(st[f"{prefix}.b2"][0]))

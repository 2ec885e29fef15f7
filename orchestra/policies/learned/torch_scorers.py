"""The torch score models of the learned routers: an MLP and matrix factorisation (MF).

* :class:`MLPScorer` — a one-hidden-layer MLP, input ``[embedding, task one-hot]``, one sigmoid
  output per model, trained with binary cross-entropy on every recorded (query, model) score
  (fractional scores are soft targets; missing ones are masked), AdamW, early stopping on an
  inner validation fold (10 % of the training queries), ``ensemble`` independently seeded
  members averaged.
* :class:`MFScorer` — RouteLLM's matrix factorisation generalised to N models: the features are
  projected to ``dim`` dimensions, ``q = W x``, and the logit of model ``m`` is the bilinear score
  ``<q, v_m> + b_m`` with a learned model embedding ``v_m`` and a per-model bias ``b_m``; same loss,
  optimiser and early stopping as the MLP.

torch is imported only when a network is built, fitted or run (CPU, one thread).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError
from orchestra.policies.learned.features import FloatArray

__all__ = ["MFScorer", "MLPScorer", "Progress"]

Progress = Callable[[str, int, int], None]
"""A progress callback: ``(stage, done, total)``."""


class _TorchScorer:
    """Shared training loop of the MLP and MF scorers (torch, CPU)."""

    kind = "torch"

    def __init__(self, *, weight_decay: float = 1e-4, lr: float = 1e-3, ensemble: int = 1,
                 max_epochs: int = 300, patience: int = 20, batch_size: int = 128,
                 val_fraction: float = 0.1, seed: int = 0) -> None:
        self.weight_decay, self.lr = float(weight_decay), float(lr)
        self.ensemble = int(ensemble)
        if self.ensemble < 1:
            raise UserError(f"ensemble must be >= 1 (got {ensemble!r})")
        self.max_epochs, self.patience = int(max_epochs), int(patience)
        self.batch_size, self.val_fraction, self.seed = int(batch_size), float(val_fraction), seed
        self.in_dim = 0
        self.n_models = 0
        self.members: list[Any] = []
        self.epochs: list[int] = []

    def _build(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _common_params(self) -> dict[str, Any]:
        return {"weight_decay": self.weight_decay, "lr": self.lr, "ensemble": self.ensemble,
                "max_epochs": self.max_epochs, "patience": self.patience,
                "batch_size": self.batch_size}

    def fit(self, x: NDArray[np.float32], scores: FloatArray,
            progress: Progress | None = None, **_: Any) -> _TorchScorer:
        import torch

        self.in_dim, self.n_models = int(x.shape[1]), int(scores.shape[1])
        self.members, self.epochs = [], []
        n = len(x)
        for e in range(self.ensemble):
            rng = np.random.default_rng([self.seed, e])
            perm = rng.permutation(n)
            n_val = max(1, round(n * self.val_fraction)) if n >= 10 else 0
            val, tr = perm[:n_val], perm[n_val:]
            torch.manual_seed(int(rng.integers(2**31)))
            net = self._build()
            with _one_thread():
                epochs = _train_net(net, x, scores, tr, val, lr=self.lr, wd=self.weight_decay,
                                    max_epochs=self.max_epochs, patience=self.patience,
                                    batch_size=self.batch_size, rng=rng,
                                    progress=_member_progress(progress, e))
            net.eval()
            self.members.append(net)
            self.epochs.append(epochs)
        return self

    def predict(self, x: NDArray[np.float32]) -> FloatArray:
        import torch

        if not self.members:
            raise UserError("this scorer is not trained; call fit() or load an artifact")
        with torch.no_grad(), _one_thread():
            xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
            probs = [torch.sigmoid(net(xt)).numpy().astype(np.float64) for net in self.members]
        return np.mean(probs, axis=0)

    def state(self) -> dict[str, Any]:
        return {"members": [net.state_dict() for net in self.members], "epochs": self.epochs,
                "in_dim": self.in_dim, "n_models": self.n_models}

    def load_state(self, st: Mapping[str, Any]) -> _TorchScorer:
        self.in_dim, self.n_models = int(st["in_dim"]), int(st["n_models"])
        self.members = []
        for sd in st["members"]:
            net = self._build()
            net.load_state_dict(sd)
            net.eval()
            self.members.append(net)
        self.epochs = list(st.get("epochs", []))
        return self


def _member_progress(progress: Progress | None, member: int) -> Callable[[str, int, int], None] | None:
    if progress is None:
        return None
    return lambda stage, done, total: progress(f"member {member + 1}", done, total)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread: these nets are tiny, and on a shared CPU more threads
    only spin (measured 30x slower on a loaded 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_net(net: Any, x: NDArray[np.float32], scores: FloatArray, tr: NDArray[np.intp],
               val: NDArray[np.intp], *, lr: float, wd: float, max_epochs: int, patience: int,
               batch_size: int, rng: np.random.Generator,
               progress: Callable[[str, int, int], None] | None) -> int:
    """Masked-BCE training with AdamW and early stopping on ``val``; returns the best epoch."""
    import torch

    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    mask = torch.as_tensor(~np.isnan(scores))
    yt = torch.as_tensor(np.nan_to_num(scores, nan=0.0).astype(np.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def loss_on(idx: NDArray[np.intp]) -> Any:
        ii = torch.as_tensor(idx)
        m = mask[ii]
        raw = bce(net(xt[ii]), yt[ii], reduction="none")
        return (raw * m).sum() / m.sum().clamp(min=1)

    best, best_epoch, best_state, bad = math.inf, 0, None, 0
    for epoch in range(1, max_epochs + 1):
        net.train()
        order = rng.permutation(tr)
        for start in range(0, len(order), batch_size):
            opt.zero_grad()
            loss = loss_on(order[start:start + batch_size])
            loss.backward()
            opt.step()
        if len(val) == 0:
            best_epoch = epoch
            continue
        net.eval()
        with torch.no_grad():
            v = float(loss_on(val))
        if v < best - 1e-5:
            best, best_epoch, bad = v, epoch, 0
            best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
        if progress is not None:
            progress("epoch", epoch, max_epochs)
    if best_state is not None:
        net.load_state_dict(best_state)
    return best_epoch


class MLPScorer(_TorchScorer):
    """``sigmoid(W2 · dropout(GELU(W1 x + b1)) + b2)``: one output per model.

    Args:
        hidden: hidden units.
        dropout: dropout after the hidden layer (and 0.1 of it on the input).
        weight_decay, lr, ensemble, max_epochs, patience, batch_size, seed: training, see
            :class:`_TorchScorer`.

    Shapes:
        x ``(n, d + t)`` -> scores ``(n, m)``.
    """

    kind = "mlp"

    def __init__(self, hidden: int = 256, dropout: float = 0.1, **kw: Any) -> None:
        super().__init__(**kw)
        self.hidden, self.dropout = int(hidden), float(dropout)

    def params(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "dropout": self.dropout, **self._common_params()}

    def _build(self) -> Any:
        from torch import nn

        return nn.Sequential(
            nn.Dropout(self.dropout / 3), nn.Linear(self.in_dim, self.hidden), nn.GELU(),
            nn.Dropout(self.dropout), nn.Linear(self.hidden, self.n_models),
        )


def _mf_module(in_dim: int, n_models: int, dim: int) -> Any:
    import torch
    from torch import nn

    class BilinearMF(nn.Module):  # type: ignore[misc]
        """``logit[q, m] = <W x_q, v_m> + b_m`` (RouteLLM's MF, N models)."""

        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(in_dim, dim, bias=False)
            self.model_emb = nn.Parameter(torch.randn(n_models, dim) * dim ** -0.5)
            self.bias = nn.Parameter(torch.zeros(n_models))

        def forward(self, x: Any) -> Any:
            return self.proj(x) @ self.model_emb.T + self.bias

    return BilinearMF()


class MFScorer(_TorchScorer):
    """Matrix factorisation: ``sigmoid(<W x, v_m> + b_m)``, RouteLLM's bilinear router for N models.

    Args:
        dim: size of the shared query / model space.
        weight_decay, lr, ensemble, max_epochs, patience, batch_size, seed: training, see
            :class:`_TorchScorer`.

    Shapes:
        x ``(n, d + t)`` -> scores ``(n, m)``; ``W`` ``(dim, d + t)``, ``v`` ``(m, dim)``.
    """

    kind = "mf"

    def __init__(self, dim: int = 64, **kw: Any) -> None:
        super().__init__(**kw)
        self.dim = int(dim)

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim, **self._common_params()}

    def _build(self) -> Any:
        return _mf_module(self.in_dim, self.n_models, self.dim)

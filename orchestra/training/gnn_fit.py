"""The GNN router's training loop (one worker; Ray-agnostic): :func:`fit_gnn`.

An epoch shuffles the training queries into ``round(1 / target_fraction)`` chunks; each step
holds one chunk out as targets (:mod:`orchestra.training.gnn_masking`) and the loss is the
binary cross-entropy of the predicted scores plus ``cost_weight`` × the squared error of the
predicted standardised log cost on every (target, model) pair. With several workers each takes
a slice of the targets (DDP averages the gradients). An exponential moving average of the
weights is what is validated, kept and served. After each epoch the validation AIQ
(:mod:`orchestra.training.gnn_eval`) decides early stopping. Seeds are derived from
``(seed, epoch)``, so an interrupted run that resumes repeats exactly what an uninterrupted one
does.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from orchestra.policies.gnn.graph import build_graph
from orchestra.training.gnn_config import GNNTrainConfig
from orchestra.training.gnn_data import Bundle
from orchestra.training.gnn_eval import calibrate, to_device, validate, validation_graph
from orchestra.training.gnn_masking import step_edges, target_pairs

__all__ = ["ReportFn", "fit_gnn", "seed_everything"]


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


ReportFn = Callable[[dict[str, Any], Callable[[], dict[str, Any]] | None], None]


def fit_gnn(
    bundle: Bundle,
    config: GNNTrainConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    state: Mapping[str, Any] | None = None,
    report: ReportFn | None = None,
    prepare_model: Callable[[Any], Any] | None = None,
    device: Any = "cpu",
    max_epochs: int | None = None,
) -> dict[str, Any]:
    """Train (or continue training) the GNN router; a plain function, Ray-agnostic.

    Args:
        bundle: the data (:func:`~orchestra.training.gnn_data.prepare_bundle`).
        config: hyperparameters.
        rank / world_size: this worker's place among data-parallel workers.
        state: a training state from an earlier checkpoint to continue from.
        report: called after each epoch with ``(metrics, make_state)``; ``make_state()`` builds
            the checkpointable training state.
        prepare_model: wraps the model for distributed training (``ray.train.torch.prepare_model``).
        device: where to train.
        max_epochs: stop after this epoch index (exclusive) even if ``config.epochs`` is larger
            (used to simulate an interruption in tests).

    Returns:
        The final training state (``model``, ``best_model``, ``optimizer``, ``epoch``,
        ``best_val_aiq``, ``best_epoch``, ``bad_epochs``, ``done``, ``history``).
    """
    import torch
    import torch.nn.functional as F

    from orchestra.policies.gnn.model import GNNRouter

    seed_everything(config.seed)
    d = bundle.data
    net = GNNRouter(config.model_shape(d))
    ema = GNNRouter(config.model_shape(d))
    ema.load_state_dict(net.state_dict())
    opt_state = None
    history: list[dict[str, Any]] = []
    start, best_aiq, best_epoch, bad = 0, -math.inf, -1, 0
    best_model: dict[str, Any] | None = None
    done = False
    if state is not None:
        net.load_state_dict(state["model"])
        ema.load_state_dict(state.get("ema") or state["model"])
        opt_state = state.get("optimizer")
        start = int(state["epoch"]) + 1
        best_aiq = float(state["best_val_aiq"])
        best_epoch = int(state["best_epoch"])
        bad = int(state["bad_epochs"])
        best_model = state.get("best_model")
        history = list(state.get("history", []))
        done = bool(state.get("done", False))
    net.to(device)
    ema.to(device).eval()
    model = prepare_model(net) if prepare_model is not None else net
    averaged = config.ema_decay > 0
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    val_graph = to_device(validation_graph(bundle, config), device)
    n_chunks = max(1, round(1.0 / config.target_fraction))
    last_epoch = start - 1

    def make_state(final: bool = False) -> dict[str, Any]:
        cal = None
        if final and best_model is not None:
            # Calibrate the best weights here, where the data already is, so the driver only
            # writes files.
            probe = GNNRouter(config.model_shape(d))
            probe.load_state_dict(best_model)
            cal = calibrate(probe, bundle, config)
        return {
            "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()},
            "best_model": best_model,
            "optimizer": opt.state_dict(),
            "epoch": last_epoch,
            "best_val_aiq": best_aiq,
            "best_epoch": best_epoch,
            "bad_epochs": bad,
            "done": done,
            "history": history,
            "config": config.model_dump(),
            "calibration": cal,
        }

    end = config.epochs if max_epochs is None else min(config.epochs, max_epochs)
    for epoch in range(start, end):
        if done:
            break
        t0 = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        torch.manual_seed(config.seed * 1_000_003 + epoch)
        model.train()
        losses = []
        for chunk in np.array_split(rng.permutation(bundle.train_idx), n_chunks):
            edges = step_edges(bundle, config, chunk, rng)
            graph = to_device(build_graph(d, bundle.norm, edges, bundle.neighbours), device)
            mine = chunk[rank::world_size]
            pairs, ys, yc = target_pairs(bundle, mine, edges.agent_model, rng)
            logit, cz = model(graph, torch.from_numpy(pairs).to(device))
            loss = F.binary_cross_entropy_with_logits(logit, torch.from_numpy(ys).to(device))
            loss = loss + config.cost_weight * F.mse_loss(cz, torch.from_numpy(yc).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if averaged:
                with torch.no_grad():
                    for pe, pn in zip(ema.parameters(), net.parameters(), strict=True):
                        pe.mul_(config.ema_decay).add_(pn.detach(), alpha=1.0 - config.ema_decay)
            losses.append(float(loss.detach().cpu()))
        served = ema if averaged else net
        metrics = validate(served, bundle, config, val_graph)
        last_epoch = epoch
        if metrics["val_aiq"] > best_aiq + 1e-6:
            best_aiq, best_epoch, bad = metrics["val_aiq"], epoch, 0
            best_model = {k: v.detach().cpu().clone() for k, v in served.state_dict().items()}
        else:
            bad += 1
        done = (epoch + 1 >= config.epochs) or (epoch + 1 >= config.min_epochs and bad >= config.patience)
        metrics.update(
            epoch=epoch, train_loss=float(np.mean(losses)), best_val_aiq=best_aiq,
            best_epoch=best_epoch, done=done, epoch_s=time.perf_counter() - t0,
        )
        history.append(dict(metrics))
        if report is not None:
            final = done or epoch + 1 >= end
            report(metrics, lambda final=final: make_state(final))  # type: ignore[misc]
    return make_state(final=True)

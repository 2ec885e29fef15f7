"""Training the GNN router: a plain training loop, run by Ray Train's ``TorchTrainer``.

Read top to bottom:

1. :func:`prepare_bundle` (driver, before Ray): load the outcome table, drop excluded models,
   embed every query, task, model description and agent (cached on disk), split the training
   queries into train / validation (stratified by task, seeded), and precompute each query's
   nearest neighbours. The result is a :class:`Bundle` of numpy arrays, ``ray.put`` once and
   read by every worker.
2. :func:`fit_gnn` (each worker): the training loop. An epoch shuffles the training queries into
   ``round(1 / target_fraction)`` chunks; each step holds one chunk out as *targets*: their
   outcome edges are removed, so they enter the graph as new queries do at serving time (only
   receiving messages), and the loss is the binary cross-entropy of the predicted scores plus
   ``cost_weight`` × the squared error of the predicted standardised log cost on every
   (target, model) pair — GraphRouter's masked-edge prediction, masking whole queries. Each
   step also drops a random ``edge_dropout`` share of the context edges, and with probability
   ``cold_model_prob`` makes one model *cold* (all but 0..``max_profile`` of its outcome edges
   removed), so that predicting a model from its description and price alone is trained too.
   With several workers each takes a slice of the targets (DDP averages the gradients).
   After each epoch the validation queries (never context during training) are predicted from
   the whole training graph, and the **validation AIQ** of a λ sweep decides early stopping.
   Seeds are derived from ``(seed, epoch)``, so an interrupted run that resumes repeats
   exactly what an uninterrupted one does.
3. :func:`train_loop_per_worker` wraps :func:`fit_gnn` for Ray: it resumes from
   ``ray.train.get_checkpoint()``, and reports metrics every epoch with a checkpoint (rank 0)
   holding the model, the optimiser, the best model so far and the config.
4. :func:`run_training` (driver): starts or joins Ray, runs the ``TorchTrainer`` (local Ray by
   default, a cluster given an address, GPU workers when asked), shows progress with rich,
   and writes the serving artifact (:func:`save_artifact`): ``config.json``, ``model.pt``,
   ``graph.npz`` (the training graph served as context).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from orchestra.errors import UserError
from orchestra.policies.gnn.graph import (
    EdgeSet,
    GraphData,
    Neighbours,
    Normalizer,
    build_graph,
)

if TYPE_CHECKING:

    from orchestra.outcomes import OutcomeTable

__all__ = [
    "ARTIFACT_VERSION",
    "Bundle",
    "GNNTrainConfig",
    "bundle_from_table",
    "cost_scale_of",
    "fit_gnn",
    "prepare_bundle",
    "run_training",
    "save_artifact",
    "train_loop_per_worker",
]

ARTIFACT_VERSION = 1
#: Neighbours kept per query before filtering to context queries (>= k / (1 - held-out share)).
_TOP_K = 64


class GNNTrainConfig(BaseModel):
    """Everything that defines a GNN training run; saved with every checkpoint and artifact.

    Args:
        data: outcome table name or path (``routerbench``, ``llmrouter``, a file).
        exclude_models: models dropped from training (to test adding them at serving time).
        embedder: ``minilm`` (default) or ``hashing`` (tests).
        views: how queries are embedded (``full`` text and its ``tail``; see
            :func:`~orchestra.policies.gnn.graph.embed_query_texts`).
        val_fraction: share of training queries held out for validation / early stopping.
        epochs: most epochs.
        patience: stop after this many epochs without a better validation AIQ.
        min_epochs: never stop before this epoch.
        lr / weight_decay: AdamW.
        hidden / layers / dropout / attention: the network (:class:`~orchestra.policies.gnn.model.ModelConfig`).
        k: nearest context queries linked to each query (message passing).
        vote_k: nearest context queries whose outcomes the neighbour vote reads.
        target_fraction: share of training queries held out as targets per step.
        edge_dropout: share of context outcome edges dropped per step.
        task_dropout: share of targets not linked to their task (serving may not know it).
        cold_model_prob: chance per step that one model keeps only 0..``max_profile`` edges.
        max_profile: most outcome edges a cold model keeps.
        cost_weight: weight of the cost loss.
        ema_decay: per-step decay of an exponential moving average of the weights, which is
            what is validated, kept and served (0: the raw weights). Averaging smooths the
            step-to-step noise of a small, noisy training signal.
        seed: everything random derives from it.
        split_seed: seed of the train / validation split only (default: ``seed``), to compare
            initialisations on the same validation queries.
    """

    model_config = ConfigDict(extra="forbid")

    data: str = "routerbench"
    exclude_models: list[str] = Field(default_factory=list)
    embedder: Literal["minilm", "hashing"] = "minilm"
    views: list[Literal["full", "tail"]] = Field(
        default_factory=lambda: ["full", "tail"]  # type: ignore[arg-type,return-value]
    )
    val_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    epochs: int = Field(default=150, ge=1)
    patience: int = Field(default=25, ge=1)
    min_epochs: int = Field(default=10, ge=0)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    hidden: int = Field(default=64, ge=4)
    layers: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    attention: bool = True
    k: int = Field(default=30, ge=1)
    vote_k: int = Field(default=100, ge=1)
    target_fraction: float = Field(default=0.25, gt=0, lt=1)
    edge_dropout: float = Field(default=0.1, ge=0, lt=1)
    task_dropout: float = Field(default=0.2, ge=0, le=1)
    cold_model_prob: float = Field(default=0.5, ge=0, le=1)
    max_profile: int = Field(default=20, ge=0)
    cost_weight: float = Field(default=0.5, ge=0)
    ema_decay: float = Field(default=0.95, ge=0, lt=1)
    seed: int = 0
    split_seed: int | None = None

    def model_shape(self, data: GraphData) -> Any:
        from orchestra.policies.gnn.model import ModelConfig

        return ModelConfig(emb_dim=data.dim, query_dim=data.query_dim, hidden=self.hidden,
                           layers=self.layers, dropout=self.dropout, attention=self.attention)


# --------------------------------------------------------------------------------------------
# Data (driver side)


@dataclass
class Bundle:
    """What workers train on: the graph arrays, scaling, the split and the neighbour lists."""

    data: GraphData
    norm: Normalizer
    train_idx: NDArray[np.int64]
    val_idx: NDArray[np.int64]
    neighbours: Neighbours
    cost_scale: float


def cost_scale_of(cost: NDArray[np.floating[Any]]) -> float:
    """Mean cost per query of the most expensive model: λ = 1 prices one point of score at one
    average call of the priciest model (the convention of
    :mod:`orchestra.policies.learned.chooser`)."""
    c = np.where(np.isfinite(cost), cost, np.nan)
    if not np.isfinite(c).any():
        return 1.0
    means = np.nan_to_num(np.nanmean(c, axis=0))
    return float(means.max()) if means.max() > 0 else 1.0


def _split(tasks: NDArray[np.int64], fraction: float, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    val = np.zeros(len(tasks), dtype=bool)
    for t in np.unique(tasks):
        g = np.flatnonzero(tasks == t)
        val[rng.permutation(g)[: round(len(g) * fraction)]] = True
    return np.flatnonzero(~val).astype(np.int64), np.flatnonzero(val).astype(np.int64)


def bundle_from_table(table: OutcomeTable, config: GNNTrainConfig, embedder: Any = None) -> Bundle:
    """Embed a table and split it (see :func:`prepare_bundle`)."""
    from orchestra.embed import get_embedder

    if config.exclude_models:
        unknown = [m for m in config.exclude_models if m not in table.models]
        if unknown:
            raise UserError(
                f"--exclude-model {unknown[0]!r} is not a model of {config.data!r}; expected one "
                f"of {table.models!r}"
            )
        table = table.filter(models=[m for m in table.models if m not in config.exclude_models])
    emb = embedder if embedder is not None else get_embedder(config.embedder)
    data = GraphData.from_table(table, emb, views=config.views)
    if data.n_queries < 10:
        raise UserError(f"expected at least 10 training queries in {config.data!r} (got {data.n_queries})")
    split_seed = config.seed if config.split_seed is None else config.split_seed
    train_idx, val_idx = _split(data.query_task, config.val_fraction, split_seed)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise UserError(f"val_fraction={config.val_fraction!r} leaves an empty train or validation split")
    tr = data.subset(train_idx)
    norm = Normalizer.fit(tr.cost, tr.query_log_len, data.model_side)
    # Enough candidates that k context queries remain after held-out ones are filtered out.
    top = max(_TOP_K, 2 * max(config.k, config.vote_k) + 16)
    neighbours = Neighbours.of(data.query_emb, data.query_task, top)
    return Bundle(data=data, norm=norm, train_idx=train_idx, val_idx=val_idx,
                  neighbours=neighbours, cost_scale=cost_scale_of(tr.cost))


def prepare_bundle(config: GNNTrainConfig) -> Bundle:
    """Load ``config.data``, embed it on this machine (cached) and split it."""
    from orchestra.outcomes import load_outcomes

    return bundle_from_table(load_outcomes(config.data), config)


# --------------------------------------------------------------------------------------------
# The training loop (one worker)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _all_agents(n_agents: int, n_models: int) -> NDArray[np.bool_]:
    return np.ones((n_agents, n_models), dtype=bool)


def _step_edges(bundle: Bundle, config: GNNTrainConfig, targets: NDArray[np.int64],
                rng: np.random.Generator) -> EdgeSet:
    d = bundle.data
    nq, nm = d.score.shape
    context = np.zeros(nq, dtype=bool)
    context[bundle.train_idx] = True
    context[targets] = False
    visible = rng.random((nq, nm)) >= config.edge_dropout
    if nm > 1 and rng.random() < config.cold_model_prob:
        cold = int(rng.integers(nm))
        visible[:, cold] = False
        ctx = np.flatnonzero(context)
        keep = int(rng.integers(0, config.max_profile + 1)) if config.max_profile else 0
        if keep and len(ctx):
            visible[rng.choice(ctx, size=min(keep, len(ctx)), replace=False), cold] = True
    task_known = np.ones(nq, dtype=bool)
    task_known[targets] = rng.random(len(targets)) >= config.task_dropout
    agents = rng.random((len(d.agent_names), nm)) < 0.7
    lonely = ~agents.any(axis=0)
    agents[rng.integers(len(d.agent_names), size=int(lonely.sum())), np.flatnonzero(lonely)] = True
    return EdgeSet(context=context, visible=visible, task_known=task_known, agent_model=agents,
                   k=config.k, vote_k=config.vote_k)


def _pairs(bundle: Bundle, targets: NDArray[np.int64], agents: NDArray[np.bool_],
           rng: np.random.Generator) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]:
    """(3, P) (query, model, agent) of every observed target pair, with its score and cost."""
    d = bundle.data
    obs = np.isfinite(d.score[targets]) & np.isfinite(d.cost[targets])
    ti, mi = np.nonzero(obs)
    q = targets[ti]
    # A random agent among those that may run the model.
    weights = agents[:, mi].T.astype(np.float64)
    weights /= weights.sum(axis=1, keepdims=True)
    u = rng.random(len(mi))[:, None]
    ai = (u > np.cumsum(weights, axis=1)).sum(axis=1)
    return (np.stack([q, mi, np.minimum(ai, agents.shape[0] - 1)]).astype(np.int64),
            d.score[q, mi].astype(np.float32), bundle.norm.cost(d.cost[q, mi]))


def _to(graph: Any, device: Any) -> Any:
    return graph.to(device) if str(device) != "cpu" else graph


def predict_targets(model: Any, graph: Any, targets: NDArray[np.int64], n_models: int,
                    agent: int = 0) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Predicted scores and standardised log costs ``(len(targets), n_models)`` (agent ``agent``)."""
    import torch

    net = getattr(model, "module", model)
    device = next(net.parameters()).device
    q = np.repeat(targets, n_models)
    m = np.tile(np.arange(n_models), len(targets))
    a = np.full_like(q, agent)
    pairs = torch.from_numpy(np.stack([q, m, a]).astype(np.int64)).to(device)
    was = net.training
    net.eval()
    with torch.no_grad():
        logit, cz = net(_to(graph, device), pairs)
    net.train(was)
    return (torch.sigmoid(logit).cpu().numpy().reshape(len(targets), n_models),
            cz.cpu().numpy().reshape(len(targets), n_models))


def _validation_graph(bundle: Bundle, config: GNNTrainConfig) -> Any:
    d = bundle.data
    nq, nm = d.score.shape
    context = np.zeros(nq, dtype=bool)
    context[bundle.train_idx] = True
    edges = EdgeSet(context=context, visible=np.ones((nq, nm), dtype=bool),
                    task_known=np.ones(nq, dtype=bool),
                    agent_model=_all_agents(len(d.agent_names), nm), k=config.k,
                    vote_k=config.vote_k)
    return build_graph(d, bundle.norm, edges, bundle.neighbours)


def validate(model: Any, bundle: Bundle, config: GNNTrainConfig, graph: Any) -> dict[str, float]:
    """Validation loss and AIQ of the current model (no gradient)."""
    from orchestra.training.lambdas import router_aiq

    d = bundle.data
    v = bundle.val_idx
    ps, cz = predict_targets(model, graph, v, d.n_models)
    s, c = d.score[v], d.cost[v]
    obs = np.isfinite(s) & np.isfinite(c)
    p = np.clip(ps[obs].astype(np.float64), 1e-6, 1 - 1e-6)
    y = s[obs].astype(np.float64)
    bce = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    cmse = float(np.mean((cz[obs] - bundle.norm.cost(c[obs])) ** 2))
    pc = bundle.norm.usd(cz.astype(np.float64))
    return {
        "val_bce": bce,
        "val_cost_mse": cmse,
        "val_loss": bce + config.cost_weight * cmse,
        "val_aiq": router_aiq(ps.astype(np.float64), pc, s.astype(np.float64),
                              c.astype(np.float64), bundle.cost_scale),
    }


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
        bundle: the data (:func:`prepare_bundle`).
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
    val_graph = _to(_validation_graph(bundle, config), device)
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
            edges = _step_edges(bundle, config, chunk, rng)
            graph = _to(build_graph(d, bundle.norm, edges, bundle.neighbours), device)
            mine = chunk[rank::world_size]
            pairs, ys, yc = _pairs(bundle, mine, edges.agent_model, rng)
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


# --------------------------------------------------------------------------------------------
# Ray Train


def _save_state_dir(directory: Path, state: Mapping[str, Any]) -> None:
    import torch

    torch.save(dict(state), directory / "state.pt")
    (directory / "config.json").write_text(json.dumps(state["config"], indent=2), encoding="utf-8")


def load_state_dir(directory: str | Path) -> dict[str, Any]:
    import torch

    return dict(torch.load(Path(directory) / "state.pt", map_location="cpu", weights_only=False))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's worker function: resume from the last checkpoint if any, train, report."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    from ray.exceptions import RayError
    from ray.util.queue import Full

    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    config = GNNTrainConfig.model_validate(loop_config["config"])
    bundle: Bundle = ray.get(loop_config["bundle"][0])
    queue = loop_config.get("queue")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    state = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as cdir:
            state = load_state_dir(cdir)
    device = ray.train.torch.get_device()

    def prepare(model: Any) -> Any:
        # Moves the model to this worker's device and, with several workers, wraps it in DDP.
        # Relations without edges in a step leave parameters unused: DDP must tolerate that.
        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": True}
        )

    def report(metrics: dict[str, Any], make_state: Callable[[], dict[str, Any]] | None) -> None:
        if rank == 0 and queue is not None:
            # The driver's progress queue is a convenience: a full or vanished queue (a driver
            # that went away) must not stop training, whose record is the checkpoint.
            with contextlib.suppress(Full, RayError):
                queue.put({"event": "epoch", **metrics}, block=False)
        if rank == 0 and make_state is not None:
            with tempfile.TemporaryDirectory() as tmp:
                _save_state_dir(Path(tmp), make_state())
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)

    if state is not None and state.get("done"):
        # Already finished: report the final state again so the driver gets the checkpoint.
        final = dict(state["history"][-1]) if state.get("history") else {"epoch": state["epoch"]}
        report({**final, "resumed_finished": True}, lambda: state)  # type: ignore[arg-type]
        return
    fit_gnn(bundle, config, rank=rank, world_size=world, state=state, report=report,
            prepare_model=prepare, device=device,
            max_epochs=loop_config.get("max_epochs"))


def _run_file(out: Path) -> Path:
    return out / "run.json"


def run_training(
    config: GNNTrainConfig,
    out: str | Path,
    *,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    address: str | None = None,
    resume: bool = False,
    resume_overrides: Mapping[str, Any] | None = None,
    storage: str | None = None,
    threads_per_worker: int = 1,
    max_epochs: int | None = None,
    console: Any = None,
) -> dict[str, Any]:
    """Train on Ray and write the serving artifact to ``out``; the driver side of the job.

    Args:
        config: the run's hyperparameters and data (ignored on ``resume``: the saved run's
            config is used).
        out: artifact directory; also holds ``run.json``, ``history.jsonl`` and, by default,
            Ray's run storage (``out/ray``).
        num_workers: data-parallel Ray Train workers.
        gpus_per_worker: GPUs per worker (> 0 uses CUDA and NCCL; 0: CPU and gloo).
        address: a Ray cluster address (``ray://host:10001`` or ``host:6379``); ``None`` uses
            ``$RAY_ADDRESS`` when set (``ray job submit``), else starts a local Ray.
        resume: continue the run recorded in ``out/run.json`` from its last checkpoint.
        resume_overrides: on ``resume``, the options given again: ``epochs`` / ``patience`` /
            ``min_epochs`` replace the saved ones; any other must equal the saved value.
        storage: where Ray keeps checkpoints (shared storage or ``s3://...`` on a multi-node
            cluster); default ``out/ray``.
        threads_per_worker: torch CPU threads per worker.
        max_epochs: stop after this many epochs in this invocation (the run stays resumable).
        console: a rich console for progress (default: a new one).

    Returns:
        A summary: ``out``, ``best_val_aiq``, ``best_epoch``, ``epochs_run``, ``resumed_from``.

    Raises:
        UserError: bad options, nothing to resume, or a failed training run.
    """
    import ray
    import ray.train
    from ray.exceptions import RayError
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Empty, Queue
    from rich.console import Console

    con = console or Console()
    out_dir = Path(out).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if num_workers < 1:
        raise UserError(f"expected --num-workers >= 1 (got {num_workers!r})")
    if gpus_per_worker < 0:
        raise UserError(f"expected --gpus-per-worker >= 0 (got {gpus_per_worker!r})")
    run_file = _run_file(out_dir)
    if resume:
        if not run_file.is_file():
            raise UserError(
                f"nothing to resume in {str(out_dir)!r} (no run.json); start a run with the same "
                "--out and without --resume"
            )
        run = json.loads(run_file.read_text(encoding="utf-8"))
        saved = GNNTrainConfig.model_validate(run["config"])
        allowed = {"epochs", "patience", "min_epochs"}
        given = dict(resume_overrides or {})
        old = saved.model_dump()
        bad = sorted(k for k, v in given.items() if k not in allowed and old.get(k) != v)
        if bad:
            raise UserError(
                f"--resume continues the saved run's config; only {sorted(allowed)} may change "
                f"(got {', '.join(f'{k}={given[k]!r} (saved {old.get(k)!r})' for k in bad)}); "
                "drop those options, or start a new run with a new --out"
            )
        config = GNNTrainConfig.model_validate({**old, **{k: given[k] for k in given if k in allowed}})
        run_name, storage_path = run["run_name"], run["storage"]
    else:
        run_name = "gnn-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        storage_path = storage or str(out_dir / "ray")
    if "://" not in storage_path:
        storage_path = str(Path(storage_path).expanduser().resolve())
    con.print(f"[bold]GNN router[/bold] data={config.data!r} out={str(out_dir)!r} "
              f"run={run_name}{' (resume)' if resume else ''}")
    t0 = time.perf_counter()
    bundle = prepare_bundle(config)
    con.print(f"embedded {bundle.data.n_queries} queries, {len(bundle.data.task_names)} tasks, "
              f"{bundle.data.n_models} models with {bundle.data.embedder} "
              f"({time.perf_counter() - t0:.1f}s); train {len(bundle.train_idx)} / "
              f"validation {len(bundle.val_idx)}")
    # Recorded once the data is known to load, so a bad --data leaves nothing to "resume".
    run_file.write_text(json.dumps({
        "run_name": run_name, "storage": storage_path, "config": config.model_dump(),
        "status": "running", "updated": time.time(),
    }, indent=2), encoding="utf-8")

    started_ray = False
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS")
        if target:
            ray.init(address=target, log_to_driver=False)
        else:
            # A private local Ray bound to loopback: nothing leaves the machine. "local" starts
            # a new one even when another cluster on this machine was started with `ray start`
            # (plain ray.init() would join that one, or fail on its stale record).
            ray.init(address="local", num_cpus=max(2, num_workers + 1), include_dashboard=False,
                     log_to_driver=False, _node_ip_address="127.0.0.1",
                     runtime_env={"env_vars": {"RAY_TRAIN_V2_ENABLED": "1"}})
        started_ray = True
    queue = Queue(maxsize=10_000)
    bundle_ref = ray.put(bundle)
    use_gpu = gpus_per_worker > 0
    scaling = ray.train.ScalingConfig(
        num_workers=num_workers, use_gpu=use_gpu,
        resources_per_worker={"GPU": gpus_per_worker, "CPU": 1} if use_gpu else {"CPU": 1},
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.model_dump(), "bundle": [bundle_ref], "queue": queue,
                           "threads": threads_per_worker, "max_epochs": max_epochs},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=scaling,
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    result_box: dict[str, Any] = {}

    def fit() -> None:
        try:
            result_box["result"] = trainer.fit()
        except Exception as e:  # noqa: BLE001 - handed to the driver thread, which raises it
            result_box["error"] = e

    history_file = out_dir / "history.jsonl"
    seen: list[dict[str, Any]] = []
    thread = threading.Thread(target=fit, name="gnn-trainer", daemon=True)
    thread.start()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=con, transient=False) as bar:
        task = bar.add_task("epochs", total=config.epochs)
        while thread.is_alive() or not queue.empty():
            try:
                ev = queue.get(timeout=0.5)
            except Empty:
                continue
            except RayError:  # the queue actor is gone; the trainer thread tells the outcome
                if not thread.is_alive():
                    break
                time.sleep(0.5)
                continue
            seen.append(ev)
            with history_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps({**ev, "run": run_name, "time": time.time()}) + "\n")
            bar.update(task, completed=int(ev["epoch"]) + 1,
                       description=f"epoch {int(ev['epoch']) + 1}")
            con.print(
                f"epoch {int(ev['epoch']) + 1:>4}  train_loss {ev['train_loss']:.4f}  "
                f"val_loss {ev['val_loss']:.4f}  val_aiq {ev['val_aiq']:.4f}  "
                f"best {ev['best_val_aiq']:.4f} @ {int(ev['best_epoch']) + 1}"
                + ("  [done]" if ev.get("done") else "")
            )
        thread.join()
    with contextlib.suppress(RayError):
        queue.shutdown()
    if "error" in result_box:
        err = result_box["error"]
        if started_ray:
            ray.shutdown()
        raise UserError(f"GNN training failed: {err}") from err
    result = result_box["result"]
    if result.checkpoint is None:
        if started_ray:
            ray.shutdown()
        raise UserError("GNN training reported no checkpoint; nothing to save")
    with result.checkpoint.as_directory() as cdir:
        state = load_state_dir(cdir)
    if started_ray:
        ray.shutdown()
    finished = bool(state.get("done"))
    run_file.write_text(json.dumps({
        "run_name": run_name, "storage": storage_path, "config": config.model_dump(),
        "status": "finished" if finished else "stopped", "updated": time.time(),
        "last_epoch": state["epoch"],
    }, indent=2), encoding="utf-8")
    summary = {
        "out": str(out_dir), "best_val_aiq": state["best_val_aiq"],
        "best_epoch": state["best_epoch"], "last_epoch": state["epoch"], "finished": finished,
        "epochs_reported": [int(e["epoch"]) for e in seen],
    }
    if state.get("best_model") is not None:
        save_artifact(out_dir, bundle, config, state)
        con.print(f"[green]saved[/green] {out_dir} (best validation AIQ "
                  f"{state['best_val_aiq']:.4f} at epoch {state['best_epoch'] + 1})")
    return summary


# --------------------------------------------------------------------------------------------
# Artifact


def calibrate(net: Any, bundle: Bundle, config: GNNTrainConfig) -> dict[str, Any]:
    """λ calibration of a trained network on the validation split.

    Returns the compact λ grid (:func:`orchestra.training.lambdas.compact_lambdas`), the default
    λ (the largest whose validation quality is within 0.01 of the best), the full sweep, and the
    ratio that turns a predicted cost into a cautious one for budget checks (95th percentile of
    actual/predicted).
    """
    d = bundle.data
    ps, cz = predict_targets(net, _validation_graph(bundle, config), bundle.val_idx, d.n_models)
    pc = bundle.norm.usd(cz.astype(np.float64))
    s = d.score[bundle.val_idx].astype(np.float64)
    c = d.cost[bundle.val_idx].astype(np.float64)
    from orchestra.policies.learned.chooser import fine_lambda_grid
    from orchestra.training.lambdas import compact_lambdas, sweep_points

    lam = fine_lambda_grid()
    pts = sweep_points(ps.astype(np.float64), pc, s, c, lam, bundle.cost_scale)
    n_val = max(1, len(bundle.val_idx))
    quality = pts[:, 1]
    curve = {"lam": lam.tolist(), "cost_per_query": (pts[:, 0] / n_val).tolist(),
             "quality": quality.tolist()}
    ratio = c / np.maximum(pc, 1e-12)
    ratio = ratio[np.isfinite(ratio)]
    return {
        "default_lam": float(lam[np.flatnonzero(quality >= quality.max() - 0.01).max()]),
        "lambdas": compact_lambdas(curve),
        "cost_high_ratio": max(1.0, float(np.quantile(ratio, 0.95)) if ratio.size else 2.0),
        "sweep": curve,
    }


def save_artifact(out: str | Path, bundle: Bundle, config: GNNTrainConfig,
                  state: Mapping[str, Any]) -> Path:
    """Write the serving artifact: ``config.json``, ``model.pt`` (best weights), ``graph.npz``.

    Uses the state's ``calibration`` (computed by the worker for the best weights) when there
    is one, else computes it here (:func:`calibrate`).
    """
    import torch

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    best = state.get("best_model") or state["model"]
    cal = state.get("calibration")
    if cal is None:
        from orchestra.policies.gnn.model import GNNRouter

        net = GNNRouter(config.model_shape(bundle.data))
        net.load_state_dict(best)
        cal = calibrate(net, bundle, config)
    d = bundle.data
    torch.save(best, out_dir / "model.pt")
    d.save(out_dir / "graph.npz")
    meta = {
        "kind": "gnn",
        "version": ARTIFACT_VERSION,
        "train": config.model_dump(),
        "model": config.model_shape(d).to_dict(),
        "norm": bundle.norm.__dict__,
        "cost_scale": bundle.cost_scale,
        "cost_high_ratio": cal["cost_high_ratio"],
        "models": d.model_names,
        "tasks": d.task_names,
        "embedder": d.embedder,
        "cost_estimated": d.cost_estimated,
        "k": config.k,
        "default_lam": cal["default_lam"],
        "lambdas": cal["lambdas"],
        "calibration": cal["sweep"],
        "best_val_aiq": state.get("best_val_aiq"),
        "best_epoch": state.get("best_epoch"),
        "last_epoch": state.get("epoch"),
        "history": state.get("history", []),
        "saved": time.time(),
    }
    (out_dir / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out_dir


def clear_run(out: str | Path) -> None:
    """Remove a run's Ray storage and records from ``out`` (keeps the artifact)."""
    o = Path(out)
    shutil.rmtree(o / "ray", ignore_errors=True)
    for name in ("run.json", "history.jsonl"):
        (o / name).unlink(missing_ok=True)

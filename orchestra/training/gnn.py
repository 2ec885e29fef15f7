"""Training the GNN router: a plain training loop, run by Ray Train's ``TorchTrainer``.

:func:`run_training` is the job (``orchestra train gnn``, ``training/gnn_job.py``), on the
driver. Read top to bottom, it uses:

1. :mod:`~orchestra.training.gnn_config`: :class:`GNNTrainConfig`, what defines a run.
2. :mod:`~orchestra.training.gnn_runs`: ``run.json``, the run's record, so ``--resume`` finds
   its name, Ray storage and config.
3. :mod:`~orchestra.training.gnn_data`: :func:`prepare_bundle` loads the outcome table, embeds
   it and splits it into train / validation; the :class:`Bundle` is ``ray.put`` once and read
   by every worker.
4. :mod:`~orchestra.training.gnn_worker`: :func:`train_loop_per_worker`, each Ray Train
   worker: resume from the last checkpoint, train, report every epoch with a checkpoint.
   It runs :func:`~orchestra.training.gnn_fit.fit_gnn`, the training loop (Ray-agnostic), whose
   steps mask whole queries as targets (:mod:`~orchestra.training.gnn_masking`) and whose
   validation AIQ (:mod:`~orchestra.training.gnn_eval`) decides early stopping.
5. :mod:`~orchestra.training.gnn_progress`: the progress shown while the workers train.
6. :mod:`~orchestra.training.gnn_artifact`: :func:`save_artifact` writes the serving artifact
   (``config.json``, ``model.pt``, ``graph.npz``) from the final checkpoint.

A private local Ray is started by default, a cluster joined given an address; workers run on
CPU with gloo or on GPUs with NCCL.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestra.errors import UserError
from orchestra.training.gnn_artifact import save_artifact
from orchestra.training.gnn_config import GNNTrainConfig
from orchestra.training.gnn_data import Bundle, prepare_bundle
from orchestra.training.gnn_progress import follow_epochs
from orchestra.training.gnn_runs import new_run_name, resumed_run, write_run
from orchestra.training.gnn_worker import load_state_dir, train_loop_per_worker
from orchestra.training.ray_jobs import final_state, fit_in_thread

__all__ = ["run_training"]


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
        A summary: ``out``, ``best_val_aiq``, ``best_epoch``, ``last_epoch``, ``finished``
        (stopped by early stopping or ``config.epochs``, not by ``max_epochs``) and
        ``epochs_reported`` (the epochs this invocation showed).

    Raises:
        UserError: bad options, nothing to resume, or a failed training run.
    """
    import ray
    from ray.exceptions import RayError
    from ray.util.queue import Queue
    from rich.console import Console

    con = console or Console()
    out_dir = Path(out).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if num_workers < 1:
        raise UserError(f"expected --num-workers >= 1 (got {num_workers!r})")
    if gpus_per_worker < 0:
        raise UserError(f"expected --gpus-per-worker >= 0 (got {gpus_per_worker!r})")
    if resume:
        config, run_name, storage_path = resumed_run(out_dir, resume_overrides)
    else:
        run_name, storage_path = new_run_name(), storage or str(out_dir / "ray")
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
    write_run(out_dir, run_name, storage_path, config, "running")

    started_ray = _start_ray(address, num_workers)
    try:
        queue = Queue(maxsize=10_000)
        trainer = _trainer(config, bundle, queue, run_name, storage_path,
                           num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                           threads_per_worker=threads_per_worker, max_epochs=max_epochs)
        thread, result_box = fit_in_thread(trainer, "gnn-trainer")
        seen = follow_epochs(thread, queue, out_dir / "history.jsonl", run_name, config.epochs,
                             con)
        with contextlib.suppress(RayError):
            queue.shutdown()
        state = final_state(result_box, load_state_dir, "GNN")
    finally:
        if started_ray:
            ray.shutdown()

    finished = bool(state.get("done"))
    write_run(out_dir, run_name, storage_path, config, "finished" if finished else "stopped",
              last_epoch=state["epoch"])
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


def _start_ray(address: str | None, num_workers: int) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a private local Ray,
    unless Ray is already running in this process; whether it was started here."""
    import ray

    if ray.is_initialized():
        return False
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
    return True


def _trainer(config: GNNTrainConfig, bundle: Bundle, queue: Any, run_name: str, storage_path: str,
             *, num_workers: int, gpus_per_worker: float, threads_per_worker: int,
             max_epochs: int | None) -> Any:
    """The ``TorchTrainer`` that runs :func:`train_loop_per_worker` on ``num_workers`` workers."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    bundle_ref = ray.put(bundle)
    use_gpu = gpus_per_worker > 0
    scaling = ray.train.ScalingConfig(
        num_workers=num_workers, use_gpu=use_gpu,
        resources_per_worker={"GPU": gpus_per_worker, "CPU": 1} if use_gpu else {"CPU": 1},
    )
    return TorchTrainer(
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

"""The Ray Train worker of ``rl`` training, and its checkpoints.

:func:`train_loop_per_worker` wraps :func:`~orchestra.training.rl_fit.fit_rl` for Ray: the
device comes from ``ray.train.torch.get_device()`` (a GPU with NCCL when the trainer was given
GPUs, else the CPU with gloo), the model goes through ``ray.train.torch.prepare_model`` (DDP
with several workers), it resumes from ``ray.train.get_checkpoint()``, and every step is
reported, rank 0 with a checkpoint when one is due (:func:`load_state_dir` reads it back) and
its metrics on the driver's progress queue.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestra.training.ray_jobs import worker_start
from orchestra.training.rl_config import RLTrainConfig
from orchestra.training.rl_fit import fit_rl

__all__ = ["load_state_dir", "train_loop_per_worker"]


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's worker function: resume from the last checkpoint if any, train, report."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    from ray.exceptions import RayError
    from ray.util.queue import Full

    rank, world, state = worker_start(loop_config, load_state_dir)
    config = RLTrainConfig.model_validate(loop_config["config"])
    table = ray.get(loop_config["table"][0])
    queue = loop_config.get("queue")

    def report(metrics: dict[str, Any], make_state: Callable[[], dict[str, Any]] | None) -> None:
        if rank == 0 and queue is not None:
            # Progress is a convenience: a full or vanished queue must not stop training.
            with contextlib.suppress(Full, RayError):
                queue.put({"event": "step", **metrics}, block=False)
        shown = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        if rank == 0 and make_state is not None:
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(make_state(), Path(tmp) / "state.pt")
                ray.train.report(shown, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(shown, checkpoint=None)

    stop = loop_config.get("max_steps")
    if state is not None and (state.get("done") or (stop is not None and state["step"] >= stop)):
        # Finished, or already past --stop-after: report the state again so the driver gets
        # the checkpoint (and writes the artifact from it).
        last = dict(state["history"][-1]) if state.get("history") else {"step": state["step"]}
        report({**last, "resumed_finished": True}, lambda: state)  # type: ignore[arg-type,return-value]
        return
    fit_rl(config, table, loop_config["base"], rank=rank, world=world, state=state,
           report=report, prepare_model=ray.train.torch.prepare_model,
           device=ray.train.torch.get_device(), max_steps=stop)


def load_state_dir(directory: str | Path) -> dict[str, Any]:
    """A checkpoint's training state (model, optimizer, reference, step, history, config)."""
    import torch

    return dict(torch.load(Path(directory) / "state.pt", map_location="cpu", weights_only=False))

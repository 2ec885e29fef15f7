"""The Ray Train worker of GNN router training, and its checkpoints.

:func:`train_loop_per_worker` wraps :func:`~orchestra.training.gnn_fit.fit_gnn` for Ray: it
resumes from ``ray.train.get_checkpoint()`` and reports metrics every epoch, rank 0 with a
checkpoint (:func:`load_state_dir` reads one back) holding the model, the optimiser, the
averaged and the best weights so far and the config; rank 0 also sends each epoch's metrics to
the driver's progress queue.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestra.training.gnn_config import GNNTrainConfig
from orchestra.training.gnn_data import Bundle
from orchestra.training.gnn_fit import fit_gnn
from orchestra.training.ray_jobs import worker_start

__all__ = ["load_state_dir", "train_loop_per_worker"]


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's worker function: resume from the last checkpoint if any, train, report."""
    import ray
    import ray.train
    import ray.train.torch
    from ray.exceptions import RayError
    from ray.util.queue import Full

    rank, world, state = worker_start(loop_config, load_state_dir)
    config = GNNTrainConfig.model_validate(loop_config["config"])
    bundle: Bundle = ray.get(loop_config["bundle"][0])
    queue = loop_config.get("queue")
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


def _save_state_dir(directory: Path, state: Mapping[str, Any]) -> None:
    import torch

    torch.save(dict(state), directory / "state.pt")
    (directory / "config.json").write_text(json.dumps(state["config"], indent=2), encoding="utf-8")


def load_state_dir(directory: str | Path) -> dict[str, Any]:
    import torch

    return dict(torch.load(Path(directory) / "state.pt", map_location="cpu", weights_only=False))

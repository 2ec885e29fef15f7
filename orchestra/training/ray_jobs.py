"""What every Ray Train job of ``orchestra train`` shares (the GNN and the RL trainers).

- :func:`fit_in_thread`: ``trainer.fit()`` in a thread, so the driver shows progress meanwhile;
- :func:`queue_events`: the events rank 0 puts on the driver's queue, until the trainer ends;
- :func:`worker_start`: a worker's rank, world size and the state of the checkpoint it resumes;
- :func:`final_state`: the state of the run's last checkpoint, once ``fit`` has returned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orchestra.errors import UserError

__all__ = ["final_state", "fit_in_thread", "queue_events", "worker_start"]


def fit_in_thread(trainer: Any, name: str) -> tuple[threading.Thread, dict[str, Any]]:
    """Start ``trainer.fit()`` in a daemon thread; the box gets ``result`` or ``error``."""
    box: dict[str, Any] = {}

    def fit() -> None:
        try:
            box["result"] = trainer.fit()
        except Exception as e:  # noqa: BLE001 - handed to the driver thread, which raises it
            box["error"] = e

    thread = threading.Thread(target=fit, name=name, daemon=True)
    thread.start()
    return thread, box


def queue_events(trainer: threading.Thread, queue: Any) -> Iterator[dict[str, Any]]:
    """Each event on ``queue`` while the ``trainer`` thread lives (and what is left after);
    joins the thread at the end."""
    from ray.exceptions import RayError
    from ray.util.queue import Empty

    while trainer.is_alive() or not queue.empty():
        try:
            ev = queue.get(timeout=0.5)
        except Empty:
            continue
        except RayError:  # the queue actor is gone; the trainer thread tells the outcome
            if not trainer.is_alive():
                break
            time.sleep(0.5)
            continue
        yield ev
    trainer.join()


def worker_start(loop_config: dict[str, Any], load_state: Callable[[Path], dict[str, Any]]
                 ) -> tuple[int, int, dict[str, Any] | None]:
    """In a Ray Train worker: set torch's threads (``loop_config["threads"]``) and return
    (rank, world size, the resumed checkpoint's state read by ``load_state``, else None)."""
    import ray.train
    import torch

    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    ctx = ray.train.get_context()
    state = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as cdir:
            state = load_state(Path(cdir))
    return ctx.get_world_rank(), ctx.get_world_size(), state


def final_state(box: dict[str, Any], load_state: Callable[[Path], dict[str, Any]], what: str
                ) -> dict[str, Any]:
    """The state in the last checkpoint of the run whose :func:`fit_in_thread` box is ``box``.

    Raises:
        UserError: the run failed (``what`` names it), or it reported no checkpoint.
    """
    if "error" in box:
        raise UserError(f"{what} training failed: {box['error']}") from box["error"]
    result = box["result"]
    if result.checkpoint is None:
        raise UserError(f"{what} training reported no checkpoint; nothing to save")
    with result.checkpoint.as_directory() as cdir:
        return load_state(Path(cdir))

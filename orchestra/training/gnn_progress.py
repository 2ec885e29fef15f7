"""The driver's view of a GNN training run in progress: a rich progress bar and a line per
epoch, from the metrics the rank-0 worker puts on a Ray queue, each also appended to
``history.jsonl``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from orchestra.training.ray_jobs import queue_events

__all__ = ["follow_epochs"]


def follow_epochs(trainer: threading.Thread, queue: Any, history_file: Path, run_name: str,
                  epochs: int, console: Any) -> list[dict[str, Any]]:
    """Show each epoch's metrics from ``queue`` until the ``trainer`` thread has ended.

    Returns:
        The epoch events seen, in order.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    seen: list[dict[str, Any]] = []
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task("epochs", total=epochs)
        for ev in queue_events(trainer, queue):
            seen.append(ev)
            with history_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps({**ev, "run": run_name, "time": time.time()}) + "\n")
            bar.update(task, completed=int(ev["epoch"]) + 1,
                       description=f"epoch {int(ev['epoch']) + 1}")
            console.print(
                f"epoch {int(ev['epoch']) + 1:>4}  train_loss {ev['train_loss']:.4f}  "
                f"val_loss {ev['val_loss']:.4f}  val_aiq {ev['val_aiq']:.4f}  "
                f"best {ev['best_val_aiq']:.4f} @ {int(ev['best_epoch']) + 1}"
                + ("  [done]" if ev.get("done") else "")
            )
    return seen

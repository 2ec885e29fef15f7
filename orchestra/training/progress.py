"""What every ``orchestra train`` command shares: the data's name for the record, the artifact's
default name, and a rich progress bar with one line per training stage."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["artifact_base", "load_training_table", "source_name", "stage_progress"]


def source_name(data_name: str, split: str | None) -> str:
    """``<data>:<split>`` as the artifact records it (a known name defaults to ``train``)."""
    if ":" in data_name:
        return data_name
    if Path(data_name).exists():
        return data_name if split is None else f"{data_name}:{split}"
    return f"{data_name}:{split or 'train'}"  # load_outcomes took the train split


def load_training_table(data_name: str, split: str | None, console: Any) -> tuple[Any, str]:
    """Load the table to train on (warning on a test split) and its name for the record."""
    from orchestra.outcomes.loaders import load_outcomes

    if (split or data_name.rpartition(":")[2]).lower() == "test":
        console.print("[yellow]warning:[/yellow] training on a test split; evaluate on another "
                      "split")
    return load_outcomes(data_name, split=split), source_name(data_name, split)


def artifact_base(source: str) -> str:
    """The ``<data>`` part of the default artifact name ``<data>-<kind>`` (``-<split>`` added
    for a split other than ``train``)."""
    base, _, used = source.rpartition(":") if ":" in source else (source, "", "")
    if base and used and used != "train":
        base = f"{base}-{used}"
    return base or source


@contextmanager
def stage_progress(console: Any) -> Iterator[Callable[[str, int, int], None]]:
    """A transient rich progress bar; yields ``progress(stage, done, total)``, one bar a stage."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        ids: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in ids:
                ids[stage] = bar.add_task(stage, total=total)
            bar.update(ids[stage], completed=done, total=total)

        yield progress

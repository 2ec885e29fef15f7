"""What every ``orchestra train`` command shares: loading the data (outcome tables, or exported
traces as logged feedback), its name for the record, the artifact's default name, progress that
shows on a terminal *and* in a redirected log, and wall time by phase.

Progress (:func:`stage_progress`): on a terminal, a transient rich bar per stage; otherwise
(output redirected to a file or a pipe) plain lines ``embedding: 512/2225 (23%) 41s, ETA
2m18s``, one when a stage starts, then at most one every ``interval_s`` seconds, and one when
it ends, so a log shows a long embedding is alive. :class:`PhaseTimer` measures load, embed,
fit and save (and their total) for the summary and the artifact's metadata.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EMBED_CHUNK", "PhaseTimer", "artifact_base", "embed_with_progress",
           "load_training_table", "record_phases", "source_name", "stage_progress"]

#: Queries embedded between two progress updates.
EMBED_CHUNK = 64
#: Seconds between two plain progress lines of one stage when output is not a terminal.
PLAIN_INTERVAL_S = 10.0

Progress = Callable[[str, int, int], None]


def source_name(data_name: str, split: str | None) -> str:
    """``<data>:<split>`` as the artifact records it (a known name defaults to ``train``)."""
    if ":" in data_name:
        return data_name
    if Path(data_name).exists():
        return data_name if split is None else f"{data_name}:{split}"
    return f"{data_name}:{split or 'train'}"  # load_outcomes took the train split


def load_training_table(data_name: str, split: str | None, console: Any, *,
                        clip_scores: bool = False, dedupe: bool = False,
                        kind: str | None = None) -> tuple[Any, str]:
    """Load the table to train on (warning on a test split) and its name for the record.

    A file of exported traces (``orchestra traces export``) becomes the sparse table of its
    graded runs (:func:`~orchestra.training.trace_data.table_from_traces`), refused for a
    policy ``kind`` that cannot learn from logged feedback. What ``--clip-scores`` /
    ``--dedupe`` repaired is printed.
    """
    from orchestra.outcomes.loaders import load_outcomes
    from orchestra.outcomes.repairs import describe_repairs
    from orchestra.training.trace_data import (
        is_trace_file,
        logged_feedback_support,
        refuse_logged,
        table_from_traces,
    )

    if is_trace_file(data_name):
        if kind is not None and logged_feedback_support(kind) is not None:
            raise refuse_logged(kind, data_name)
        table = table_from_traces(data_name, clip_scores=clip_scores)
        st = table.meta["traces"]
        console.print(
            f"traces {data_name}: {st['used']} of {st['runs']} runs used as logged feedback "
            f"(one model's graded outcome each; {st['cells']} query x model cells); skipped "
            f"{st['ungraded']} ungraded, {st['several_models']} with several models, "
            f"{st['no_model_call']} without a model call, {st['failed_calls']} with only failed "
            "calls" + (f"; clipped {st['clipped_scores']} score(s)" if clip_scores else ""))
        return table, source_name(data_name, None)
    if (split or data_name.rpartition(":")[2]).lower() == "test":
        console.print("[yellow]warning:[/yellow] training on a test split; evaluate on another "
                      "split")
    table = load_outcomes(data_name, split=split, clip_scores=clip_scores, dedupe=dedupe)
    line = describe_repairs(table.meta.get("repairs"))
    if line:
        console.print(f"repairs: {line}", highlight=False)
    return table, source_name(data_name, split)


def artifact_base(source: str) -> str:
    """The ``<data>`` part of the default artifact name ``<data>-<kind>`` (``-<split>`` added
    for a split other than ``train``)."""
    base, _, used = source.rpartition(":") if ":" in source else (source, "", "")
    if base and used and used != "train":
        base = f"{base}-{used}"
    return base or source


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@contextmanager
def stage_progress(console: Any, *, interval_s: float = PLAIN_INTERVAL_S
                   ) -> Iterator[Progress]:
    """Progress per stage; yields ``progress(stage, done, total)``.

    A transient rich bar per stage on a terminal; plain lines otherwise (see the module
    docstring), ``interval_s`` apart at most within a stage.
    """
    if getattr(console, "is_terminal", False):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        with RichProgress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                          console=console, transient=True) as bar:
            ids: dict[str, Any] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in ids:
                    ids[stage] = bar.add_task(stage, total=total)
                bar.update(ids[stage], completed=done, total=total)

            yield progress
        return

    started: dict[str, float] = {}
    last: dict[str, float] = {}
    ended: set[str] = set()

    def plain(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage in ended:
            return
        first = stage not in started
        if first:
            started[stage] = last[stage] = now
        finished = total > 0 and done >= total
        if not (first or finished or now - last[stage] >= interval_s):
            return
        last[stage] = now
        if finished:
            ended.add(stage)
        elapsed = now - started[stage]
        pct = f" ({100 * done / total:.0f}%)" if total > 0 else ""
        eta = (f", ETA {_clock(elapsed * (total - done) / done)}"
               if 0 < done < total and elapsed > 0 else "")
        console.print(f"{stage}: {done}/{total}{pct} {_clock(elapsed)}{eta}"
                      + (" done" if finished else ""), highlight=False, markup=False)

    yield plain


def embed_with_progress(embed: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str],
                        progress: Progress | None, *, stage: str = "embedding",
                        chunk: int = EMBED_CHUNK) -> np.ndarray:
    """``embed(texts)`` in chunks of ``chunk`` texts, reporting ``progress(stage, done, n)``
    after each (the rows are the same as one call's: each text is embedded on its own)."""
    texts = list(texts)
    n = len(texts)
    if progress is not None:
        progress(stage, 0, n)
    parts = []
    for start in range(0, n, max(1, chunk)):
        parts.append(np.asarray(embed(texts[start:start + chunk])))
        if progress is not None:
            progress(stage, min(n, start + chunk), n)
    if not parts:
        return np.asarray(embed([]))
    return np.concatenate(parts, axis=0)


class PhaseTimer:
    """Wall time by phase: ``with timer.phase("embed"): ...``; :meth:`seconds` adds ``total``
    (from the timer's creation)."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self._phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self._phases[name] = self._phases.get(name, 0.0) + time.perf_counter() - t

    def seconds(self) -> dict[str, float]:
        """Each phase's seconds (rounded to 0.1 s) and ``total``, the wall time so far."""
        out = {k: round(v, 1) for k, v in self._phases.items()}
        out["total"] = round(time.perf_counter() - self._t0, 1)
        return out


def record_phases(config_file: Path, phases: dict[str, float]) -> None:
    """Add ``phase_seconds`` to a saved artifact's JSON metadata (after the save, so the save's
    own time is in it); written next to the file and moved into place."""
    data = json.loads(config_file.read_text(encoding="utf-8"))
    data["phase_seconds"] = phases
    tmp = config_file.with_name(f".{config_file.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(config_file)

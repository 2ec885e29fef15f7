"""``orchestra record``: record outcomes of a pool on labelled questions.

Mounted by :mod:`orchestra.cli` as ``orchestra record`` (:func:`record_command`). Examples::

    orchestra record --pool local --data nq --data gsm8k --limit 300 --out local.jsonl
    orchestra record --pool my_pool.yaml --data my_questions.csv --gold-col expected \\
        --models gpt-4o-mini,claude-haiku --budget-usd 2 --concurrency 8 --out mine.parquet
    orchestra record ... --resume          # after a kill or a budget stop: the rest only
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestra._format import usd as _usd

if TYPE_CHECKING:
    from orchestra.record.recorder import RecordProgress, RecordSummary

__all__ = ["record_command", "render_summary"]

#: Seconds between two plain progress lines when output is not a terminal.
PLAIN_INTERVAL_S = 10.0


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _spend(p: RecordProgress) -> str:
    return _usd(p.spent_usd) + (f" of {_usd(p.budget_usd)}" if p.budget_usd else "")


@contextmanager
def _progress(console: Console, quiet: bool) -> Iterator[Any]:
    """A rich bar with spend and ETA on a terminal; plain lines (at most one every
    :data:`PLAIN_INTERVAL_S` seconds, and the last) when output is redirected."""
    if quiet:
        yield None
        return
    if console.is_terminal:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("recording"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[spend]}"), TextColumn("{task.fields[failed]}"),
                      TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("recording", total=None, spend="$0", failed="")

            def update(p: RecordProgress) -> None:
                bar.update(task, total=p.todo, completed=p.done, spend=_spend(p),
                           failed=f"{p.failed} failed" if p.failed else "")

            yield update
        return
    last = [0.0]

    def plain(p: RecordProgress) -> None:
        now = time.monotonic()
        end = p.done >= p.todo
        if p.done and not end and now - last[0] < PLAIN_INTERVAL_S:
            return
        last[0] = now
        pct = f" ({100 * p.done / p.todo:.0f}%)" if p.todo else ""
        fail = f", {p.failed} failed" if p.failed else ""
        eta = f", ETA {_clock(p.eta_s)}" if p.eta_s is not None and not end else ""
        console.print(f"recording: {p.done}/{p.todo}{pct}{fail}, {_spend(p)} spent, "
                      f"{_clock(p.elapsed_s)}{eta}", highlight=False, markup=False)

    yield plain


def render_summary(s: RecordSummary, console: Console) -> None:
    """Per model (and per task) accuracy, cost and latency over the whole file, then totals."""
    t = Table(title=f"{s.out} · {s.questions} questions × {len(s.pairs)} models",
              header_style="bold")
    for col, just in (("task", "left"), ("model", "left"), ("answers", "right"),
                      ("accuracy", "right"), ("cost", "right"), ("latency", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for task, models in s.per_task.items():
        for m, st in models.items():
            t.add_row(task, m, str(st["answers"]), f"{st['accuracy']:.3f}", _usd(st["cost_usd"]),
                      "—" if st["mean_latency_s"] is None else f"{st['mean_latency_s']:.2f}s")
    if len(s.per_task) > 1:
        t.add_section()
        for m, st in s.per_model.items():
            t.add_row("all", m, str(st["answers"]), f"{st['accuracy']:.3f}",
                      _usd(st["cost_usd"]),
                      "—" if st["mean_latency_s"] is None else f"{st['mean_latency_s']:.2f}s")
    console.print(t)
    per = s.seconds_per_answer
    console.print(Text(
        f"{s.recorded} answers recorded, {s.skipped} already in the file, {s.failed} failed; "
        f"{_usd(s.session_usd)} spent now, {_usd(s.total_usd)} in all"
        + (f" of {_usd(s.budget_usd)}" if s.budget_usd else "")
        + f"; {_clock(s.seconds)}" + (f" ({per:.2f}s an answer)" if per else ""), style="dim"))
    if s.dropped_tail:
        console.print(Text("a row cut short by the earlier kill was dropped (it is asked again)",
                           style="yellow"))
    for f in s.failures[:3]:
        console.print(Text(f"failed: {f['model']} on {f['query_id']}: {f['error']}",
                           style="red"))
    if s.stopped:
        console.print(Text(s.stop_detail, style="yellow" if s.stopped == "budget" else "red"))


def record_command(
    data: Annotated[list[str], typer.Option(
        "--data", help="Labelled questions (repeatable): nq, gsm8k, hotpotqa, bamboogle, musique, "
        "2wiki (the shared QA sets), a .json/.jsonl/.csv file with a gold column, or "
        "hf:NAME[:CONFIG][:SPLIT].")],
    out: Annotated[Path, typer.Option(
        "--out", help="Outcome table to write: .jsonl, .csv or .parquet.")],
    pool: Annotated[str, typer.Option(
        "--pool", "-p", help="Pool name (agents/<name>.yaml) or YAML path.")] = "local",
    models: Annotated[list[str] | None, typer.Option(
        "--models", help="Models that answer (comma-separated or repeated; AGENT@MODEL for "
        "another agent). Default: every model of the answer agent.")] = None,
    agent: Annotated[str | None, typer.Option(
        "--agent", help="The answering agent (default: the pool's answer agent).")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="At most N questions from each set (the first N, or a seeded sample "
        "with --seed).")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Shuffle each set with this seed before --limit.")] = None,
    budget_usd: Annotated[float | None, typer.Option(
        "--budget-usd", help="Hard USD limit on the whole recording, resumed attempts "
        "included.")] = None,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", help="Answers in flight at once (default: 1 with a local model, else "
        "4).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue --out: skip recorded pairs, count their cost.")] = False,
    grader: Annotated[str, typer.Option(
        "--grader", help="auto (per set: gsm8k number, choices letter, else em), em, contains, "
        "f1, number, letter, or a Python function module:function.")] = "auto",
    max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", help="Most output tokens per answer (default: each model's "
        "max_output_tokens).")] = None,
    question_col: Annotated[str | None, typer.Option(
        "--question-col", help="Column holding the question (default: question, query, "
        "prompt, input or problem).")] = None,
    gold_col: Annotated[str | None, typer.Option(
        "--gold-col", help="Column holding the gold answer(s) (default: answer, answers, gold, "
        "ground_truth, target or label).")] = None,
    task_col: Annotated[str | None, typer.Option(
        "--task-col", help="Column holding the task (default: task or task_name).")] = None,
    id_col: Annotated[str | None, typer.Option(
        "--id-col", help="Column holding a question id (default: id, query_id or qid; else a "
        "hash of the question).")] = None,
    choices_col: Annotated[str | None, typer.Option(
        "--choices-col", help="Column holding the options of a multiple-choice question "
        "(default: choices or options).")] = None,
    task: Annotated[str | None, typer.Option(
        "--task", help="Task name for questions without a task column (default: the set's "
        "name).")] = None,
    db: Annotated[Path | None, typer.Option(
        "--db", help="Trace store file (default: user data dir).")] = None,
    no_trace: Annotated[bool, typer.Option(
        "--no-trace", help="Do not store the runs' traces.")] = False,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Write the summary as JSON here.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress.")] = False,
) -> None:
    """Record how each model of a pool answers labelled questions, graded, as an outcome table."""
    import asyncio

    from orchestra.record.recorder import arecord
    from orchestra.record.sets import iter_items, load_labelled_sets

    err = Console(stderr=True)
    out_console = Console()
    sets = load_labelled_sets(data, question=question_col, gold=gold_col, task=task_col,
                              id=id_col, choices=choices_col, task_name=task, limit=limit,
                              seed=seed)
    items = list(iter_items(sets))
    for s in sets:
        dup = f", {s.duplicates} repeated questions dropped" if s.duplicates else ""
        err.print(Text(f"{s.name}: {len(s.items)} questions from {s.source}{dup}", style="dim"))
    store: Any = False
    if not no_trace:
        from orchestra.trace.store import SQLiteTraceStore

        store = SQLiteTraceStore(str(db) if db else None)
    try:
        with _progress(err, quiet) as on_progress:
            summary = asyncio.run(arecord(
                pool, items, out, models=models, agent=agent, grader=grader,
                budget_usd=budget_usd, concurrency=concurrency, resume=resume,
                max_tokens=max_tokens, store=store, data=data, progress=on_progress))
    except KeyboardInterrupt:
        err.print(Text(f"interrupted: the answers recorded so far are in {out}; continue with "
                       "the same command and --resume", style="yellow"))
        raise typer.Exit(130) from None
    render_summary(summary, out_console if out_console.is_terminal else Console(width=160))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary.to_dict(), indent=2), encoding="utf-8")
        err.print(Text(f"JSON summary: {json_out}", style="dim"))


if __name__ == "__main__":  # pragma: no cover
    typer.run(record_command)

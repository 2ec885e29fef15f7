"""``orchestra data``: look at recorded outcome tables from the command line.

The lead mounts :data:`data_app` as ``orchestra data``; it also runs on its own
(``python -m orchestra.outcomes.cli inspect routerbench:test``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestra.errors import UserError

__all__ = ["ClipScoresOpt", "DedupeOpt", "data_app"]

data_app = typer.Typer(
    name="data",
    help="Inspect and split recorded outcome tables (RouterBench, LLMRouter, your own files).",
    no_args_is_help=True,
    add_completion=False,
)

#: ``--clip-scores`` / ``--dedupe``, for every command that loads an outcome file.
ClipScoresOpt = Annotated[bool, typer.Option(
    "--clip-scores", help="Clip scores outside [0, 1] into it instead of rejecting the file "
    "(the count is reported).")]
DedupeOpt = Annotated[bool, typer.Option(
    "--dedupe", help="Drop rows repeating a (query_id, model) pair or giving a query id another "
    "text or task (the first is kept) instead of rejecting the file (counts reported).")]


@data_app.callback()
def _data() -> None:
    """Inspect and split recorded outcome tables (RouterBench, LLMRouter, your own files)."""


def _fail(e: UserError) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/bold red] {e}", highlight=False)
    return typer.Exit(2)


def _say_repairs(table: object) -> None:
    from orchestra.outcomes.repairs import describe_repairs

    line = describe_repairs(getattr(table, "meta", {}).get("repairs"))
    if line:
        typer.echo(f"repairs: {line}", err=True)


@data_app.command("inspect")
def inspect_cmd(
    path_or_name: Annotated[
        str,
        typer.Argument(
            help="A name (routerbench, routerbench:test, llmrouter, llmrouter:test) or a path "
            "(.jsonl/.csv/.parquet outcome file, RouterBench wide file, benchmark folder)."
        ),
    ],
    split: Annotated[
        str | None,
        typer.Option("--split", help="Split to load: train, test (or all for RouterBench)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    clip_scores: ClipScoresOpt = False,
    dedupe: DedupeOpt = False,
) -> None:
    """Summarise an outcome table: models, tasks, per-model score and cost, oracle, best model."""
    from rich.console import Console

    from orchestra.outcomes.inspect import inspect_table, render_inspect
    from orchestra.outcomes.loaders import load_outcomes

    try:
        table = load_outcomes(path_or_name, split=split, clip_scores=clip_scores, dedupe=dedupe)
    except UserError as e:
        raise _fail(e) from None
    _say_repairs(table)
    report = inspect_table(table)
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        render_inspect(report, Console())


@data_app.command("split")
def split_cmd(
    path_or_name: Annotated[str, typer.Argument(
        help="The table to split: a path (.jsonl/.csv/.parquet outcome file, RouterBench wide "
        "file, benchmark folder) or a name.")],
    out_train: Annotated[Path, typer.Option(
        "--out-train", help="Where to write the train part (.jsonl/.csv/.parquet).")],
    out_test: Annotated[Path, typer.Option(
        "--out-test", help="Where to write the test part (.jsonl/.csv/.parquet).")],
    test_fraction: Annotated[float, typer.Option(
        "--test-fraction", help="Share of queries in the test part, strictly between 0 and 1.")
    ] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draw (same seed, same split).")
                    ] = 0,
    stratify: Annotated[bool, typer.Option(
        "--stratify/--no-stratify", help="Split each task separately (keeps the task mix).")
    ] = True,
    split: Annotated[str | None, typer.Option(
        "--split", help="Split only this split of the input (e.g. train).")] = None,
    clip_scores: ClipScoresOpt = False,
    dedupe: DedupeOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Split one table into train and test files by query (queries sharing a prompt text stay
    together; reproducible with --seed). Each file labels its queries with its split."""
    from orchestra.outcomes.loaders import load_outcomes

    try:
        if out_train.resolve() == out_test.resolve():
            raise UserError(f"--out-train and --out-test are the same file ({str(out_train)!r}); "
                            "expected two different paths")
        table = load_outcomes(path_or_name, split=split, clip_scores=clip_scores, dedupe=dedupe)
        _say_repairs(table)
        train, test = table.split(test_fraction, seed=seed, stratify=stratify)
        if train.n_queries == 0 or test.n_queries == 0:
            raise UserError(
                f"--test-fraction {test_fraction!r} leaves the {'train' if train.n_queries == 0 else 'test'} "
                f"part empty ({table.n_queries} queries); expected a fraction that leaves "
                "queries on both sides"
            )
        a = train.with_split("train").write(out_train)
        b = test.with_split("test").write(out_test)
    except UserError as e:
        raise _fail(e) from None
    summary = {"input": str(path_or_name), "queries": table.n_queries, "seed": seed,
               "test_fraction": test_fraction, "stratify": stratify,
               "train": {"path": str(a), "queries": train.n_queries, "rows": len(train)},
               "test": {"path": str(b), "queries": test.n_queries, "rows": len(test)}}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"split {table.n_queries} queries (seed {seed}): {train.n_queries} train -> "
                   f"{a}, {test.n_queries} test -> {b}")


if __name__ == "__main__":  # pragma: no cover
    data_app()

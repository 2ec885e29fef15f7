"""``orchestra data``: look at recorded outcome tables from the command line.

The lead mounts :data:`data_app` as ``orchestra data``; it also runs on its own
(``python -m orchestra.outcomes.cli inspect routerbench:test``).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from orchestra.errors import UserError

__all__ = ["data_app"]

data_app = typer.Typer(
    name="data",
    help="Inspect recorded outcome tables (RouterBench, LLMRouter, your own files).",
    no_args_is_help=True,
    add_completion=False,
)


@data_app.callback()
def _data() -> None:
    """Inspect recorded outcome tables (RouterBench, LLMRouter, your own files)."""


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
) -> None:
    """Summarise an outcome table: models, tasks, per-model score and cost, oracle, best model."""
    from rich.console import Console

    from orchestra.outcomes.inspect import inspect_table, render_inspect
    from orchestra.outcomes.loaders import load_outcomes

    try:
        table = load_outcomes(path_or_name, split=split)
    except UserError as e:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {e}", highlight=False)
        raise typer.Exit(2) from None
    report = inspect_table(table)
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        render_inspect(report, Console())


if __name__ == "__main__":  # pragma: no cover
    data_app()

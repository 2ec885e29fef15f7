"""``orchestra train gnn``: train the GNN router as a Ray Train job.

:func:`gnn_command` is a typer command function; the lead mounts it as ``orchestra train gnn``
(``train_app.command("gnn")(gnn_command)``). ``training/gnn_job.py`` runs the same command as a
script, for ``ray job submit``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from orchestra.errors import UserError

__all__ = ["gnn_app", "gnn_command"]


def gnn_command(
    data: Annotated[str | None, typer.Option(
        "--data", help="Outcome table: routerbench (default), llmrouter, or a path "
        "(.jsonl/.csv/.parquet)."
    )] = None,
    out: Annotated[str | None, typer.Option(
        "--out", help="Artifact directory (default <data home>/artifacts/<data>-gnn)."
    )] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=1, help="Most epochs (default 150; early stopping on validation AIQ)."
    )] = None,
    num_workers: Annotated[int, typer.Option(
        "--num-workers", min=1, help="Data-parallel Ray Train workers."
    )] = 1,
    gpus_per_worker: Annotated[float, typer.Option(
        "--gpus-per-worker", min=0.0, help="GPUs per worker (0: CPU with gloo; >0: CUDA with NCCL)."
    )] = 0.0,
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)."
    )] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run recorded in --out from its last checkpoint, with its "
        "saved config (--epochs / --patience may be raised)."
    )] = False,
    exclude_model: Annotated[list[str] | None, typer.Option(
        "--exclude-model", help="Leave this model out of training (repeatable)."
    )] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Random seed (split, init, masking; default 0)."
    )] = None,
    embedder: Annotated[str | None, typer.Option(
        "--embedder", help="Text embedder: minilm (default) or hashing (tests, no model download)."
    )] = None,
    hidden: Annotated[int | None, typer.Option("--hidden", min=4, help="Node state size.")] = None,
    layers: Annotated[int | None, typer.Option("--layers", min=1, help="Message-passing layers.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="AdamW learning rate.")] = None,
    patience: Annotated[int | None, typer.Option(
        "--patience", min=1, help="Early-stopping patience in epochs."
    )] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", help="Ray checkpoint storage (shared path or s3:// on a multi-node cluster)."
    )] = None,
    threads: Annotated[int, typer.Option(
        "--threads", min=1, help="torch CPU threads per worker."
    )] = 1,
    max_epochs: Annotated[int | None, typer.Option(
        "--stop-after", min=1, hidden=True,
        help="Stop this invocation after this many epochs in total (resume later).",
    )] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    clip_scores: Annotated[bool, typer.Option(
        "--clip-scores", help="Clip scores outside [0, 1] into it instead of rejecting the file "
        "(the count is reported).")] = False,
    dedupe: Annotated[bool, typer.Option(
        "--dedupe", help="Drop rows repeating a (query_id, model) pair or giving a query id "
        "another text or task (the first is kept) instead of rejecting the file.")] = False,
) -> None:
    """Train the GNN router (query/task/agent/model graph) with Ray Train; resumable."""
    from pydantic import ValidationError
    from rich.console import Console

    from orchestra.training.gnn import run_training
    from orchestra.training.gnn_config import GNNTrainConfig

    con = Console(stderr=as_json)
    try:
        if embedder not in (None, "minilm", "hashing"):
            raise UserError(f"expected --embedder minilm or hashing (got {embedder!r})")
        from orchestra.training.trace_data import is_trace_file, refuse_logged

        if data is not None and is_trace_file(data):
            raise refuse_logged("gnn", data)
        # What was given on the command line (a resumed run checks these against its config).
        given = {k: v for k, v in {
            "data": data, "seed": seed, "embedder": embedder, "epochs": epochs, "hidden": hidden,
            "layers": layers, "lr": lr, "patience": patience,
            "exclude_models": list(exclude_model) if exclude_model else None,
        }.items() if v is not None}
        try:
            config = GNNTrainConfig.model_validate(given)
        except ValidationError as e:
            from orchestra.spec import format_validation_error

            raise UserError(format_validation_error(e, "orchestra train gnn")) from None
        if out is None:
            from orchestra.policies.learned.locations import default_artifact_dir

            out_dir = str(default_artifact_dir(config.data, "gnn"))
        else:
            out_dir = out
        from orchestra.outcomes.repairs import describe_repairs, outcome_repairs

        # The table is loaded on this (driver) side, inside run_training.
        with outcome_repairs(clip_scores=clip_scores, dedupe=dedupe) as repaired:
            summary = run_training(config, out_dir, num_workers=num_workers,
                                   gpus_per_worker=gpus_per_worker, address=address,
                                   resume=resume, resume_overrides=given, storage=storage,
                                   threads_per_worker=threads, max_epochs=max_epochs,
                                   console=con)
        line = describe_repairs(repaired)
        if line:
            Console(stderr=True).print(f"repairs: {line}", highlight=False)
    except UserError as e:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {e}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2))


#: A one-command app, so the module runs on its own: ``python -m orchestra.training.gnn_cli``.
gnn_app = typer.Typer(add_completion=False)
gnn_app.command()(gnn_command)

if __name__ == "__main__":  # pragma: no cover
    gnn_app()

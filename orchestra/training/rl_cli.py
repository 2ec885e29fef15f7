"""``orchestra train rl``: train the RL routing policy (SFT warm start, then GRPO) on Ray Train.

:func:`rl_command` is a typer command function, mounted as ``orchestra train rl`` by
:mod:`orchestra.training.cli`; ``training/rl_job.py`` runs the same command as a script, for
``ray job submit``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from orchestra.errors import UserError

__all__ = ["rl_app", "rl_command"]


def rl_command(
    data: Annotated[str, typer.Option(
        "--data", help="Outcome table with recorded responses: routerbench (default) or a path; "
        "its train split is used.")] = "routerbench",
    base: Annotated[str | None, typer.Option(
        "--base", help="Base model: a save_pretrained directory, a .gguf file or a hub id "
        "(default: the embedded SmolLM2-135M-Instruct).")] = None,
    out: Annotated[str | None, typer.Option(
        "--out", help="Artifact directory (default <data home>/artifacts/<data>-rl).")] = None,
    num_workers: Annotated[int, typer.Option(
        "--num-workers", min=1, help="Data-parallel Ray Train workers.")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(
        "--gpus-per-worker", min=0.0,
        help="GPUs per worker (0: CPU with gloo; >0: CUDA with NCCL).")] = 0.0,
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run recorded in --out from its last checkpoint.")] = False,
    steps: Annotated[int | None, typer.Option("--steps", min=0, help="GRPO steps (50).")] = None,
    sft_steps: Annotated[int | None, typer.Option(
        "--sft-steps", min=0, help="Supervised warm-start steps before GRPO (20).")] = None,
    group: Annotated[int | None, typer.Option(
        "--group", min=2, help="Episodes per query in a GRPO group (8).")] = None,
    queries_per_step: Annotated[int | None, typer.Option(
        "--queries-per-step", min=1, help="GRPO groups per step and worker (1).")] = None,
    sft_batch: Annotated[int | None, typer.Option(
        "--sft-batch", min=1, help="Trajectories per SFT step and worker (8).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="GRPO learning rate (1e-6).")] = None,
    sft_lr: Annotated[float | None, typer.Option("--sft-lr", help="SFT learning rate.")] = None,
    temperature: Annotated[float | None, typer.Option(
        "--temperature", help="Sampling temperature of the rollouts (1.0).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        "--max-new-tokens", min=4, help="Tokens per decision (48).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(
        "--checkpoint-every", min=1, help="GRPO steps between checkpoints (5).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (0).")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="A pool model (repeatable; default: all the table's).")] = None,
    train_layers: Annotated[int | None, typer.Option(
        "--train-layers", min=1, help="Train only the last N blocks (cheaper on CPU).")] = None,
    max_query_chars: Annotated[int | None, typer.Option(
        "--max-query-chars", min=1, help="Train on queries of at most this many characters."
    )] = None,
    hints: Annotated[str | None, typer.Option(
        "--hints", help="Show the policy a trained escalate artifact's estimates before each "
        "decision: its directory or name, or 'auto' (the one trained on the pool's models).")
    ] = None,
    sft_plan: Annotated[str | None, typer.Option(
        "--sft-plan", help="Warm-start trajectories: oracle (from the recorded outcomes) or "
        "teacher (the --hints cascade's own decisions).")] = None,
    max_chars: Annotated[int | None, typer.Option(
        "--max-chars", min=16, help="Characters of each output shown to the policy (200).")
    ] = None,
    query_chars: Annotated[int | None, typer.Option(
        "--query-chars", min=16, help="Characters of a question shown to the policy (all).")
    ] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", help="Ray checkpoint storage (shared path or s3:// on a multi-node cluster)."
    )] = None,
    threads: Annotated[int, typer.Option("--threads", min=1,
                                         help="torch CPU threads per worker.")] = 1,
    max_steps: Annotated[int | None, typer.Option(
        "--stop-after", min=1, hidden=True,
        help="Stop this invocation after this many steps in all (resume later).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """RL-trained LLM router: SFT warm start then GRPO, episodes through the runtime; resumable."""
    from pydantic import ValidationError
    from rich.console import Console

    from orchestra.training.rl_config import RLTrainConfig
    from orchestra.training.rl_train import run_rl_training

    con = Console(stderr=as_json)
    given = {k: v for k, v in {
        "data": data, "base": base, "steps": steps, "sft_steps": sft_steps, "group": group,
        "queries_per_step": queries_per_step, "sft_batch": sft_batch, "lr": lr, "sft_lr": sft_lr,
        "max_new_tokens": max_new_tokens, "checkpoint_every": checkpoint_every, "seed": seed,
        "models": list(model) if model else None, "train_layers": train_layers,
        "max_query_chars": max_query_chars, "temperature": temperature, "hints": hints,
        "sft_plan": sft_plan, "query_chars": query_chars, "max_chars": max_chars,
    }.items() if v is not None}
    try:
        try:
            config = RLTrainConfig.model_validate(given)
        except ValidationError as e:
            from orchestra.spec import format_validation_error

            raise UserError(format_validation_error(e, "orchestra train rl")) from None
        if out is None:
            from orchestra.policies.learned.locations import default_artifact_dir

            out = str(default_artifact_dir(config.data, "rl"))
        summary = run_rl_training(config, out, num_workers=num_workers,
                                  gpus_per_worker=gpus_per_worker, address=address,
                                  resume=resume, storage=storage, threads_per_worker=threads,
                                  max_steps=max_steps, console=con)
    except UserError as e:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {e}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2))


#: A one-command app, so the module runs on its own: ``python -m orchestra.training.rl_cli``.
rl_app = typer.Typer(add_completion=False)
rl_app.command()(rl_command)

if __name__ == "__main__":  # pragma: no cover
    rl_app()

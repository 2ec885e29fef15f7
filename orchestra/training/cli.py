"""``orchestra train``: train learned routing policies from recorded outcome tables.

The lead mounts :data:`train_app` as ``orchestra train``; it also runs on its own
(``python -m orchestra.training.cli knn --data routerbench``).

Every command trains on the given split only (``train`` by default), picks hyperparameters by
k-fold cross-validation on it, and writes an artifact directory (default
``<data home>/artifacts/<data>-<kind>``) that the policy of the same name loads::

    orchestra train knn --data routerbench
    orchestra run "..." --policy knn --param path=routerbench-knn

To add a trainer, register a command on :data:`train_app` (``@train_app.command("gnn")``);
:func:`train_options` and :func:`run_training` are reusable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestra.errors import UserError

__all__ = ["TrainOptions", "run_training", "train_app", "train_options"]

train_app = typer.Typer(
    name="train",
    help="Train learned routing policies (kNN, MLP, matrix factorisation, GNN, escalate, "
    "bandit) on recorded outcomes or graded traces.",
    no_args_is_help=True,
    add_completion=False,
)


@train_app.callback()
def _train() -> None:
    """Train learned routing policies on recorded outcome tables (train split only)."""


DataOpt = Annotated[str, typer.Option(
    "--data", help="Outcome table: a name (routerbench, llmrouter) or a path (.jsonl/.csv/"
    ".parquet, RouterBench file, benchmark folder); or exported traces with grades "
    "(`orchestra traces export`: logged feedback, for bandit, knn, mlp, mf).")]
ClipOpt = Annotated[bool, typer.Option(
    "--clip-scores", help="Clip scores outside [0, 1] into it instead of rejecting the file "
    "(the count is reported).")]
DedupeOpt = Annotated[bool, typer.Option(
    "--dedupe", help="Drop rows repeating a (query_id, model) pair or giving a query id another "
    "text or task (the first is kept) instead of rejecting the file (counts reported).")]
PoolOpt = Annotated[str | None, typer.Option(
    "--pool", help="The pool served (its answer agent's models are the arms): a pool name or "
    "YAML, or an outcome table for its replay pool. Default for a table: its replay pool; "
    "required for traces.")]
SplitOpt = Annotated[str | None, typer.Option(
    "--split", help="Split to train on (default: train; an outcome file without splits is used "
    "whole). Never the split you will evaluate on.")]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", help="Artifact directory (default: <data home>/artifacts/<data>-<kind>).")]
EmbedderOpt = Annotated[str, typer.Option("--embedder", help="Query embedder: minilm or hashing.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for folds and network initialisation.")]
FoldsOpt = Annotated[int, typer.Option("--folds", help="Cross-validation folds (>= 2).")]
ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", help="Fix a hyperparameter KEY=VALUE instead of searching it (repeatable); "
    "with any --param the grid search is skipped.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary.")]
EnsembleOpt = Annotated[int, typer.Option(
    "--ensemble", min=1, help="Networks averaged in the final fit (CV compares single ones).")]


class TrainOptions(dict[str, Any]):
    """The options every ``orchestra train`` command shares (a dict, for easy extension)."""


def train_options(data: str, split: str | None, out: Path | None, embedder: str, seed: int,
                  folds: int, param: list[str] | None, as_json: bool,
                  ensemble: int | None = None, *, clip_scores: bool = False,
                  dedupe: bool = False, pool: str | None = None) -> TrainOptions:
    return TrainOptions(data=data, split=split, out=out, embedder=embedder, seed=seed,
                        folds=folds, params=_params(param), as_json=as_json, ensemble=ensemble,
                        clip_scores=clip_scores, dedupe=dedupe, pool=pool)


def _params(items: list[str] | None) -> dict[str, Any] | None:
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"expected --param KEY=VALUE (got {item!r})")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_training(kind: str, opts: TrainOptions) -> dict[str, Any]:
    """Load the data, embed it, cross-validate, train, save; show progress on stderr (rich on a
    terminal, plain periodic lines when redirected).

    Returns:
        A summary: artifact path, chosen hyperparameters, CV AIQ, λ grid, and wall seconds by
        phase (``phase_seconds``: load, embed, fit, save, total; also written to the
        artifact's ``config.json``); ``seconds`` is the total.
    """
    from rich.console import Console

    from orchestra.embed import get_embedder
    from orchestra.policies.learned.locations import default_artifact_dir
    from orchestra.policies.learned.scorers import ROUTER_KINDS
    from orchestra.training.cv import DEFAULT_GRIDS
    from orchestra.training.progress import (
        PhaseTimer,
        artifact_base,
        load_training_table,
        record_phases,
        stage_progress,
    )
    from orchestra.training.router_data import prepare_data
    from orchestra.training.router_fit import train_router

    timer = PhaseTimer()
    if kind not in ROUTER_KINDS:
        raise UserError(f"unknown router kind {kind!r}; expected one of {list(ROUTER_KINDS)}")
    if opts["embedder"] not in ("minilm", "hashing"):
        raise UserError(f"--embedder must be 'minilm' or 'hashing' (got {opts['embedder']!r})")
    err = Console(stderr=True, emoji=False, highlight=False)
    with timer.phase("load"):
        table, source = load_training_table(str(opts["data"]), opts["split"], err,
                                            clip_scores=bool(opts.get("clip_scores")),
                                            dedupe=bool(opts.get("dedupe")), kind=kind)
    err.print(f"[bold]{kind}[/bold] router on {source}: {table.n_queries} queries x "
              f"{table.n_models} models, {len(table.tasks)} task(s)")
    with timer.phase("embed"):
        embedder = get_embedder(opts["embedder"])  # type: ignore[arg-type]
        err.print(f"embedding {table.n_queries} queries with {embedder.name} (cached on disk)")
        with stage_progress(err) as progress:
            data = prepare_data(table, embedder, source=source, progress=progress)
    grid = None if opts["params"] else DEFAULT_GRIDS[kind]
    with timer.phase("fit"), stage_progress(err) as progress:
        router = train_router(kind, data, params=opts["params"], grid=grid,  # type: ignore[arg-type]
                              folds=opts["folds"], seed=opts["seed"],
                              ensemble=opts.get("ensemble"), progress=progress)
    out = opts["out"] or default_artifact_dir(artifact_base(source), kind)
    with timer.phase("save"):
        path = router.save(out)
    from orchestra.policies.learned.provenance import write_trained_on

    write_trained_on(path, kind, table, source)  # what `orchestra eval` finds it by
    phases = timer.seconds()
    record_phases(Path(path) / "config.json", phases)
    cv = router.config["cv"]
    summary = {
        "kind": kind, "artifact": str(path), "data": source, "n_train": data.n,
        "feedback": "logged" if data.logged else "full",
        "embedder": embedder.name, "params": router.scorer.params(),
        "cv_folds": cv["folds"], "cv_oof_aiq": cv["best_oof_aiq"], "cv_oof_bce": cv["best_oof_bce"],
        "cv_selected_by": cv["selected_by"],
        "configs_tried": len(cv["grid"]), "default_lam": router.default_lam,
        "lambdas": router.default_lambdas(), "seconds": phases["total"],
        "phase_seconds": phases,
    }
    if data.logged:
        summary["traces"] = table.meta.get("traces")
    if table.meta.get("repairs"):
        summary["repairs"] = table.meta["repairs"]  # what --clip-scores / --dedupe did
    return summary


def _render(summary: dict[str, Any], as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    con = Console()
    t = Table(show_header=False, box=None)
    for key in ("kind", "artifact", "data", "feedback", "pool", "n_train", "embedder", "params",
                "cv_folds", "configs_tried", "cv_oof_aiq", "cv_oof_bce", "default_lam",
                "observations", "seconds"):
        if key not in summary or summary[key] is None:
            continue
        v = summary[key]
        t.add_row(key, f"{v:.1f}" if key == "seconds" else f"{v:.4f}" if isinstance(v, float)
                  else str(v))
    phases = summary.get("phase_seconds") or {}
    if phases:
        t.add_row("wall time", ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()))
    con.print(t)
    if summary["kind"] == "bandit":
        p = summary["params"]
        con.print(f"use it: [bold]orchestra run \"...\" --pool {summary['pool']} --policy bandit "
                  f"--param path={summary['artifact']} --param embedder={p['embedder']}"
                  + (f" --param dim={p['dim']}" if p["dim"] != 128 else "")
                  + (f" --param task_slots={p['task_slots']}" if p["task_slots"] != 16 else "")
                  + "[/bold]", highlight=False)
        return
    name = Path(summary["artifact"]).name
    con.print(f"use it: [bold]orchestra run \"...\" --policy {summary['kind']} "
              f"--param path={summary['artifact']}[/bold]"
              + (f"  (or path={name})" if Path(summary["artifact"]).parent.name == "artifacts"
                 else ""))


def _main(kind: str, opts: TrainOptions) -> None:
    from rich.console import Console

    try:
        if kind == "escalate":
            from orchestra.training.escalate_fit import run_escalate_training

            summary = run_escalate_training(opts)
        elif kind == "bandit":
            from orchestra.training.bandit_fit import run_bandit_training

            summary = run_bandit_training(opts)
        else:
            summary = run_training(kind, opts)
    except UserError as e:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {e}", highlight=False)
        raise typer.Exit(2) from None
    _render(summary, opts["as_json"])


@train_app.command("knn")
def knn(data: DataOpt, split: SplitOpt = None, out: OutOpt = None,
        embedder: EmbedderOpt = "minilm", seed: SeedOpt = 0, folds: FoldsOpt = 5,
        param: ParamOpt = None, as_json: JsonOpt = False, clip_scores: ClipOpt = False,
        dedupe: DedupeOpt = False) -> None:
    """kNN router: k, distance weighting, task bonus and task prior chosen by CV."""
    _main("knn", train_options(data, split, out, embedder, seed, folds, param, as_json,
                               clip_scores=clip_scores, dedupe=dedupe))


@train_app.command("mlp")
def mlp(data: DataOpt, split: SplitOpt = None, out: OutOpt = None,
        embedder: EmbedderOpt = "minilm", seed: SeedOpt = 0, folds: FoldsOpt = 5,
        param: ParamOpt = None, ensemble: EnsembleOpt = 3, as_json: JsonOpt = False,
        clip_scores: ClipOpt = False, dedupe: DedupeOpt = False) -> None:
    """MLP router (torch, CPU): dropout and weight decay chosen by CV, early stopping."""
    _main("mlp", train_options(data, split, out, embedder, seed, folds, param, as_json, ensemble,
                               clip_scores=clip_scores, dedupe=dedupe))


@train_app.command("mf")
def mf(data: DataOpt, split: SplitOpt = None, out: OutOpt = None,
       embedder: EmbedderOpt = "minilm", seed: SeedOpt = 0, folds: FoldsOpt = 5,
       param: ParamOpt = None, ensemble: EnsembleOpt = 3, as_json: JsonOpt = False,
       clip_scores: ClipOpt = False, dedupe: DedupeOpt = False) -> None:
    """Matrix-factorisation router (RouteLLM MF for N models): dim and weight decay by CV."""
    _main("mf", train_options(data, split, out, embedder, seed, folds, param, as_json, ensemble,
                              clip_scores=clip_scores, dedupe=dedupe))


@train_app.command("escalate")
def escalate(data: DataOpt, split: SplitOpt = None, out: OutOpt = None, seed: SeedOpt = 0,
             folds: FoldsOpt = 5, param: ParamOpt = None, as_json: JsonOpt = False,
             clip_scores: ClipOpt = False, dedupe: DedupeOpt = False) -> None:
    """Answer-aware cascade (needs recorded responses): P(correct) scorer and gain model by CV."""
    _main("escalate", train_options(data, split, out, "none", seed, folds, param, as_json,
                                    clip_scores=clip_scores, dedupe=dedupe))


@train_app.command("bandit")
def bandit(data: DataOpt, pool: PoolOpt = None, split: SplitOpt = None,
           out: Annotated[Path | None, typer.Option(
               "--out", help="State file (.npz; default: <data home>/artifacts/"
               "<data>-bandit.npz); a training record is written beside it (.npz.json).")] = None,
           embedder: EmbedderOpt = "minilm", seed: SeedOpt = 0, param: ParamOpt = None,
           as_json: JsonOpt = False, clip_scores: ClipOpt = False,
           dedupe: DedupeOpt = False) -> None:
    """LinUCB bandit state learned offline: from graded traces (each run: the called model's
    outcome, in serving order) or from a table (every recorded cell). Serve it with
    --policy bandit --param path=STATE; it keeps learning from feedback."""
    _main("bandit", train_options(data, split, out, embedder, seed, 2, param, as_json,
                                  clip_scores=clip_scores, dedupe=dedupe, pool=pool))


def _mount_gnn() -> None:
    # The GNN trainer is a Ray Train job with its own options (workers, GPUs, address, resume);
    # its module imports nothing heavy until it runs.
    from orchestra.training.gnn_cli import gnn_command

    train_app.command("gnn")(gnn_command)


_mount_gnn()


def _mount_rl() -> None:
    # The RL router trainer (SFT then GRPO on Ray Train); imports nothing heavy until it runs.
    from orchestra.training.rl_cli import rl_command

    train_app.command("rl")(rl_command)


_mount_rl()

if __name__ == "__main__":  # pragma: no cover
    train_app()

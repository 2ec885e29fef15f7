"""``orchestra eval``: evaluate routing policies on recorded outcomes through the real runtime.

Mounted by :mod:`orchestra.cli` as ``orchestra eval`` (:func:`eval_command`). Examples::

    orchestra eval --data routerbench --policy cheapest --policy strongest --policy random
    orchestra eval --data routerbench --policy knn --lambdas auto --json r.json --plot r.png
    orchestra eval --data routerbench --tasks arc-challenge,winogrande \\
        --policy single:mistralai/mixtral-8x7b-chat --policy ensemble,k=3,select=cheapest
    orchestra eval --data outcomes.jsonl --policy cheapest --limit 200
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestra._format import usd as _usd
from orchestra.errors import UserError
from orchestra.outcomes.cli import ClipScoresOpt, DedupeOpt

if TYPE_CHECKING:
    from orchestra.eval.report import EvalReport

__all__ = ["artifact_line", "eval_command", "render_report"]


def artifact_line(artifact: dict[str, Any]) -> str:
    """One line naming the artifact a policy used and the data it was trained on."""
    if artifact.get("path") is None:
        return f"no artifact ({artifact.get('note') or 'none'})"
    tr = artifact.get("trained_on") or {}
    on = (f"trained on {tr.get('data')!r}" + (f", {tr['n_queries']} queries"
                                              if tr.get("n_queries") else "")
          + (f", fingerprint {tr['fingerprint']}" if tr.get("fingerprint") else "")
          if tr else "training data not recorded")
    how = artifact.get("found_by")
    return f"artifact {artifact['path']} ({on}; {'given by path=' if how == 'path=' else how})"


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def _pct(x: float | None) -> str:
    return "never" if x is None else f"{100 * x:.0f}%"


def render_report(report: EvalReport, console: Console, *, show_points: bool = False) -> None:
    """Print the report as a rich table: references, single models, policies."""
    d = report.data
    est = report.estimated_cost
    split = f" ({d['split']})" if d["split"] else ""
    title = (f"{d['name']}{split} · {d['n_queries']} queries · "
             f"{len(d['models'])} models · tasks {', '.join(d['tasks'])}")
    if est:
        title += " · COSTS ESTIMATED"
    t = Table(title=title, title_style="bold", show_lines=False, header_style="bold")
    t.add_column("policy", justify="left")
    for col in ("λ", "score", "total $", "$/query", "calls/q", "rounds/q", "AIQ", "APGR",
                "$ to match best", "Δ hull", "q/s"):
        t.add_column(col, justify="right")
    n = d["n_queries"] or 1
    for key in ("oracle", "best_single", "cheapest_single", "random"):
        r = report.references[key]
        t.add_row(f"[dim]{escape(r.label)}[/]", "", _f(r.quality), _usd(r.cost), _usd(r.cost / n), "1",
                  "1", _f(r.aiq), "", "", "", "", style="dim")
    if report.oracle_curve:
        top = report.oracle_curve[-1]
        t.add_row("[dim]oracle, λ-swept (upper bound)[/]", "", _f(top[1]), _usd(top[0]),
                  _usd(top[0] / n), "1", "1", _f(report.oracle_curve_aiq), "", "", "", "",
                  style="dim")
    t.add_row("[dim]single-model hull[/]", "", "", "", "", "", "", _f(report.single_hull_aiq),
              "", "", "", "", style="dim")
    t.add_section()
    for res in report.policies:
        if res.error:
            t.add_row(escape(res.spec), "", "[red]error (below)[/]", *[""] * 9)
            continue
        shown = res.points if (show_points or len(res.points) == 1) else [res.best]
        for i, p in enumerate(shown):
            if p is None:
                continue
            label = escape(res.spec) if i == 0 else ""
            if res.swept and not show_points:
                label += f" [dim](best of {len(res.points)} λ)[/]"
            warn = f" [red]{p.errors} failed calls[/]" if p.errors else ""
            delta = None if p.delta_vs_hull is None else round(p.delta_vs_hull, 3) + 0.0
            delta_s = "—" if delta is None else (f"[green]{delta:+.3f}[/]" if delta > 0
                                                 else f"{delta:+.3f}")
            first = i == 0
            t.add_row(
                label + warn, _f(p.lam, ".3g"), _f(p.mean_score), _usd(p.total_cost),
                _usd(p.cost_per_query), f"{p.calls_per_query:.2f}", f"{p.rounds_per_query:.2f}",
                _f(res.aiq) if first else "",
                (_f(res.apgr) if res.apgr is not None else "[dim]n/a[/]") if first else "",
                _pct(res.cost_to_match) if first else "", delta_s, f"{p.queries_per_s:.0f}",
            )
    console.print(t)
    pair = report.pair
    notes = [
        f"AIQ: cost normalised by {report.max_cost_model} (${report.max_cost:.4g} in all); "
        f"APGR pair: strong {pair['strong']} ({pair['strong_quality']:.3f}) vs weak "
        f"{pair['weak']} ({pair['weak_quality']:.3f})."
        + (f" {pair['note']}" if pair.get("note") else ""),
        ("$ to match best: cheapest cost on the policy's hull reaching "
         f"{report.references['best_single'].label.split(': ', 1)[-1]}'s score, as % of its "
         "cost. Δ hull: score minus the single-model hull's score at the same cost."),
    ]
    if est:
        notes.append(f"[yellow]Costs are ESTIMATED: {escape(str(d.get('cost_note')))}[/]")
    if d.get("quality_priors"):
        notes.append(f"Quality priors (strongest, vote tie-breaks) from {d['quality_priors']}.")
    if report.oracle_curve:
        notes.append(f"Oracle, λ-swept: per λ, each query's model maximising score − λ·cost "
                     f"({len(report.oracle_curve)} vertices); the upper bound of a router "
                     "choosing one model per query.")
    for res in report.policies:
        if res.artifact is not None:
            notes.append(f"{escape(res.spec)}: {escape(artifact_line(res.artifact))}")
            if res.artifact.get("untrained_models"):
                notes.append(f"[yellow]{escape(res.spec)}: its artifact was not trained on "
                             f"{escape(str(res.artifact['untrained_models']))}[/]")
            if res.artifact.get("overlap"):
                notes.append(f"[yellow]{escape(res.spec)}: {res.artifact['overlap']} evaluated "
                             "queries were in its training data[/]")
        if res.error:
            notes.append(f"[red]{escape(res.spec)} FAILED: {escape(res.error)}[/]")
        if res.apgr_error:
            notes.append(f"APGR n/a for {escape(res.spec)}: {escape(res.apgr_error)}")
        for p in res.points:
            if p.errors:
                notes.append(f"[red]{escape(res.spec)}: {p.errors} calls failed, e.g. "
                             f"{escape(p.first_error or '')}[/]")
                break
    for line in notes:
        console.print(f"[dim]{line}[/]" if not line.startswith("[") else line,
                      highlight=False)


def eval_command(
    data: Annotated[str, typer.Option(
        "--data", help="Outcomes: routerbench, llmrouter (NAME:SPLIT works), or a path "
        "(.jsonl/.csv/.parquet outcome file, RouterBench file or folder). With --pool: "
        "labelled questions instead (nq, gsm8k, a JSON/JSONL/CSV file with a gold column, "
        "hf:NAME; several comma-separated).")],
    policy: Annotated[list[str], typer.Option(
        "--policy", help="Policy to evaluate (repeatable): NAME[:ARG][,key=value...], e.g. "
        "cheapest, single:gpt-4-1106-preview, ensemble,k=3,select=cheapest, knn.")],
    split: Annotated[str | None, typer.Option(
        "--split", help="Split (default for a named benchmark: test; a file: all queries).")] = None,
    lambdas: Annotated[str, typer.Option(
        "--lambdas", help="λ sweep for policies with a cost trade-off: auto (the policy's "
        "default_lambdas, else a log grid) or a list like 0,0.1,1,10.")] = "auto",
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Write the JSON report (every policy's curve points) here.")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write the cost vs quality plot here (PNG).")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="Evaluate a seeded random subset of N queries.")] = None,
    tasks: Annotated[str | None, typer.Option(
        "--tasks", help="Only these tasks, comma-separated (e.g. arc-challenge,winogrande).")] = None,
    strong: Annotated[str | None, typer.Option(
        "--strong", help="APGR strong model (default: the most expensive).")] = None,
    weak: Annotated[str | None, typer.Option(
        "--weak", help="APGR weak model (default: the cheapest).")] = None,
    apgr: Annotated[bool, typer.Option(
        "--apgr/--no-apgr", help="Also run each policy on the strong/weak pair for APGR.")] = True,
    budget_usd: Annotated[float | None, typer.Option(
        "--budget-usd", help="USD limit per query (default: none).")] = None,
    max_rounds: Annotated[int, typer.Option("--max-rounds", help="Rounds limit per query.")] = 4,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", help="Queries in flight at once (default: 16 replayed; live: 1 with "
        "a local model, else 4).")] = None,
    backend: Annotated[str, typer.Option(
        "--backend", help="fast (ReplayBackend) or litellm (the replay litellm provider).")] = "fast",
    priors: Annotated[str, typer.Option(
        "--priors", help="Model quality priors: auto (a named benchmark's train split), none, "
        "or a table name/path.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --limit subset.")] = 0,
    points: Annotated[bool, typer.Option(
        "--points", help="Show every λ point in the table, not only the best.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    share_runs: Annotated[bool, typer.Option(
        "--share-runs/--no-share-runs", help="Score a learned router's λ points from shared "
        "runs (each distinct query and chosen calls once; same numbers), or run a full pass "
        "per λ.")] = True,
    clip_scores: ClipScoresOpt = False,
    dedupe: DedupeOpt = False,
    pool: Annotated[str | None, typer.Option(
        "--pool", help="Evaluate live on this pool (name or YAML) against the gold answers of "
        "--data: its models answer every question first (the references), then each policy "
        "runs for real.")] = None,
    live_dir: Annotated[Path | None, typer.Option(
        "--live-dir", help="Live: the folder of the evaluation's files (default: under the "
        "data dir, named after the pool, data, limit and seed).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Live: continue the evaluation in --live-dir without paying again "
        "for its recorded answers and runs.")] = False,
    total_usd: Annotated[float | None, typer.Option(
        "--total-usd", help="Live: hard USD limit on the whole evaluation (needs "
        "--budget-usd, what each run reserves).")] = None,
    grader: Annotated[str | None, typer.Option(
        "--grader", help="Live: auto (each set's default), em, contains, f1, number, letter "
        "or module:function.")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", help="Live: the most output tokens of each model's answer.")] = None,
) -> None:
    """Evaluate policies on recorded outcomes through the real runtime (replay pool), or live
    on your own pool against gold answers (--pool).

    Exits 1 when a policy could not be evaluated (named on stderr), after writing the report
    of the others.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    from orchestra.eval.data import load_eval_data
    from orchestra.eval.harness import evaluate
    from orchestra.spec import Budget

    out = Console()
    if not out.is_terminal:  # piped: rich would wrap the wide table at 80 columns
        out = Console(width=200)
    err = Console(stderr=True)
    if not policy:
        raise UserError("expected at least one --policy (e.g. --policy cheapest)")
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    budget = Budget(usd=budget_usd, rounds=max_rounds)
    if pool is not None:
        report = _live(pool, data, policy, live_dir=live_dir, resume=resume, limit=limit,
                       seed=seed, grader=grader, total_usd=total_usd, budget=budget,
                       lambdas=lambdas, concurrency=concurrency, max_tokens=max_tokens,
                       share_runs=share_runs, quiet=quiet, err=err)
        _finish(report, out, err, points=points, json_out=json_out, plot=plot)
        return
    for flag, value in (("--live-dir", live_dir), ("--resume", resume or None),
                        ("--total-usd", total_usd), ("--grader", grader),
                        ("--max-tokens", max_tokens)):
        if value is not None:
            raise UserError(f"{flag} is for a live evaluation; add --pool P (and labelled "
                            "questions as --data), or leave it out to replay recorded outcomes")
    from orchestra.outcomes.repairs import describe_repairs, outcome_repairs

    with outcome_repairs(clip_scores=clip_scores, dedupe=dedupe) as repaired:
        ev_data = load_eval_data(data, split=split, tasks=task_list, limit=limit, seed=seed,
                                 priors=priors)
    if describe_repairs(repaired):
        err.print(f"repairs: {describe_repairs(repaired)}", highlight=False, markup=False)
    ids: dict[str, TaskID] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, disable=quiet, transient=True) as bar:

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in ids:
                ids[label] = bar.add_task(label, total=total)
            bar.update(ids[label], completed=done)

        report = evaluate(ev_data, policy, lambdas=lambdas, backend=backend, budget=budget,
                          concurrency=16 if concurrency is None else concurrency, strong=strong,
                          weak=weak, apgr=apgr, progress=on_progress, share_runs=share_runs)
    _finish(report, out, err, points=points, json_out=json_out, plot=plot)


def _finish(report: EvalReport, out: Console, err: Console, *, points: bool,
            json_out: Path | None, plot: Path | None) -> None:
    """Print the report, write its JSON and plot, exit 1 when a policy failed."""
    render_report(report, out, show_points=points)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
        err.print(f"[dim]JSON report: {json_out}[/]")
    if plot is not None:
        from orchestra.eval.plots import plot_report

        plot_report(report, plot)
        err.print(f"[dim]plot: {plot}[/]")
    failed = report.failed
    if failed:
        err.print(f"[red]{len(failed)} of {len(report.policies)} policies failed: "
                  + "; ".join(f"{escape(r.spec)}: {escape(r.error or '')}" for r in failed)
                  + "[/]", highlight=False)
        raise typer.Exit(1)


def _live(pool: str, data: str, policies: list[str], *, live_dir: Path | None, resume: bool,
          limit: int | None, seed: int, grader: str | None, total_usd: float | None,
          budget: Any, lambdas: str, concurrency: int | None, max_tokens: int | None,
          share_runs: bool, quiet: bool, err: Console) -> EvalReport:
    """``--pool``: the live evaluation (:mod:`orchestra.eval.live`) with progress bars."""
    import hashlib

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    from orchestra._paths import data_home
    from orchestra.eval.live import evaluate_live

    sets = [d.strip() for d in data.split(",") if d.strip()]
    if live_dir is None:
        key = json.dumps([pool, sets, limit, seed, grader, max_tokens])
        live_dir = data_home() / "live-evals" / (
            f"{Path(pool).stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}")
    err.print(f"[dim]live evaluation files: {live_dir}[/]", highlight=False)
    ids: dict[str, TaskID] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[spend]}"), console=err,
                  disable=quiet, transient=True) as bar:

        def on_record(p: Any) -> None:
            if "record" not in ids:
                ids["record"] = bar.add_task("references: each model answers", total=p.todo,
                                             spend="")
            bar.update(ids["record"], completed=p.done, spend=f"{_usd(p.spent_usd)} spent")

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in ids:
                ids[label] = bar.add_task(label, total=total, spend="")
            bar.update(ids[label], completed=done)

        return evaluate_live(pool, sets, policies, work=live_dir, resume=resume, limit=limit,
                             seed=seed if limit is not None else None, grader=grader,
                             total_usd=total_usd, budget=budget, lambdas=lambdas,
                             concurrency=concurrency, max_tokens=max_tokens,
                             share_runs=share_runs, progress=on_progress,
                             record_progress=on_record)

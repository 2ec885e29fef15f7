"""The ``orchestra`` command line (typer + rich).

Errors: a :class:`~orchestra.errors.UserError` prints one readable line and exits 2; a failure
during a run prints one line and exits 1; ``--debug`` (anywhere on the line) shows tracebacks.

Start-up stays light: the sub-commands written in other modules (``data``, ``doctor``, ``eval``,
``record``, ``serve``, ``train``, ``viewer``, ``traces export``) are listed in ``--help`` from the
one-line help kept in :data:`LAZY_COMMANDS` and imported only when invoked, and every command imports
what it needs (pydantic, numpy, litellm, LangGraph, torch) in its body.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, cast

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from orchestra.errors import OrchestraError, UserError

#: Help and usage errors are click's plain text: typer's rich formatting imports
#: ``typer.rich_utils`` (rich.markdown, markdown-it: ~85 ms, a third of ``--help``'s start-up).
#: Commands and groups mounted on ``app`` (lazy ones included) inherit it.
HELP_MARKUP: Any = None


class Lazy(NamedTuple):
    """A sub-command imported only when it runs."""

    target: str
    """``"module:attribute"``: a typer command function, or a ``typer.Typer`` for a group."""
    help: str
    """The one line ``--help`` lists; for a function, its docstring's first sentence (a unit test
    checks they agree), for a group the help it is mounted with."""
    group: bool = False
    """Whether ``target`` is a ``typer.Typer``: groups are listed after commands, as typer does."""


LAZY_COMMANDS: dict[str, dict[str, Lazy]] = {
    "orchestra": {
        "doctor": Lazy("orchestra.doctor:doctor_command",
                       "Check what a first run needs (llama.cpp build, model files, cost map, "
                       "trace store, Ray, API keys)."),
        "viewer": Lazy("orchestra.trace.viewer.cli:viewer_command",
                       "Browse stored runs in a web page: timelines, live runs, comparisons and "
                       "costs."),
        "serve": Lazy("orchestra.serve.cli:serve_command",
                      "Serve the pool as an OpenAI-compatible endpoint (chat completions, models, "
                      "metrics)."),
        "eval": Lazy("orchestra.eval.cli:eval_command",
                     "Evaluate policies on recorded outcomes through the real runtime (replay "
                     "pool), or live on your own pool against gold answers (--pool)."),
        "record": Lazy("orchestra.record.cli:record_command",
                       "Record how each model of a pool answers labelled questions, graded, as "
                       "an outcome table."),
        "data": Lazy("orchestra.outcomes.cli:data_app", "Inspect and split recorded outcome tables.",
                     group=True),
        "train": Lazy("orchestra.training.cli:train_app", "Train routing policies.", group=True),
        "keys": Lazy("orchestra.serve.keys_cli:keys_app",
                     "Create, list and revoke API keys for `orchestra serve`, with their budgets "
                     "and spend.", group=True),
    },
    "traces": {
        "export": Lazy("orchestra.trace.export:export_command",
                       "Export finished runs as training examples (JSON Lines; see "
                       "orchestra.trace.export)."),
    },
}
"""Group name → its lazily imported sub-commands."""


class _Placeholder(TyperCommand):
    """What a lazy sub-command is until it runs: its name and one-line help, for listings."""


def _no_callback() -> None:
    """Makes the holder app below a group, so the mounted command keeps its name."""


def load_lazy(name: str, spec: Lazy) -> Any:
    """Import ``spec.target`` and build the click command ``name`` from it, exactly as
    ``app.command(name)(fn)`` / ``app.add_typer(sub_app, name=name, help=spec.help)`` would."""
    module, _, attr = spec.target.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise UserError(f"command {name!r} is unavailable: {e}") from e
    holder = typer.Typer(add_completion=False, callback=_no_callback,
                         rich_markup_mode=HELP_MARKUP)
    if isinstance(obj, typer.Typer):
        holder.add_typer(obj, name=name, help=spec.help)
    else:
        holder.command(name)(obj)
    return cast(TyperGroup, typer.main.get_command(holder)).commands[name]


def _bool_help_flag(option: Any) -> Any:
    """Give the ``--help`` flag a bool default: typer (0.2x) coerces a flag's value unless it is a
    bool, and an absent ``--help`` is None, whose coercion builds a pydantic TypeAdapter (importing
    pydantic, ~0.1 s) even for a command without parameters."""
    if option is not None and option.default is None:
        option.default = False
    return option


class _Group(TyperGroup):
    """A typer group whose :data:`LAZY_COMMANDS` entries are placeholders until resolved."""

    lazy: ClassVar[dict[str, Lazy]] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        merged: dict[str, Any] = {**self.commands, **{
            name: _Placeholder(name=name, help=spec.help) for name, spec in self.lazy.items()}}

        def is_group(name: str) -> bool:
            return isinstance(merged[name], TyperGroup) or (name in self.lazy
                                                            and self.lazy[name].group)

        self.commands = {name: merged[name] for name in sorted(merged, key=is_group)}

    def get_help_option(self, ctx: Any) -> Any:
        return _bool_help_flag(super().get_help_option(ctx))

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if name is not None and isinstance(cmd, _Placeholder):
            cmd = self.commands[name] = load_lazy(name, self.lazy[name])
        if cmd is not None:
            _bool_help_flag(cmd.get_help_option(ctx))  # cached on cmd, used by its context
        return name, cmd, rest


def _group(name: str) -> type[_Group]:
    return type(f"_Group_{name}", (_Group,), {"lazy": LAZY_COMMANDS.get(name, {})})


app = typer.Typer(
    name="orchestra",
    help="Route / think / aggregate over pools of LLM agents, under hard budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=HELP_MARKUP,
    cls=_group("orchestra"),
)
pools_app = typer.Typer(help="List and show agent pools.", no_args_is_help=True,
                         cls=_group("pools"))
traces_app = typer.Typer(help="List, show and export stored run traces.", no_args_is_help=True,
                         cls=_group("traces"))
policies_app = typer.Typer(help="List routing policies.", no_args_is_help=True,
                            cls=_group("policies"))
app.add_typer(pools_app, name="pools")
app.add_typer(traces_app, name="traces")
app.add_typer(policies_app, name="policies")

# Model output, names and stored answers are untrusted text: nothing is ever read as rich markup
# (``[/INST]`` in an answer must print as itself); styles are given with ``Text`` instead.
out = Console(markup=False, emoji=False)
err = Console(stderr=True, markup=False, emoji=False)
_DEBUG = False


def money(x: float | None) -> str:
    """Format USD readably across the range from local models (1e-7) to hosted ones."""
    if x is None:
        return "∞"
    if x == 0:
        return "$0"
    if abs(x) >= 0.01:
        return f"${x:.4f}"
    return f"${x:.3g}"


def _budget(pool: Any, budget_usd: float | None, max_rounds: int | None, max_calls: int | None,
            max_tokens: int | None, timeout: float | None) -> dict[str, Any]:
    return {k: v for k, v in {"usd": budget_usd, "rounds": max_rounds, "calls": max_calls,
                              "tokens": max_tokens, "seconds": timeout}.items() if v is not None}


def _params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for it in items or []:
        if "=" not in it:
            raise UserError(f"expected --param KEY=VALUE (got {it!r})")
        k, v = it.split("=", 1)
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    return params


def _make(pool: str, policy: str | None, budget: dict[str, Any], db: str | None, no_trace: bool,
          durable: bool, params: dict[str, Any]) -> Any:
    from orchestra.runtime import Orchestra

    return Orchestra(pool, policy=policy, budget=budget or None,
                     store=False if no_trace else (str(db) if db else None), durable=durable,
                     policy_params=params or None)


def _live_printer(console: Console, quiet: bool = False) -> Any:
    """A listener printing events as they arrive (``quiet``: print nothing, only note the run id
    for the Ctrl-C hint). Every piece of text is printed as itself, never as markup."""

    def on_event(ev: Any) -> None:
        k = ev.kind
        seen.setdefault("run_id", getattr(ev, "run_id", None))
        if quiet:
            return
        if k == "policy_decided":
            head = (f"round {ev.round}", "bold cyan")
            reason = ("  ", (f"({ev.reason})", "dim")) if ev.reason else ()
            if ev.action == "route":
                targets = ", ".join(f"{c['agent']}@{c['model']}" for c in ev.calls)
                console.print(Text.assemble(head, f" route → {targets}", *reason))
                for d in ev.dropped:
                    console.print(Text.assemble(
                        "  ", (f"dropped {d['agent']}@{d['model']}: budget {d['limit']}", "yellow")))
            elif ev.action == "think":
                console.print(Text.assemble(head, f" think: {ev.note}"))
            else:
                console.print(Text.assemble(head, " answer", *reason))
        elif k == "call_finished":
            line = Text.assemble("  ", ("✗", "red") if ev.error else ("✓", "green"),
                                 f" {ev.agent}@{ev.model}  {ev.latency_s:.2f}s  "
                                 f"{ev.input_tokens}+{ev.output_tokens} tok  {money(ev.cost_usd)}")
            if ev.error:
                line.append(f"  {ev.error}", style="red")
            overrun = getattr(ev, "overrun", None)
            if overrun:
                line.append(f"  overrun +{money(overrun.get('excess_usd'))}: "
                            f"{overrun.get('reason', '')}", style="bold red")
            usage_note = getattr(ev, "usage_note", None)
            if usage_note:
                line.append(f"  usage: {usage_note}", style="yellow")
            console.print(line)
        elif k == "refined" and ev.refiner not in ("pass", "none"):
            console.print(Text.assemble("  ", ("refined", "magenta"), f" by {ev.refiner}",
                                        f"; conflicts: {ev.conflicts}" if ev.conflicts else ""))

    seen: dict[str, Any] = {}
    on_event.seen = seen  # type: ignore[attr-defined]  # the run id, for the Ctrl-C hint
    return on_event


def _summary_line(r: Any, budget_usd: float | None) -> Text:
    t = Text()
    t.append(f"{money(r.cost_usd)}", style="bold")
    if budget_usd:
        t.append(f" of {money(budget_usd)}")
    t.append(f" · {r.input_tokens}+{r.output_tokens} tokens · {r.calls} calls · {r.rounds} rounds"
             f" · {r.duration_s:.2f}s · {r.stop_reason} · trace {r.trace_id[:12]}", style="dim")
    overruns = getattr(r, "overruns", None) or []
    if overruns:
        excess = sum(float(o.get("excess_usd") or 0) for o in overruns)
        t.append(f" · OVERRUN: {len(overruns)} call(s) charged {money(excess)} above their "
                 "reservation (the provider ignored max_tokens or over-billed)", style="bold red")
    return t


@app.command()
def run(
    query: str = typer.Argument(..., help="The question or task."),
    pool: str = typer.Option("local", "--pool", "-p", help="Pool name (agents/<name>.yaml) or YAML path."),
    policy: str | None = typer.Option(None, "--policy", help="Policy name, recipe name or recipe file (default: the pool's)."),
    budget_usd: float | None = typer.Option(None, "--budget-usd", help="USD limit for the run."),
    max_rounds: int | None = typer.Option(None, "--max-rounds", help="Rounds limit."),
    max_calls: int | None = typer.Option(None, "--max-calls", help="Model calls limit."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Tokens limit (input + output)."),
    timeout: float | None = typer.Option(None, "--timeout", help="Wall-clock seconds limit."),
    param: list[str] | None = typer.Option(None, "--param", help="Policy parameter KEY=VALUE (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    db: str | None = typer.Option(None, "--db", help="Trace store file or postgresql:// URL (default: $ORCHESTRA_TRACE_DB or the user data dir)."),
    no_trace: bool = typer.Option(False, "--no-trace", help="Do not store the trace."),
    durable: bool = typer.Option(True, "--durable/--no-durable", help="Checkpoint each step so `orchestra resume` can continue."),
) -> None:
    """Answer QUERY with a pool of agents and models."""
    _check_text(query, "the query")
    orch = _make(pool, policy, _budget(None, budget_usd, max_rounds, max_calls, max_tokens, timeout),
                 db, no_trace, durable, _params(param))
    printer = _live_printer(err, quiet=as_json)
    with _interrupt_hint(printer, resumable=durable and not no_trace):
        if as_json:
            result = orch.run(query, on_event=printer)
            sys.stdout.write(json.dumps(result.to_dict()) + "\n")
            return
        err.print(Text(f"pool {orch.pool.name} · policy {orch.policy.name} · budget "
                       f"{money(orch.budget.usd)}", style="dim"))
        result = orch.run(query, on_event=printer)
    out.print()
    _print_answer(result.answer)
    err.print(_summary_line(result, orch.budget.usd))


def _print_answer(answer: str | None) -> None:
    if answer is None or answer == "":
        out.print(Text("(no answer)", style="red"))
    else:
        out.print(Text(answer), highlight=False)


def _check_text(text: str, what: str) -> None:
    """Refuse text that is not valid UTF-8 (undecodable bytes on the command line arrive as
    lone surrogates, which every later step would choke on)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(f"{what} is not valid UTF-8 text (undecodable byte at position {e.start}); "
                        "give it as UTF-8 (check the terminal's or file's encoding)") from None


@contextlib.contextmanager
def _interrupt_hint(printer: Any, resumable: bool) -> Iterator[None]:
    """On Ctrl-C, name the run and how to resume it, then exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        run_id = printer.seen.get("run_id")
        if run_id and resumable:
            err.print(Text(f"interrupted; resume with `orchestra resume {run_id}`", style="yellow"))
        else:
            err.print(Text("interrupted", style="yellow"))
        sys.exit(130)


@app.command()
def resume(
    run_id: str = typer.Argument(..., help="The id of an interrupted durable run."),
    budget_usd: float | None = typer.Option(None, "--budget-usd", help="New USD limit for the whole run (default: the run's own)."),
    max_rounds: int | None = typer.Option(None, "--max-rounds", help="New rounds limit."),
    max_calls: int | None = typer.Option(None, "--max-calls", help="New model calls limit."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="New tokens limit."),
    timeout: float | None = typer.Option(None, "--timeout", help="New wall-clock seconds limit (time already used counts)."),
    as_json: bool = typer.Option(False, "--json"),
    db: str | None = typer.Option(None, "--db", help="Trace store file or postgresql:// URL."),
) -> None:
    """Continue an interrupted run from its last completed step, on the pool, policy, parameters
    and budget it was started with (finished calls are not paid again). Limits given here replace
    the run's own for the whole run, spend so far included."""
    orch = _make("local", None, {}, db, False, True, {})
    budget = _budget(None, budget_usd, max_rounds, max_calls, max_tokens, timeout)
    printer = _live_printer(err, quiet=as_json)
    with _interrupt_hint(printer, resumable=True):
        result = orch.resume(run_id, on_event=printer, budget=budget or None)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    _print_answer(result.answer)
    started = next((e for e in result.events if e.kind == "run_started"), None)
    err.print(_summary_line(result, started.budget.get("usd") if started is not None else None))


_CHAT_HELP = """commands:
  /policy NAME   switch the routing policy      /pool NAME   switch the pool
  /budget USD    set the per-turn USD budget    /trace       show the last turn's trace
  /reset         forget the conversation        /help        this help
  /quit          leave (also Ctrl-D)"""


def _meter(spent: float, limit: float | None, width: int = 20) -> str:
    if not limit:
        return f"{money(spent)} spent (no limit)"
    frac = min(1.0, spent / limit)
    full = round(frac * width)
    return f"[{'█' * full}{'░' * (width - full)}] {money(spent)} / {money(limit)} ({frac:.0%})"


@app.command()
def chat(
    pool: str = typer.Option("local", "--pool", "-p", help="Pool name or YAML path."),
    policy: str | None = typer.Option(None, "--policy", help="Policy (default: the pool's)."),
    budget_usd: float | None = typer.Option(None, "--budget-usd", help="USD budget per turn."),
    session_usd: float | None = typer.Option(None, "--session-usd", help="USD budget for the whole session."),
    db: str | None = typer.Option(None, "--db", help="Trace store file or postgresql:// URL."),
    no_trace: bool = typer.Option(False, "--no-trace"),
) -> None:
    """A chat REPL that keeps the conversation; works from a terminal or a pipe."""
    interactive = sys.stdin.isatty()
    if isinstance(sys.stdin, io.TextIOWrapper):
        # An undecodable line must cost that line, not the session: keep its bytes (as lone
        # surrogates) and refuse it below.
        sys.stdin.reconfigure(errors="surrogateescape")
    state: dict[str, Any] = {"pool": pool, "policy": policy, "budget_usd": budget_usd}

    def build(**change: Any) -> Any:
        """An Orchestra for ``state`` updated with ``change``; ``state`` changes only when the
        build succeeds, so a bad command leaves the session as it was."""
        new = {**state, **change}
        o = _make(new["pool"], new["policy"], _budget(None, new["budget_usd"], None, None, None, None),
                  db, no_trace, False, {})
        state.update(new)
        return o

    orch = build()
    session = orch.chat()
    out.print(Text.assemble(("orchestra chat", "bold"), f" · pool {orch.pool.name} · policy "
                            f"{orch.policy.name} · /help for commands"))
    last: Any = None
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            out.print()
            break
        line = line.strip()
        if not line:
            continue
        try:
            _check_text(line, "the line")
        except UserError as e:
            _say_error("error: ", e)
            continue
        if not interactive:
            out.print(Text.assemble(("you>", "bold"), " ", line), highlight=False)
        if line.startswith("/"):
            cmd, _, arg = line.partition(" ")
            arg = arg.strip()
            try:
                if cmd in ("/quit", "/exit"):
                    break
                if cmd == "/help":
                    out.print(_CHAT_HELP)
                elif cmd == "/policy":
                    if not arg:
                        out.print(f"policy: {orch.policy.name}")
                        continue
                    orch = build(policy=arg)
                    session.orchestra = orch  # the conversation and its spend carry over
                    out.print(f"policy → {orch.policy.name}")
                elif cmd == "/pool":
                    if not arg:
                        out.print(f"pool: {orch.pool.name}")
                        continue
                    orch = build(pool=arg)
                    session.orchestra = orch  # the conversation and its spend carry over
                    out.print(f"pool → {orch.pool.name} ({len(orch.pool.models)} models)")
                elif cmd == "/budget":
                    if not arg:
                        out.print(f"per-turn budget: {money(orch.budget.usd)}")
                        continue
                    try:
                        value = float(arg)
                    except ValueError:
                        raise UserError(f"/budget expects a number of USD (got {arg!r})") from None
                    orch = build(budget_usd=value)
                    session.orchestra = orch  # the conversation and its spend carry over
                    out.print(f"per-turn budget → {money(orch.budget.usd)}")
                elif cmd == "/trace":
                    if last is None:
                        out.print("no turn yet")
                    else:
                        _print_steps(last.to_dict())
                elif cmd == "/reset":
                    session.reset()
                    out.print("conversation cleared")
                else:
                    out.print(f"unknown command {cmd!r}; /help lists them")
            except OrchestraError as e:
                _say_error("error: ", e)
            except Exception as e:  # a bug must not cost the conversation: one line, go on
                if _DEBUG:
                    raise
                _say_error("internal error: ", e, with_type=True)
            continue
        spent_before = sum(r.cost_usd for r in session.results)
        if session_usd is not None and spent_before >= session_usd:
            err.print(Text(f"session budget {money(session_usd)} is spent; /quit or restart with a "
                           "larger --session-usd", style="red"))
            continue
        try:
            turn_budget = None
            if session_usd is not None:
                left = session_usd - spent_before
                turn_budget = min(left, orch.budget.usd) if orch.budget.usd else left
            if turn_budget is not None and turn_budget != orch.budget.usd:
                from orchestra.runtime import Orchestra

                o2 = Orchestra(orch.pool, policy=orch.policy, budget=orch.budget.merged(usd=turn_budget),
                               backend=orch.backend, store=orch.store if orch.store else False)
                last = o2.run(line, history=list(session.history))
                session.results.append(last)
                session.history += [{"role": "user", "content": line},
                                    {"role": "assistant", "content": last.answer or ""}]
            else:
                last = session.send(line)
        except KeyboardInterrupt:  # Ctrl-C during a turn stops that turn, not the session
            err.print(Text("turn interrupted (Ctrl-C again at the prompt to leave)", style="yellow"))
            continue
        except OrchestraError as e:
            _say_error("error: ", e)
            continue
        except Exception as e:  # a bug must not cost the conversation: one line, go on
            if _DEBUG:
                raise
            _say_error("internal error: ", e, with_type=True)
            continue
        out.print(Text("bot> ", style="bold green") + Text(last.answer or "(no answer)"))
        t = Table(show_header=True, header_style="dim", box=None, pad_edge=False)
        for col in ("agent", "model", "tokens", "cost", "latency"):
            t.add_column(col)
        for s in last.to_dict()["steps"]:
            for c in s["calls"]:
                t.add_row(c["agent"], c["model"], f"{c['input_tokens']}+{c['output_tokens']}",
                          money(c["cost_usd"]), f"{c['latency_s']:.2f}s")
        out.print(t)
        meter_limit = session_usd if session_usd is not None else orch.budget.usd
        meter_spent = session.spent_usd if session_usd is not None else last.cost_usd
        out.print(Text(f"{'session' if session_usd is not None else 'turn'} budget "
                       f"{_meter(meter_spent, meter_limit)} · session total "
                       f"{money(session.spent_usd)} · {last.stop_reason}", style="dim"))
    out.print(Text(f"bye · {len(session.results)} turns · {money(session.spent_usd)}", style="dim"))


def _say_error(prefix: str, e: BaseException, with_type: bool = False) -> None:
    """One line on stderr for a failed chat command or turn (the session goes on)."""
    text = " ".join(str(e).split())
    if with_type:
        text = f"{type(e).__name__}: {text}"
    if len(text) > 500:
        text = text[:499] + "…"
    err.print(Text.assemble((prefix, "red"), text), highlight=False, soft_wrap=True)


def _print_steps(d: dict[str, Any]) -> None:
    t = Table(title=f"trace {d['trace_id'][:12]}", show_lines=False)
    for col in ("round", "action", "agent", "model", "in", "out", "cost", "latency", "note"):
        t.add_column(col)
    for s in d["steps"]:
        if not s["calls"]:
            t.add_row(str(s["round"]), s["action"], "", "", "", "", "", "", s.get("reason", ""))
        for c in s["calls"]:
            t.add_row(str(s["round"]), s["action"], c["agent"], c["model"], str(c["input_tokens"]),
                      str(c["output_tokens"]), money(c["cost_usd"]), f"{c['latency_s']:.2f}s",
                      c.get("error") or s.get("reason", ""))
    out.print(t)


# ----------------------------------------------------------------------------- pools
def _pool_row(path: Path) -> list[str] | None:
    """A ``pools list`` row read from the YAML alone, without pydantic; None for a file that is
    not plainly a pool (then :func:`_validated_pool_row` validates it for the message). The
    defaults are :class:`~orchestra.spec.Pool`'s; a unit test checks both agree."""
    from orchestra._yaml import read_yaml_file

    try:
        data = read_yaml_file(path, "pool file")  # aliases bounded, duplicate keys refused
    except UserError:
        return None
    if not isinstance(data, dict):
        return None
    models, agents = data.get("models"), data.get("agents")
    budget = data.get("budget", {"usd": 1.0})
    policy, description = data.get("policy", "cheapest"), data.get("description", "")
    if not (isinstance(models, list) and models and all(isinstance(m, dict) for m in models)
            and isinstance(agents, list) and agents and all(isinstance(a, dict) for a in agents)
            and isinstance(budget, dict) and isinstance(policy, str)
            and isinstance(description, str)):
        return None
    usd = budget.get("usd")
    model_names = [m.get("name", m.get("id")) for m in models]
    agent_names = [a.get("name") for a in agents]
    if (not all(isinstance(n, str) for n in model_names + agent_names)
            or not (usd is None or (isinstance(usd, int | float) and usd > 0))):
        return None
    return [", ".join(model_names), ", ".join(agent_names), policy, money(usd), description]


def _validated_pool_row(path: Path) -> list[str | Text]:
    from orchestra.spec import Pool

    try:
        p = Pool.from_yaml(path)
    except UserError as e:
        return [Text("invalid", style="red"), "", "", "", str(e).splitlines()[-1]]
    return [", ".join(m.name for m in p.models), ", ".join(a.name for a in p.agents), p.policy,
            money(p.budget.usd), p.description]


@pools_app.command("list")
def pools_list() -> None:
    """Pools found under agents/ (and $ORCHESTRA_AGENTS_DIR).

    Read without validation, to start fast; ``orchestra pools show NAME`` validates a pool."""
    from orchestra._paths import named_files

    t = Table("name", "models", "agents", "policy", "budget", "description")
    for name, path in named_files("agents").items():
        t.add_row(name, *(_pool_row(path) or _validated_pool_row(path)))
    out.print(t)


@pools_app.command("show")
def pools_show(name: str = typer.Argument(..., help="Pool name or YAML path."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a pool's models (with prices), agents, refiner, budget and policy."""
    from orchestra.backends.priced import priced_pool
    from orchestra.spec import Pool

    p = priced_pool(Pool.load(name))
    if as_json:
        sys.stdout.write(json.dumps(p.model_dump(mode="json")) + "\n")
        return
    out.print(Text.assemble((p.name, "bold"), f" — {p.description}  ", (f"({p.source})", "dim")))
    t = Table("model", "litellm id", "$/1M in", "$/1M out", "context", "max out", "tags", "description",
              title="models")
    for m in p.models:
        t.add_row(m.name, m.id, f"{m.input_price:g}", f"{m.output_price:g}", str(m.context_window),
                  str(m.max_output_tokens), ", ".join(m.tags), m.description)
    out.print(t)
    t = Table("agent", "role", "models", "tools", "description", title="agents")
    for a in p.agents:
        t.add_row(a.name, a.role, ", ".join(a.models) or "(all)", ", ".join(x.name for x in a.tools),
                  a.description)
    out.print(t)
    b = p.budget
    out.print(f"refiner: {p.refiner.kind}"
              + (f" ({p.refiner.agent or ''}@{p.refiner.model or ''})" if p.refiner.kind == "llm" else "")
              + f" · policy: {p.policy} · budget: usd={b.usd} tokens={b.tokens} calls={b.calls} "
              f"rounds={b.rounds} seconds={b.seconds}")


@policies_app.command("list")
def policies_list() -> None:
    """Registered policies and recipes under policies/."""
    from orchestra._paths import named_files
    from orchestra.policies.resolve import policy_names

    t = Table("name", "kind", "description")
    for name, doc in policy_names().items():
        t.add_row(name, "built-in", doc)
    for name, path in named_files("policies").items():
        t.add_row(name, "recipe", str(path))
    out.print(t)


# ----------------------------------------------------------------------------- traces
def _store(db: str | None) -> Any:
    from orchestra.trace.pg_store import open_store

    return open_store(db, readonly=True)


@contextlib.contextmanager
def _reading_store(db: str | None) -> Iterator[None]:
    """Turn a damaged store (a row that is not JSON, a file that is not SQLite) into one line
    naming the file and the way out, not an internal error."""
    import sqlite3

    try:
        yield
    except (ValueError, TypeError, KeyError, sqlite3.DatabaseError) as e:
        if isinstance(e, UserError):
            raise
        from orchestra.trace.pg_store import redact_url, trace_target

        what = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise UserError(
            f"the trace store {redact_url(str(trace_target(db)))!r} has a damaged row or is not a "
            f"trace store ({what}); move the file aside to start a fresh one, or read other runs "
            "with `orchestra traces show ID`") from None


@traces_app.command("list")
def traces_list(
    db: str | None = typer.Option(None, "--db", help="Trace store file or postgresql:// URL."),
    limit: int = typer.Option(20, "--limit", "-n"),
    search: str | None = typer.Option(None, "--search", "-s"),
    status: str | None = typer.Option(None, "--status"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent runs, newest first."""
    import datetime as dt

    from orchestra.trace.liveness import as_shown

    with _reading_store(db):
        store = _store(db)
        if status in ("running", "interrupted"):
            # A killed run is stored as running and shown as interrupted: filter on what is shown.
            rows = [as_shown(store, r) for st in ("running", "interrupted")
                    for r in store.list_runs(limit=max(store.count_runs(status=st), 1),
                                             search=search, status=st)]
            rows = sorted((r for r in rows if r.get("status") == status),
                          key=lambda r: r.get("started_at") or 0.0, reverse=True)[:limit]
        else:
            rows = [as_shown(store, r) for r in store.list_runs(limit=limit, search=search,
                                                                status=status)]
    if as_json:
        sys.stdout.write(json.dumps(rows, default=str) + "\n")
        return
    t = Table("id", "started", "query", "policy", "cost", "calls", "rounds", "status", "answer")
    for r in rows:
        try:
            started = (dt.datetime.fromtimestamp(r["started_at"]).strftime("%Y-%m-%d %H:%M:%S")
                       if r["started_at"] else "")
            t.add_row(r["run_id"][:12], started, (r["query"] or "")[:50], r["policy"] or "",
                      money(r["cost_usd"]), str(r["calls"]), str(r["rounds"]), r["status"] or "",
                      (r["answer"] or "")[:40].replace("\n", " "))
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError, OSError):
            t.add_row(str(r.get("run_id"))[:12], "", Text("(damaged row)", style="red"),
                      "", "", "", "", "", "")
    out.print(t)


@traces_app.command("show")
def traces_show(
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
    db: str | None = typer.Option(None, "--db", help="Trace store file or postgresql:// URL."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every step of a run: decisions, calls, refinements, the answer."""
    from orchestra.trace.liveness import as_shown

    with _reading_store(db):
        store = _store(db)
        run_row = store.find_run(run_id)
        events = store.events(run_row["run_id"])
        run_row = as_shown(store, store.get_run(run_row["run_id"]) or run_row)
    if as_json:
        sys.stdout.write(json.dumps({"run": run_row, "events": events}, default=str) + "\n")
        return
    out.print(Text.assemble((f"run {run_row['run_id']}", "bold"),
                            f"  {run_row['status']}  {run_row.get('stop_reason') or ''}"))
    out.print(Text(f"query: {run_row['query']}"))
    t = Table("seq", "kind", "round", "detail")
    for e in events:
        try:
            t.add_row(*_event_cells(e))
        except (TypeError, ValueError, KeyError, AttributeError):
            t.add_row(str(e.get("seq", "")) if isinstance(e, dict) else "", "", "",
                      Text("(damaged event)", style="red"))
    out.print(t)
    out.print(Text(f"answer: {run_row.get('answer')}"))
    if run_row.get("resume"):
        out.print(Text(f"resume with: {run_row['resume']}", style="yellow"))


def _event_cells(e: dict[str, Any]) -> tuple[str, str, str, str | Text]:
    """One ``traces show`` row; stored text is printed as itself, never as markup."""
    k = e["kind"]
    detail: str | Text
    if k == "policy_decided":
        detail = f"{e['action']}: " + ", ".join(f"{c['agent']}@{c['model']}" for c in e["calls"]) + (f" ({e['reason']})" if e["reason"] else "")
    elif k == "call_finished":
        detail = Text(f"{e['agent']}@{e['model']} {e['input_tokens']}+{e['output_tokens']} tok "
                      f"{money(e['cost_usd'])} {e['latency_s']:.2f}s → "
                      f"{(e['error'] or e['output'])[:80]!r}")
        if e.get("overrun"):
            detail.append(f" OVERRUN +{money(e['overrun'].get('excess_usd'))}", style="bold red")
    elif k == "call_started":
        detail = f"{e['agent']}@{e['model']} max_tokens={e['max_tokens']} reserved {money(e['reserved_usd'])}"
    elif k == "refined":
        detail = f"{e['refiner']} → {e['output'][:80]!r}"
    elif k == "run_finished":
        detail = (f"{e['stop_reason']} {money(e['cost_usd'])} {e['calls']} calls "
                  f"{e['rounds']} rounds {e['duration_s']:.2f}s")
    elif k == "error":
        detail = Text(f"{e['where']}: {e['error_type']}: {e['message']}", style="red")
    elif k == "damaged":
        detail = Text(str(e.get("message")), style="red")
    else:
        detail = f"pool={e.get('pool')} policy={e.get('policy')}"
    return str(e["seq"]), k, "" if e.get("round") is None else str(e["round"]), detail


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning orchestra errors into one readable line."""
    global _DEBUG
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        _DEBUG = True
        args.remove("--debug")
    try:
        app(args=args, prog_name="orchestra", standalone_mode=True)
    except SystemExit:
        raise
    except UserError as e:
        if _DEBUG:
            raise
        err.print(Text("error: ", style="red") + Text(str(e)), highlight=False, soft_wrap=True)
        sys.exit(2)
    except OrchestraError as e:
        if _DEBUG:
            raise
        err.print(Text("run failed: ", style="red") + Text(str(e)), highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print(Text("interrupted", style="yellow"))
        sys.exit(130)
    except Exception as e:  # an unexpected bug: still one line, unless --debug
        if _DEBUG:
            raise
        err.print(Text("internal error: ", style="red")
                  + Text(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)"),
                  highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

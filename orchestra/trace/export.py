"""Export stored runs as training examples (JSON Lines) and read them back, validated.

``orchestra traces export --out runs.jsonl`` (or :func:`export_runs`) writes one JSON object per
finished run; :func:`read_examples` yields them as :class:`TraceExample` objects. Runs still in
progress are never exported (their trace is not complete).

Format (version 1), one object per line::

    {
      "version": 1,
      "run_id": "…", "query": "…", "pool": "…", "policy": "…",
      "status": "ok" | "budget" | "error",
      "decisions": [                       # one per policy decision, in order
        {"round": 0, "action": "think" | "route" | "answer" | "invalid", "reason": "…",
         "scores": {…},                     # whatever the policy reported
         "calls": [{"agent": "…", "model": "…"}]}   # the planned calls that fit the budget
      ],
      "calls": [                           # every model call, in the order they finished
        {"round": 0, "agent": "…", "model": "…", "role": "route" | <a policy's label> | "refine" | "policy" | "tool",
         "input_tokens": 12, "output_tokens": 30, "cost_usd": 0.0004, "latency_s": 0.8,
         "output": "…", "error": null | "…",
         "overrun": null | {"reserved_usd": …, "charged_usd": …, "excess_usd": …,
                            "reserved_tokens": …, "charged_tokens": …, "excess_tokens": …,
                            "reason": "…"}}   # charged above its reservation
      ],
      "answer": "…" | null, "stop_reason": "answered" | "budget:usd" | "budget_overrun" | …,
      "cost_usd": 0.0012,                  # every charge, overruns included
      "score": 1.0 | 0.0 | null,           # when a grade, feedback or a gold answer is known
      "overruns": [{"call_id": "…", "agent": "…", "model": "…", …}],  # the calls above
      "task": "…" | null, "query_id": "…" | null   # the run's meta["task"] / meta["query_id"]
    }

``overrun``/``overruns``, ``task`` and ``query_id`` were added within version 1: files written
before them still read.

A call that started but never finished (the run was interrupted) is listed with zero tokens and
cost and ``error`` saying so. A stored run that does not make a valid example (a negative cost
written by an older version, a corrupt event) is skipped, never fatal: :func:`export_runs` names
it and why (``on_skip``), and the command prints those lines. ``score`` comes from the ``grades`` given to :func:`export_runs`
(keyed by run id, or else by query), else from the run's last ``feedback`` event with a score
(:meth:`Orchestra.feedback <orchestra.runtime.Orchestra.feedback>`), else from the run's
``meta["gold"]`` (a string or a list of accepted strings) compared with the answer by normalised
exact match (:func:`~orchestra.refiners.normalize_answer`, the evaluation harness's: case,
punctuation, articles and spacing ignored): 1.0 or 0.0. Graded examples are logged bandit
feedback that ``orchestra train bandit|knn|mlp|mf --data runs.jsonl`` learns from
(:mod:`orchestra.training.trace_data`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestra.errors import UserError

# The evaluation harness's normalisation, so that an exported score agrees with `orchestra eval`.
from orchestra.refiners import normalize_answer
from orchestra.trace.store import TraceStore

__all__ = [
    "FORMAT_VERSION",
    "ExampleCall",
    "ExampleDecision",
    "PlannedCall",
    "TraceExample",
    "build_example",
    "export_command",
    "export_runs",
    "normalize_answer",
    "read_examples",
]

#: The version written in every example; readers reject others.
FORMAT_VERSION: Literal[1] = 1
_FINISHED = ("ok", "budget", "error")
_PAGE = 500
_UNFINISHED = "the call did not finish (no call_finished event: the run was interrupted)"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlannedCall(_Frozen):
    """A call a policy planned."""

    agent: str
    model: str


class ExampleDecision(_Frozen):
    """One policy decision."""

    round: int = Field(ge=0)
    action: Literal["think", "route", "answer", "invalid"]
    reason: str = ""
    scores: dict[str, Any] = Field(default_factory=dict)
    calls: list[PlannedCall] = Field(default_factory=list)


class ExampleCall(_Frozen):
    """One model call and its outcome."""

    round: int = Field(ge=0)
    agent: str
    model: str
    #: ``route`` (or the label the policy gave the call), ``refine``, ``policy``, ``tool``
    role: str = Field(default="route", min_length=1)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    latency_s: float = Field(ge=0)
    output: str
    error: str | None = None
    #: what the call was charged above its reservation (``reserved_usd``, ``charged_usd``,
    #: ``excess_usd``, the same for tokens, and ``reason``), when a provider over-billed
    overrun: dict[str, Any] | None = None


class TraceExample(_Frozen):
    """One finished run as a training example (the format in this module's docstring)."""

    version: Literal[1] = FORMAT_VERSION
    run_id: str
    query: str
    pool: str
    policy: str
    status: Literal["ok", "budget", "error"]
    decisions: list[ExampleDecision]
    calls: list[ExampleCall]
    answer: str | None
    stop_reason: str | None
    cost_usd: float = Field(ge=0)
    score: float | None = None
    #: the calls charged above their reservation (``call_id``, ``agent``, ``model`` and the
    #: fields of :attr:`ExampleCall.overrun`); ``cost_usd`` includes the excess
    overruns: list[dict[str, Any]] = Field(default_factory=list)
    #: the run's ``meta["task"]`` and ``meta["query_id"]``, when it was given them
    task: str | None = None
    query_id: str | None = None


# --------------------------------------------------------------------------- grading
def _grade_gold(answer: str | None, gold: Any) -> float | None:
    if gold is None:
        return None
    golds = [gold] if isinstance(gold, (str, int, float)) else list(gold)
    if not golds:
        return None
    if answer is None:
        return 0.0
    got = normalize_answer(answer)
    return 1.0 if any(got == normalize_answer(str(g)) for g in golds) else 0.0


def _check_grades(grades: Mapping[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (grades or {}).items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v):
            raise UserError(
                f"grade for {key!r} must be a finite number (got {value!r}); give a score such "
                "as 1.0 or 0.0"
            )
        out[str(key)] = v
    return out


# --------------------------------------------------------------------------- building
def build_example(run: Mapping[str, Any], events: list[dict[str, Any]],
                  grades: Mapping[str, float] | None = None) -> TraceExample:
    """The training example of one finished run, from its summary and its events.

    Args:
        run: the run's summary (a row of the store's ``runs`` table).
        events: its events, in ``seq`` order.
        grades: scores keyed by run id or by query.

    Raises:
        UserError: when the run has not finished.
    """
    if run.get("status") not in _FINISHED:
        raise UserError(
            f"run {run.get('run_id')!r} has status {run.get('status')!r}; only finished runs "
            f"({', '.join(_FINISHED)}) can be exported"
        )
    decisions: list[ExampleDecision] = []
    calls: list[ExampleCall] = []
    started: dict[str, dict[str, Any]] = {}
    feedback_score: float | None = None
    if run.get("damaged"):
        raise ValueError(f"the stored summary's {', '.join(run['damaged'])} is not JSON")
    for ev in events:
        kind = ev["kind"]
        if kind == "damaged":
            raise ValueError(ev.get("message") or "a stored event is damaged")
        if kind == "policy_decided":
            decisions.append(ExampleDecision(
                round=ev["round"], action=ev["action"], reason=ev.get("reason") or "",
                scores=ev.get("scores") or {},
                calls=[PlannedCall(agent=str(c.get("agent")), model=str(c.get("model")))
                       for c in ev.get("calls") or []],
            ))
        elif kind == "call_started":
            started[ev["call_id"]] = ev
        elif kind == "feedback" and ev.get("score") is not None:
            feedback_score = float(ev["score"])  # the latest feedback wins
        elif kind == "call_finished":
            started.pop(ev["call_id"], None)
            calls.append(ExampleCall(
                round=ev["round"], agent=ev["agent"], model=ev["model"],
                role=ev.get("role") or "route", input_tokens=ev["input_tokens"],
                output_tokens=ev["output_tokens"], cost_usd=ev["cost_usd"],
                latency_s=ev["latency_s"], output=ev.get("output") or "", error=ev.get("error"),
                overrun=ev.get("overrun"),
            ))
    for ev in started.values():
        calls.append(ExampleCall(
            round=ev["round"], agent=ev["agent"], model=ev["model"], role=ev.get("role") or "route",
            input_tokens=0, output_tokens=0, cost_usd=0.0, latency_s=0.0, output="",
            error=_UNFINISHED,
        ))
    g = grades or {}
    if run["run_id"] in g:
        score: float | None = float(g[run["run_id"]])
    elif run.get("query") in g:
        score = float(g[run["query"]])
    elif feedback_score is not None:
        score = feedback_score
    else:
        score = _grade_gold(run.get("answer"), (run.get("meta") or {}).get("gold"))
    raw_meta = run.get("meta")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    return TraceExample(
        run_id=run["run_id"], query=run.get("query") or "", pool=run.get("pool") or "",
        policy=run.get("policy") or "", status=run["status"], decisions=decisions, calls=calls,
        answer=run.get("answer"), stop_reason=run.get("stop_reason"),
        cost_usd=float(run.get("cost_usd") or 0.0), score=score,
        overruns=list(run.get("overruns") or []),
        task=None if meta.get("task") is None else str(meta["task"]),
        query_id=None if meta.get("query_id") is None else str(meta["query_id"]),
    )


def export_runs(
    store: TraceStore,
    out_path: str | Path,
    *,
    status: str | None = None,
    policy: str | None = None,
    pool: str | None = None,
    search: str | None = None,
    grades: Mapping[str, float] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> int:
    """Write the finished runs that match the filters to ``out_path`` as JSON Lines.

    Runs are written oldest first. The file is written next to its final name and moved into
    place at the end, so a reader never sees half a file. A run whose stored trace does not make
    a valid example is skipped and the rest are exported.

    Args:
        store: the trace store to read.
        out_path: the ``.jsonl`` file to write (its folder is created).
        status: only runs that ended so: ``"ok"``, ``"budget"`` or ``"error"``.
        policy / pool: only runs of this policy / pool.
        search: only runs whose query, answer or id contains this text.
        grades: known scores keyed by run id or by query (the run id wins); runs without one
            are graded against ``meta["gold"]`` when it is set.
        on_skip: called with ``(run_id, reason)`` for each finished run that was skipped.

    Returns:
        How many examples were written.

    Raises:
        UserError: a bad filter or grade.
    """
    if status is not None and status not in _FINISHED:
        raise UserError(
            f"cannot export runs with status {status!r}; expected one of {list(_FINISHED)} "
            "(runs still in progress are never exported)"
        )
    checked = _check_grades(grades)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    filters = {"status": status, "policy": policy, "pool": pool, "search": search}
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as f:
            offset = 0
            while True:
                page = store.list_runs(limit=_PAGE, offset=offset, sort="started_at",
                                       descending=False, **filters)
                offset += len(page)
                for run in page:
                    if run.get("status") not in _FINISHED:
                        continue
                    try:
                        ex = build_example(run, store.events(run["run_id"]), checked)
                    except (ValidationError, KeyError, TypeError, ValueError) as e:
                        # One bad stored run (UserError included) must not cost the whole export.
                        if on_skip is not None:
                            on_skip(str(run.get("run_id")), _skip_reason(e))
                        continue
                    f.write(ex.model_dump_json() + "\n")
                    n += 1
                if len(page) < _PAGE:
                    break
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _skip_reason(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        return f"{where}: {err.get('msg')} (got {str(repr(err.get('input')))[:80]})"
    if isinstance(e, KeyError):
        return f"a stored event lacks the field {e.args[0]!r}"
    return f"{type(e).__name__}: {e}"


def read_examples(path: str | Path) -> Iterator[TraceExample]:
    """The examples of a file written by :func:`export_runs`, validated one by one.

    Blank lines are skipped.

    Raises:
        UserError: the file is missing, or a line is not a valid example (the message names
            the line and the field).
    """
    from orchestra.spec import format_validation_error

    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"no trace examples file {str(p)!r}; write one with `orchestra traces export --out "
            f"{p}`"
        )
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{p}:{i}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not JSON ({e.msg}); expected one example per line") from None
            if not isinstance(data, dict):
                raise UserError(f"{where}: expected a JSON object (got {type(data).__name__})")
            if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
                raise UserError(
                    f"{where}: example format version {data.get('version')!r} is not supported; "
                    f"expected {FORMAT_VERSION} (re-export with this version of orchestra)"
                )
            try:
                yield TraceExample.model_validate(data)
            except ValidationError as e:
                raise UserError(
                    f"{where}: not a valid trace example:\n" + format_validation_error(e, where)
                ) from None


def _load_grades(path: Path) -> dict[str, float]:
    if not path.is_file():
        raise UserError(f"no grades file {str(path)!r}; give a JSON object {{run id or query: score}}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"grades file {str(path)!r} is not JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise UserError(
            f"grades file {str(path)!r} must hold a JSON object {{run id or query: score}} "
            f"(got {type(data).__name__})"
        )
    return _check_grades(data)


def export_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="The .jsonl file to write.")],
    db: Annotated[str | None, typer.Option(
        "--db", help="Trace store file or postgresql:// URL.")] = None,
    status: Annotated[str | None, typer.Option(
        "--status", help="Only runs that ended so: ok, budget or error.")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Only runs of this policy.")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Only runs of this pool.")] = None,
    search: Annotated[str | None, typer.Option(
        "--search", "-s", help="Only runs whose query, answer or id contains this.")] = None,
    grades: Annotated[Path | None, typer.Option(
        "--grades", help="JSON file {run id or query: score} giving each run's score (else a "
        "run's feedback score, else its meta gold).")] = None,
) -> None:
    """Export finished runs as training examples (JSON Lines; see orchestra.trace.export)."""
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a directory; give a file path such as "
                        f"{str(out / 'runs.jsonl')!r}")
    grade_map = _load_grades(grades) if grades is not None else None
    from orchestra.trace.pg_store import open_store

    store = open_store(db, readonly=True)
    assert store is not None
    skipped: list[tuple[str, str]] = []
    try:
        n = export_runs(store, out, status=status, policy=policy, pool=pool, search=search,
                        grades=grade_map, on_skip=lambda rid, why: skipped.append((rid, why)))
    finally:
        store.close()
    for rid, why in skipped:
        typer.echo(f"skipped run {rid}: {why}", err=True)
    typer.echo(f"exported {n} run{'s' if n != 1 else ''} to {out}"
               + (f" ({len(skipped)} skipped: not valid examples)" if skipped else ""))

"""Labelled sets: questions with gold answers, from files, shared names or the Hugging Face hub.

:func:`load_labelled` reads one set into :class:`LabelledItem` s. What it understands:

- a **name** of the shared QA sets (``nq``, ``gsm8k``, ``hotpotqa``, ``bamboogle``, ``musique``,
  ``2wiki``; ``NAME:test`` works too), found as ``qa/<name>_<split>.json[l]`` in the data dirs
  (``$ORCHESTRA_DATA_DIR``, then ``$ORCHESTRA_SHARED_DATA``, like ``routerbench``);
- a **file**: a JSON list of objects (``.json``), one object a line (``.jsonl``) or a ``.csv``
  with a header. The NQ layout ``{question, answer: [aliases]}`` and the GSM8K layout
  ``{question, answer: "... #### 18"}`` are read as they are; any other layout works when its
  columns are named (``question=``, ``gold=``, ``task=``, ``id=``, ``choices=``) or have a usual
  name (question: ``question``, ``query``, ``prompt``, ``input``, ``problem``; gold: ``answer``,
  ``answers``, ``gold``, ``ground_truth``, ``target``, ``label``; task: ``task``,
  ``task_name``; id: ``id``, ``query_id``, ``qid``; choices: ``choices``, ``options``);
- ``hf:NAME[:CONFIG][:SPLIT]``: a Hugging Face ``datasets`` set by name (needs the
  ``datasets`` package and a reachable hub; split ``test`` by default).

Gold answers become a tuple of aliases (any one is right):

- a list of strings: the aliases (NQ);
- a string ending ``#### <number>``: the number (GSM8K), graded by number match;
- a JSON number: that number, graded by number match;
- an object: its ``aliases``, ``text`` or ``value`` (TriviaQA, SQuAD layouts);
- with choices: a letter (``B``, ``(B)``), a 0-based index or the text of an option, kept as the
  letter, graded by the choice letter.

Each item's id is the one given, else ``q`` + the first 12 hex digits of the SHA-1 of the prompt
(question and options), so the same question gets the same id in every file and run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchestra.errors import UserError
from orchestra.outcomes.choices import _LETTERS, extract_choice_letter, parse_choices
from orchestra.outcomes.datadirs import data_dirs

if TYPE_CHECKING:
    from orchestra.outcomes.table import OutcomeTable

__all__ = [
    "SHARED_SETS",
    "DefaultGrader",
    "LabelledItem",
    "LabelledSet",
    "iter_items",
    "load_labelled",
    "load_labelled_sets",
]

#: The grader an item is graded by when none is chosen (see :mod:`orchestra.record.graders`).
DefaultGrader = Literal["em", "number", "letter"]

#: The shared QA sets found by name in ``<data dir>/qa/`` (``<name>_test.json[l]``).
SHARED_SETS = ("nq", "gsm8k", "hotpotqa", "bamboogle", "musique", "2wiki")

_QUESTION_COLS = ("question", "query", "prompt", "input", "problem")
_GOLD_COLS = ("answer", "answers", "gold", "ground_truth", "target", "label")
_TASK_COLS = ("task", "task_name")
_ID_COLS = ("id", "query_id", "qid")
_CHOICE_COLS = ("choices", "options")
_GSM8K = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)
_SPLIT_SUFFIX = re.compile(r"[_-](test|train|dev|val|validation)$")


@dataclass(frozen=True)
class LabelledItem:
    """One question with its gold answers.

    Attributes:
        id: stable id (given, or a hash of the prompt).
        question: the question as the set gives it.
        gold: the accepted answers (aliases; one letter for a multiple-choice question).
        task: the task name (the set's name unless the file gives one per row).
        choices: the options of a multiple-choice question, in letter order.
        grader: the grader used when none is chosen: ``number`` for GSM8K-style and numeric
            gold answers, ``letter`` with choices, else ``em``.
    """

    id: str
    question: str
    gold: tuple[str, ...]
    task: str
    choices: tuple[str, ...] | None = None
    grader: DefaultGrader = "em"

    @property
    def prompt(self) -> str:
        """What the models are asked: the question, then ``A) option`` lines when the options
        are not already in it."""
        if not self.choices or parse_choices(self.question) is not None:
            return self.question
        lines = [f"{_LETTERS[i]}) {c}" for i, c in enumerate(self.choices)]
        return self.question.rstrip() + "\n\n" + "\n".join(lines)


@dataclass(frozen=True)
class LabelledSet:
    """The items of one set, and how it was read.

    Attributes:
        name: what was asked for (a name, a path or ``hf:...``).
        items: the questions, in file order (or the seeded sample's order).
        duplicates: items dropped because their id came earlier in the set.
        source: the file (or hub set) read.
        columns: the column used for each of question, gold, task, id and choices (None: not
            in the file).
    """

    name: str
    items: list[LabelledItem]
    duplicates: int = 0
    source: str = ""
    columns: dict[str, str | None] = field(default_factory=dict)


def load_labelled(
    spec: str | Path,
    *,
    question: str | None = None,
    gold: str | None = None,
    task: str | None = None,
    id: str | None = None,
    choices: str | None = None,
    task_name: str | None = None,
    limit: int | None = None,
    seed: int | None = None,
) -> LabelledSet:
    """Read a labelled set (see the module docstring for the names, files and layouts).

    Args:
        spec: a shared set's name (``nq``, ``gsm8k``...), a ``.json``/``.jsonl``/``.csv`` path
            or ``hf:NAME[:CONFIG][:SPLIT]``.
        question / gold / task / id / choices: the column holding each, when it is not one of
            the usual names. ``question`` and ``gold`` must exist; the others are optional.
        task_name: the task of every item that has no task column (default: the set's name,
            e.g. ``nq`` for ``nq_test.json``).
        limit: keep the first N questions (after the seeded shuffle when ``seed`` is given).
        seed: shuffle the questions with this seed before ``limit`` (the same seed and a larger
            limit extend the same sample).

    Raises:
        UserError: an unknown name, a missing file, a column that is not there, a row without a
            question or gold answer, a bad limit, or (``hf:``) ``datasets`` missing or the hub
            unreachable.
    """
    if limit is not None and limit < 1:
        raise UserError(f"limit={limit!r}: expected a positive number of questions")
    text = str(spec)
    if text.startswith("hf:"):
        records, source, default_task = _hub_records(text)
    else:
        path = _resolve(spec)
        records, source = _file_records(path), str(path)
        default_task = _SPLIT_SUFFIX.sub("", path.stem) or path.stem
    cols = _columns(records, source, question=question, gold=gold, task=task, id=id,
                    choices=choices)
    items: list[LabelledItem] = []
    seen: set[str] = set()
    dups = 0
    for n, rec in enumerate(records, 1):
        item = _item(rec, n, source, cols, task_name or default_task)
        if item.id in seen:
            dups += 1
            continue
        seen.add(item.id)
        items.append(item)
    if seed is not None:
        random.Random(seed).shuffle(items)
    if limit is not None:
        items = items[:limit]
    return LabelledSet(name=text, items=items, duplicates=dups, source=source, columns=cols)


def load_labelled_sets(specs: Sequence[str | Path], **options: Any) -> list[LabelledSet]:
    """:func:`load_labelled` for each spec (the options apply to each; ``limit`` per set).

    Raises:
        UserError: as :func:`load_labelled`, or two sets giving one id different questions.
    """
    sets = [load_labelled(s, **options) for s in specs]
    owner: dict[str, tuple[str, LabelledItem]] = {}
    for s in sets:
        for it in s.items:
            prev = owner.setdefault(it.id, (s.name, it))
            if prev[1] != it and prev[1].prompt != it.prompt:
                raise UserError(
                    f"question id {it.id!r} names different questions in {prev[0]!r} and "
                    f"{s.name!r}; expected ids unique across the sets — rename one set's ids "
                    "or leave ids out (a hash of the question is used)")
    return sets


# ---------------------------------------------------------------------- where the rows come from
def _resolve(spec: str | Path) -> Path:
    p = Path(spec)
    if p.is_file():
        return p
    text = str(spec)
    name, _, split = text.partition(":")
    if name in SHARED_SETS and not p.suffix:
        split = split or "test"
        tried: list[str] = []
        for d in data_dirs():
            for suffix in (".json", ".jsonl"):
                f = d / "qa" / f"{name}_{split}{suffix}"
                if f.is_file():
                    return f
                tried.append(str(f))
        where = ", ".join(tried) if tried else (
            "no data dir is set: set ORCHESTRA_SHARED_DATA or ORCHESTRA_DATA_DIR to the folder "
            "holding qa/")
        raise UserError(f"labelled set {text!r}: no {name}_{split}.json[l] found ({where}); "
                        "expected the shared data folder, or give a file path")
    if p.suffix or "/" in text:
        raise UserError(f"labelled set file {text!r} does not exist; expected a .json, .jsonl "
                        "or .csv file")
    raise UserError(f"unknown labelled set {text!r}: expected one of {list(SHARED_SETS)!r}, a "
                    ".json/.jsonl/.csv path, or hf:NAME[:CONFIG][:SPLIT]")


def _file_records(path: Path) -> list[Mapping[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    if suffix == ".jsonl":
        records: list[Mapping[str, Any]] = []
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path.name} line {lineno}: expected one JSON object a line "
                                    f"(got {line.strip()[:60]!r}: {e.msg})") from None
                records.append(_object(obj, path.name, lineno))
        return records
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path.name}: expected a JSON list of objects ({e.msg} at line "
                            f"{e.lineno})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise UserError(f"{path.name}: expected a JSON list of objects (got "
                            f"{type(data).__name__})")
        return [_object(o, path.name, i) for i, o in enumerate(data, 1)]
    raise UserError(f"cannot read labelled set {str(path)!r}: expected a .json, .jsonl or .csv "
                    f"file (got {suffix!r})")


def _object(obj: Any, name: str, n: int) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise UserError(f"{name} row {n}: expected an object with a question and a gold answer "
                        f"(got {obj!r:.80})")
    return obj


def _hub_records(text: str) -> tuple[list[Mapping[str, Any]], str, str]:
    """The rows of ``hf:NAME[:CONFIG][:SPLIT]`` (one part after NAME is the split when it looks
    like one: ``test``, ``train``, ``validation``...)."""
    parts = text[3:].split(":")
    name = parts[0]
    if not name or len(parts) > 3:
        raise UserError(f"{text!r}: expected hf:NAME[:CONFIG][:SPLIT], e.g. hf:gsm8k:main:test")
    config: str | None = None
    split = "test"
    if len(parts) == 3:
        config, split = parts[1] or None, parts[2] or "test"
    elif len(parts) == 2:
        if re.fullmatch(r"(test|train|dev|val|validation)(\[.*\])?", parts[1]):
            split = parts[1]
        else:
            config = parts[1] or None
    try:
        import datasets
    except ImportError:
        raise UserError(f"{text!r} needs the Hugging Face 'datasets' package, which is not "
                        "installed: pip install datasets (or download the set and give its "
                        ".json/.jsonl/.csv file)") from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; all are the user's to fix
        offline = any(w in f"{type(e).__name__} {e}".lower() for w in (
            "connect", "offline", "resolve", "network", "timed out", "unreachable"))
        hint = ("the Hugging Face hub is unreachable from here; download the set where it is "
                "reachable and give its file" if offline else
                "check the name, config and split on huggingface.co/datasets")
        raise UserError(f"{text!r}: datasets.load_dataset({name!r}, {config!r}, split={split!r}) "
                        f"failed: {type(e).__name__}: {str(e)[:200]}; {hint}") from None
    records: list[Mapping[str, Any]] = [dict(r) for r in ds]
    task = name.rsplit("/", 1)[-1] + (f"-{config}" if config and config not in ("main",
                                                                               "default") else "")
    return records, text, task


# ---------------------------------------------------------------------- columns and rows
def _columns(records: Sequence[Mapping[str, Any]], source: str, **given: str | None
             ) -> dict[str, str | None]:
    if not records:
        raise UserError(f"{source}: no questions in it; expected at least one row")
    keys = list(dict.fromkeys(k for r in records for k in r))
    usual = {"question": _QUESTION_COLS, "gold": _GOLD_COLS, "task": _TASK_COLS, "id": _ID_COLS,
             "choices": _CHOICE_COLS}
    out: dict[str, str | None] = {}
    for what, names in usual.items():
        col = given.get(what)
        if col is not None:
            if col not in keys:
                raise UserError(f"{source}: no column {col!r} for the {what} (given with "
                                f"{what}=/--{what}-col); expected one of {keys!r}")
            out[what] = col
            continue
        out[what] = next((k for k in names if k in keys), None)
    for what in ("question", "gold"):
        if out[what] is None:
            raise UserError(f"{source}: no {what} column among {keys!r}; expected one of "
                            f"{list(usual[what])!r}, or name it with --{what}-col")
    return out


def _item(rec: Mapping[str, Any], n: int, source: str, cols: Mapping[str, str | None],
          default_task: str) -> LabelledItem:
    where = f"{Path(source).name} row {n}"
    q = rec.get(cols["question"] or "")
    if isinstance(q, list) and q and isinstance(q[-1], Mapping):  # chat-style prompt
        q = q[-1].get("content")
    if not isinstance(q, str) or not q.strip():
        raise UserError(f"{where}: column {cols['question']!r}: expected a non-empty question "
                        f"(got {q!r:.80})")
    choices = _choices(rec.get(cols["choices"]) if cols["choices"] else None, where)
    if choices is None:
        parsed = parse_choices(q)
        choices = tuple(parsed) if parsed else None
    gold, grader = _gold(rec.get(cols["gold"] or ""), choices, where, str(cols["gold"]))
    task_value = rec.get(cols["task"]) if cols["task"] else None
    task = str(task_value).strip() if task_value not in (None, "") else default_task
    id_value = rec.get(cols["id"]) if cols["id"] else None
    item = LabelledItem(id="", question=q, gold=gold, task=task, choices=choices, grader=grader)
    ident = str(id_value).strip() if id_value not in (None, "") else _hash_id(item.prompt)
    return LabelledItem(id=ident, question=q, gold=gold, task=task, choices=choices,
                        grader=grader)


def _hash_id(prompt: str) -> str:
    return "q" + hashlib.sha1(prompt.strip().encode("utf-8")).hexdigest()[:12]


def _maybe_json(value: Any) -> Any:
    """A CSV cell holding a JSON list or object, parsed; anything else as it is."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _choices(value: Any, where: str) -> tuple[str, ...] | None:
    value = _maybe_json(value)
    if value in (None, "", [], {}):
        return None
    if isinstance(value, Mapping) and "text" in value:  # {"label": [...], "text": [...]} (ARC)
        value = value["text"]
    if isinstance(value, Sequence) and not isinstance(value, str):
        opts = tuple(str(c) for c in value)
        if 2 <= len(opts) <= len(_LETTERS):
            return opts
    raise UserError(f"{where}: choices: expected a list of 2 to {len(_LETTERS)} option texts "
                    f"(got {value!r:.80})")


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _gold(value: Any, choices: tuple[str, ...] | None, where: str, col: str
          ) -> tuple[tuple[str, ...], DefaultGrader]:
    value = _maybe_json(value)
    if isinstance(value, Mapping):
        for key in ("aliases", "text", "value", "answer"):
            if key in value:
                value = value[key]
                break
    if choices:
        return (_gold_letter(value, choices, where),), "letter"
    if isinstance(value, bool):
        return ("yes" if value else "no",), "em"
    if isinstance(value, (int, float)):
        return (_number_text(value),), "number"
    if isinstance(value, str):
        m = _GSM8K.search(value)
        if m:
            return (m.group(1).replace(",", "").strip(),), "number"
        if value.strip():
            return (value.strip(),), "em"
    if isinstance(value, Sequence) and not isinstance(value, str):
        aliases = tuple(str(a).strip() for a in value if str(a).strip())
        if aliases:
            return aliases, "em"
    raise UserError(f"{where}: column {col!r}: expected a gold answer (a string, a list of "
                    f"aliases, a number or a '#### <number>' solution; got {value!r:.80})")


def _gold_letter(value: Any, choices: tuple[str, ...], where: str) -> str:
    n = len(choices)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n:
        return _LETTERS[value]
    if isinstance(value, str):
        s = value.strip()
        if s.isdigit() and int(s) < n:
            return _LETTERS[int(s)]
        letter = extract_choice_letter(s, n, choices)
        if letter is not None:
            return letter
    raise UserError(f"{where}: gold {value!r:.60} is not one of the {n} options; expected a "
                    f"letter A-{_LETTERS[n - 1]}, a 0-based index or an option's text")


def iter_items(sets: Iterable[LabelledSet]) -> Iterable[LabelledItem]:
    """Every item of the sets, in order, each id once (the first set's wins)."""
    seen: set[str] = set()
    for s in sets:
        for it in s.items:
            if it.id not in seen:
                seen.add(it.id)
                yield it


def looks_like_outcomes(path: Path) -> bool:
    """Whether ``path`` is an outcome table (one ``orchestra record`` or ``orchestra data split``
    wrote) rather than a labelled set: a Parquet file, a JSONL file whose first line is the
    table's metadata or an outcome row, a CSV file with ``model`` and ``score`` columns."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return True
    try:
        with path.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return False
    if suffix == ".jsonl":
        try:
            obj = json.loads(first)
        except ValueError:
            return False
        return isinstance(obj, dict) and ("_table" in obj or {"model", "score"} <= obj.keys())
    if suffix == ".csv":
        return {"model", "score"} <= {c.strip() for c in first.split(",")}
    return False


def items_from_table(table: OutcomeTable) -> list[LabelledItem]:
    """The questions of a recorded outcome table as labelled items (same ids, prompts, tasks,
    options), with every gold alias the recording kept (``meta["gold_aliases"]``) and each
    task's grader (``meta["graders"]``); questions without a gold answer are left out.

    Raises:
        UserError: when no question of the table has a gold answer.
    """
    meta = table.meta or {}
    aliases: dict[str, list[str]] = dict(meta.get("gold_aliases") or {})
    graders: dict[str, str] = dict(meta.get("graders") or {})
    items = []
    for q in table.query_rows:
        if q.gold is None:
            continue
        choices = tuple(q.choices) if q.choices else None
        gold, default = _gold(aliases.get(q.query_id) or q.gold, choices,
                              f"question {q.query_id!r}", "gold")
        grader = graders.get(q.task)
        items.append(LabelledItem(id=q.query_id, question=q.query, gold=gold, task=q.task,
                                  choices=choices,
                                  grader=grader if grader in ("em", "number", "letter")
                                  else default))  # type: ignore[arg-type]
    if not items:
        raise UserError(f"the outcome table {meta.get('source') or ''!s} has no gold answers; "
                        "a live evaluation needs questions with gold answers (a labelled set, or "
                        "a table written by `orchestra record`)")
    return items


"""Loaders that turn public routing benchmarks into :class:`~orchestra.outcomes.OutcomeTable`.

- :func:`load_routerbench`: RouterBench's wide layout (one row per query, three columns per
  model), from a local folder of split CSVs, a single CSV / pickle / parquet file, or the
  Hugging Face hub (:func:`load_routerbench_hub`).
- :func:`load_llmrouter`: LLMRouter's ``outcomes_{split}.json`` + ``queries_{split}.jsonl`` +
  ``models.json``; costs are *estimated* (see :data:`LLMROUTER_OUTPUT_TOKENS`).
- :func:`load_outcomes`: a name (``routerbench``, ``routerbench:test``, ``llmrouter``,
  ``llmrouter:test``, ...) or any path (a file in the outcome format, a wide RouterBench file,
  or a folder of either benchmark).

Named data is looked for in ``$ORCHESTRA_DATA_DIR``, then ``$ORCHESTRA_SHARED_DATA`` (see
:func:`data_dirs`).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from orchestra.errors import UserError
from orchestra.outcomes.table import SUFFIXES, ModelInfo, OutcomeTable, QueryRow

__all__ = [
    "CHARS_PER_TOKEN",
    "KNOWN_NAMES",
    "LLMROUTER_DEFAULT_OUTPUT_TOKENS",
    "LLMROUTER_OUTPUT_TOKENS",
    "ROUTERBENCH_HUB_FILE",
    "ROUTERBENCH_HUB_REPO",
    "ROUTERBENCH_MODELS",
    "data_dirs",
    "extract_choice_letter",
    "find_data_dir",
    "load_llmrouter",
    "load_outcomes",
    "load_routerbench",
    "load_routerbench_hub",
    "parse_choices",
    "routerbench_from_frame",
]

#: Names :func:`load_outcomes` resolves. A bare name is its "train" split.
KNOWN_NAMES = (
    "routerbench",
    "routerbench:train",
    "routerbench:test",
    "routerbench:all",
    "llmrouter",
    "llmrouter:train",
    "llmrouter:test",
)

#: RouterBench's public home on the Hugging Face hub (a dataset repository).
ROUTERBENCH_HUB_REPO = "withmartian/routerbench"
#: The 0-shot file there: a pickled pandas DataFrame in the wide layout.
ROUTERBENCH_HUB_FILE = "routerbench_0shot.pkl"
#: Share of queries a hub split puts in "test" (hash of the sample id; see load_routerbench_hub).
HUB_TEST_FRACTION = 0.3

#: RouterBench's 11 models: (description, USD / 1M input tokens, USD / 1M output tokens, size).
#: List prices at recording time (late 2023). The input prices agree with the recorded costs:
#: on the one-token answers of ARC-Challenge every model's cost divided by its input price
#: gives the same prompt length.
ROUTERBENCH_MODELS: dict[str, tuple[str, float, float, str | None]] = {
    "gpt-4-1106-preview": ("OpenAI GPT-4 Turbo (1106 preview)", 10.0, 30.0, None),
    "gpt-3.5-turbo-1106": ("OpenAI GPT-3.5 Turbo (1106)", 1.0, 2.0, None),
    "claude-v2": ("Anthropic Claude 2", 8.0, 24.0, None),
    "claude-v1": ("Anthropic Claude 1", 8.0, 24.0, None),
    "claude-instant-v1": ("Anthropic Claude Instant 1", 0.8, 2.4, None),
    "meta/llama-2-70b-chat": ("Meta Llama 2 70B chat", 0.9, 0.9, "70B"),
    "meta/code-llama-instruct-34b-chat": ("Meta Code Llama 34B instruct", 0.776, 0.776, "34B"),
    "mistralai/mixtral-8x7b-chat": ("Mistral AI Mixtral 8x7B instruct", 0.6, 0.6, "8x7B"),
    "mistralai/mistral-7b-chat": ("Mistral AI Mistral 7B instruct", 0.2, 0.2, "7B"),
    "zero-one-ai/Yi-34B-Chat": ("01.AI Yi 34B chat", 0.8, 0.8, "34B"),
    "WizardLM/WizardLM-13B-V1.2": ("WizardLM 13B v1.2 (Llama 2 fine-tune)", 0.3, 0.3, "13B"),
}

#: Assumed output length (tokens) per LLMRouter metric, used to estimate cost. LLMRouter
#: records no responses and no lengths, so these are fixed, documented guesses of a typical
#: answer: a choice letter with a short justification (em_mc), a short factual answer
#: (f1_score), a chain of thought (GSM8K), a worked solution ending in \\boxed{} (MATH), a
#: function (code_eval), one or two sentences (commongen_coverage).
LLMROUTER_OUTPUT_TOKENS: dict[str, int] = {
    "em_mc": 16,
    "f1_score": 32,
    "GSM8K": 256,
    "MATH": 384,
    "code_eval": 256,
    "commongen_coverage": 64,
}
#: Output length assumed for a metric missing from :data:`LLMROUTER_OUTPUT_TOKENS`.
LLMROUTER_DEFAULT_OUTPUT_TOKENS = 128
#: Characters per token used to count input tokens from text (the usual rule of thumb for
#: English with BPE tokenizers; no tokenizer of the 9 open models is needed).
CHARS_PER_TOKEN = 4.0

_FIXED = ("sample_id", "prompt", "eval_name", "oracle_model_to_route_to")
_COST = "|total_cost"
_RESPONSE = "|model_response"
_LETTERS = "ABCDEFGHIJ"


# ---------------------------------------------------------------------------------- paths
def data_dirs() -> list[Path]:
    """Folders searched for named benchmark data, first match wins.

    ``$ORCHESTRA_DATA_DIR``, then ``$ORCHESTRA_SHARED_DATA`` (where the project's CI points at
    its shared recorded data). Only existing folders are listed; the library never guesses a
    folder from where it is installed.
    """
    dirs = [os.environ.get("ORCHESTRA_DATA_DIR", ""), os.environ.get("ORCHESTRA_SHARED_DATA", "")]
    out: list[Path] = []
    for d in (Path(x) for x in dirs if x):
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_data_dir(name: str) -> Path | None:
    """The first ``<data dir>/<name>`` folder that exists (e.g. ``routerbench``), or None."""
    for d in data_dirs():
        if (d / name).is_dir():
            return d / name
    return None


# ---------------------------------------------------------------------------------- helpers
def _is_missing(v: Any) -> bool:
    return (
        v is None
        or (isinstance(v, float) and math.isnan(v))
        or (isinstance(v, str) and not v.strip())
    )


def _join_turns(v: Any) -> str | None:
    """RouterBench stores prompts and responses as the repr of a list of turns; join them.

    ``ast.literal_eval`` only builds literals (it never runs code). Anything that is not a
    list of strings is kept as written.
    """
    if _is_missing(v):
        return None
    if isinstance(v, list | tuple):
        return "\n\n".join(str(t) for t in v)
    s = str(v)
    st = s.strip()
    if len(st) >= 2 and st[0] == "[" and st[-1] == "]":
        fast = _single_literal(st)
        if fast is not None:
            return fast
        try:
            val = ast.literal_eval(st)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return s
        if isinstance(val, list | tuple) and all(isinstance(t, str) for t in val):
            return "\n\n".join(val)
    return s


# A one-element list of a plain quoted string, the common case: decoded without building an
# AST (10x faster). Anything else (other escapes, several turns) goes to ast.literal_eval.
_ONE_SQ = re.compile(r"\[\s*'((?:[^'\\\n]++|\\.)*+)'\s*\]", re.DOTALL)
_ONE_DQ = re.compile(r'\[\s*"((?:[^"\\\n]++|\\.)*+)"\s*\]', re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _single_literal(st: str) -> str | None:
    pattern = _ONE_SQ if st[1:2] == "'" else _ONE_DQ if st[1:2] == '"' else None
    m = pattern.fullmatch(st) if pattern is not None else None
    if m is None:
        return None
    body = m.group(1)
    if "\\" not in body:
        return body
    if any(e not in _SIMPLE_ESCAPES for e in _ESCAPE.findall(body)):
        return None
    return _ESCAPE.sub(lambda x: _SIMPLE_ESCAPES[x.group(1)], body)


_CHOICE_LINE = re.compile(r"^\s*\(?([A-J])\)\s?(.*?)\s*$")


def parse_choices(prompt: str) -> list[str] | None:
    """The options of the last multiple-choice question in a prompt, or None.

    Looks at the prompt's last paragraph (few-shot examples come before it) for lines
    ``A) text``, ``B) text``, ... in order; two or more make a multiple-choice question.

    Example:
        >>> parse_choices("Q?\\nA) Kyle\\nB) Logan\\nAnswer:")
        ['Kyle', 'Logan']
    """
    last = prompt.rstrip().rsplit("\n\n", 1)[-1]
    choices: list[str] = []
    for line in last.splitlines():
        m = _CHOICE_LINE.match(line)
        if m and _LETTERS.index(m.group(1)) == len(choices):
            choices.append(m.group(2))
    return choices if len(choices) >= 2 else None


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def extract_choice_letter(
    response: str | None,
    n_choices: int = 4,
    choices: Sequence[str] | None = None,
    *,
    match_text: bool = True,
) -> str | None:
    """The choice letter a free-text answer picks, or None when it cannot tell.

    Rules, first match wins (worked out on RouterBench's recorded answers):

    1. a bare label: ``B``, ``(B)``, ``B)``, ``B.``, ``b``;
    2. a bare number 1..n: ``2`` → ``B``;
    3. ``Answer: B``, ``The answer is (B)``;
    4. the text of one choice (``Sarah`` when ``B) Sarah``), ignoring case and punctuation;
    5. a label that starts the answer: ``B) Sarah``, ``D (``, ``A chart``.

    Args:
        response: the answer text.
        n_choices: how many options the question had (letters beyond are ignored).
        choices: the option texts, for rule 4.
        match_text: apply rule 4. RouterBench's grader wants a label and marks an answer
            that only repeats the option text wrong, so gold derivation skips rule 4 when it
            reads the answers marked wrong.
    """
    if not response:
        return None
    letters = _LETTERS[: max(1, min(n_choices, len(_LETTERS)))]
    s = response.strip().strip("*_`'\" ").strip()
    if not s:
        return None
    m = re.fullmatch(r"\(?([A-Ja-j])\)?[.):]?", s)
    if m:
        x = m.group(1).upper()
        return x if x in letters else None
    m = re.fullmatch(r"\(?([1-9])\)?[.):]?", s)
    if m:
        k = int(m.group(1))
        return letters[k - 1] if k <= len(letters) else None
    m = re.search(r"(?i:\banswer\b(?:\s+is)?)\s*:?\s*\(?([A-J])\b", s)
    if m and m.group(1) in letters:
        return m.group(1)
    if choices and match_text:
        ns = _norm(s)
        hits = [i for i, c in enumerate(choices) if _norm(c) and _norm(c) == ns]
        if len(hits) == 1 and hits[0] < len(letters):
            return letters[hits[0]]
    m = re.match(r"\(?([A-J])(?:[).:\]]|\s)", s)
    if m and m.group(1) in letters:
        return m.group(1)
    return None


def _derive_gold(
    query_rows: list[QueryRow],
    score: np.ndarray,
    responses: np.ndarray,
    models: Sequence[str],
    recorded: np.ndarray | None = None,
) -> tuple[list[QueryRow], dict[str, Any]]:
    """Gold letters for multiple-choice queries from the recorded correctness.

    Votes: the letter extracted from the answer of every model marked correct (score 1).
    One letter → gold ("vote"). Different letters → no gold (a conflict, listed). No correct
    model: if the letters of the models marked wrong (read without rule 4 of
    :func:`extract_choice_letter`) cover all options but one, that one is gold
    ("elimination"). The check ``wrong_answers_with_gold_letter`` counts answers marked
    wrong whose letter equals the voted gold: 0 means the recorded grading and this extraction
    agree. Only recorded scores vote: ``recorded`` (same shape as ``score``) masks out cells
    whose score was filled in for an empty cell.
    """
    if recorded is None:
        recorded = ~np.isnan(score)
    out: list[QueryRow] = []
    stats: Counter[str] = Counter()
    conflicts: list[dict[str, Any]] = []
    per_task: dict[str, Counter[str]] = {}
    wrong_with_gold = 0
    for qi, q in enumerate(query_rows):
        if not q.choices or q.gold is not None:
            out.append(q)
            continue
        n = len(q.choices)
        tstats = per_task.setdefault(q.task, Counter())
        tstats["queries"] += 1
        right: Counter[str] = Counter()
        wrong: set[str] = set()
        letters_of: list[str | None] = []
        for mi in range(len(models)):
            sc = score[qi, mi]
            if not recorded[qi, mi]:
                letters_of.append(None)
                continue
            correct = sc >= 1.0
            letter = extract_choice_letter(responses[qi, mi], n, q.choices, match_text=correct)
            letters_of.append(letter)
            if letter is None:
                continue
            if correct:
                right[letter] += 1
            elif sc <= 0.0:
                wrong.add(letter)
        gold: str | None = None
        if len(right) == 1:
            gold = next(iter(right))
            tstats["vote"] += 1
            wrong_with_gold += sum(
                1 for mi, letter in enumerate(letters_of) if letter == gold and score[qi, mi] <= 0.0
            )
        elif len(right) > 1:
            tstats["conflict"] += 1
            conflicts.append({"query_id": q.query_id, "votes": dict(right)})
        else:
            left = [x for x in _LETTERS[:n] if x not in wrong]
            if len(left) == 1:
                gold = left[0]
                tstats["elimination"] += 1
            else:
                tstats["none"] += 1
        stats["with_gold"] += gold is not None
        out.append(q.model_copy(update={"gold": gold}) if gold is not None else q)
    report = {
        "method": "letter of the models marked correct; else elimination of wrong letters",
        "multiple_choice_queries": sum(t["queries"] for t in per_task.values()),
        "with_gold": stats["with_gold"],
        "by_vote": sum(t["vote"] for t in per_task.values()),
        "by_elimination": sum(t["elimination"] for t in per_task.values()),
        "without_gold": sum(t["none"] for t in per_task.values()),
        "conflicts": conflicts,
        "wrong_answers_with_gold_letter": wrong_with_gold,
        "per_task": {t: dict(c) for t, c in sorted(per_task.items())},
    }
    return out, report


def _routerbench_models_info(models: Sequence[str]) -> dict[str, ModelInfo]:
    info = {}
    for m in models:
        if m in ROUTERBENCH_MODELS:
            desc, pin, pout, size = ROUTERBENCH_MODELS[m]
            info[m] = ModelInfo(
                name=m, description=desc, input_price=pin, output_price=pout, size=size
            )
    return info


def _hash_split(sample_id: str) -> str:
    h = int(hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:8], 16)
    return "test" if h / 0xFFFFFFFF < HUB_TEST_FRACTION else "train"


def _routerbench_table(
    columns: Mapping[str, Sequence[Any]],
    *,
    source: str,
    split_labels: Sequence[str | None],
    missing_score: float | None,
    derive_gold: bool,
    meta: dict[str, Any],
) -> OutcomeTable:
    """Parse the wide layout held as ``{column: values}`` (one value per query)."""
    missing_cols = [c for c in ("sample_id", "prompt", "eval_name") if c not in columns]
    models = [c[: -len(_COST)] for c in columns if c.endswith(_COST)]
    if missing_cols or not models:
        raise UserError(
            f"{source}: expected RouterBench's wide layout — columns sample_id, prompt, eval_name "
            f"and, per model M, 'M', 'M|model_response', 'M|total_cost' (missing "
            f"{missing_cols or ['any M|total_cost column']!r})"
        )
    absent = [m for m in models if m not in columns]
    if absent:
        raise UserError(
            f"{source}: model column(s) {absent!r} missing; expected a score column beside "
            "every 'M|total_cost' column"
        )
    n = len(columns["sample_id"])
    nm = len(models)
    score = np.full((n, nm), np.nan)
    cost = np.full((n, nm), np.nan)
    responses = np.full((n, nm), None, dtype=object)
    recorded = np.zeros((n, nm), dtype=bool)
    filled = 0
    no_cost = 0
    for mi, m in enumerate(models):
        scol, ccol = columns[m], columns[m + _COST]
        rcol = columns.get(m + _RESPONSE)
        for i in range(n):
            c = ccol[i]
            s = scol[i]
            if _is_missing(c):
                no_cost += 1
                continue
            try:
                cv = float(c)
            except (TypeError, ValueError):
                raise UserError(
                    f"{source} row {i + 1}: field {m + _COST!r}: expected a number >= 0 (USD) "
                    f"(got {c!r})"
                ) from None
            if _is_missing(s):
                if missing_score is None:
                    continue
                sv = missing_score
                filled += 1
            else:
                try:
                    sv = float(s)
                    recorded[i, mi] = True
                except (TypeError, ValueError):
                    raise UserError(
                        f"{source} row {i + 1}: field {m!r}: expected a number in [0, 1] (got {s!r})"
                    ) from None
            if not (0.0 <= sv <= 1.0) or not cv >= 0.0 or math.isinf(cv):
                bad = (m, s) if not 0.0 <= sv <= 1.0 else (m + _COST, c)
                what = "a number in [0, 1]" if bad[0] == m else "a number >= 0 (USD)"
                raise UserError(
                    f"{source} row {i + 1}: field {bad[0]!r}: expected {what} (got {bad[1]!r})"
                )
            score[i, mi] = sv
            cost[i, mi] = cv
            if rcol is not None:
                responses[i, mi] = _join_turns(rcol[i])
    # Query ids: the sample id; a repeated id gets "#2", "#3", ... in file order.
    seen: Counter[str] = Counter()
    dup_ids: list[str] = []
    query_rows: list[QueryRow] = []
    for i in range(n):
        sid = str(columns["sample_id"][i])
        seen[sid] += 1
        qid = sid if seen[sid] == 1 else f"{sid}#{seen[sid]}"
        if seen[sid] == 2:
            dup_ids.append(sid)
        text = _join_turns(columns["prompt"][i]) or ""
        task = str(columns["eval_name"][i])
        query_rows.append(
            QueryRow(
                query_id=qid,
                query=text,
                task=task,
                choices=parse_choices(text),
                split=split_labels[i],
            )
        )
    meta = dict(meta)
    meta["missing_scores_filled"] = filled
    meta["missing_score_value"] = missing_score
    meta["cells_without_cost"] = no_cost
    if dup_ids:
        meta["repeated_sample_ids"] = dup_ids
    if derive_gold:
        query_rows, meta["gold"] = _derive_gold(query_rows, score, responses, models, recorded)
    return OutcomeTable.from_columns(
        query_rows=query_rows,
        models=models,
        scores=score,
        costs=cost,
        responses=responses,
        models_info=_routerbench_models_info(models),
        meta=meta,
        source=source,
    )


def _read_wide_csv(path: Path) -> dict[str, list[str]]:
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise UserError(f"{path.name}: the file is empty; expected a header row") from None
        rows = list(reader)
    cols: dict[str, list[str]] = {}
    for j, name in enumerate(header):
        if name:  # the unnamed leading column is pandas' old index
            cols[name] = [r[j] if j < len(r) else "" for r in rows]
    return cols


def _frame_columns(df: Any) -> dict[str, list[Any]]:
    return {str(c): df[c].tolist() for c in df.columns}


def _read_wide_file(path: Path) -> dict[str, list[Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_wide_csv(path)
    pd = _pandas()
    if suffix == ".pkl":
        # A pickle can run code when loaded: only read files you trust (the hub's own file).
        df = pd.read_pickle(path)
    elif suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        raise UserError(
            f"cannot read {str(path)!r} as RouterBench: expected a .csv, .pkl or .parquet file "
            f"(got {suffix!r})"
        )
    if not hasattr(df, "columns"):
        raise UserError(f"{path.name}: expected a pandas DataFrame (got {type(df).__name__})")
    return _frame_columns(df)


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise UserError(
            "reading .pkl / .parquet RouterBench files needs pandas, which is not installed; "
            "expected it from the 'learn' extra: pip install 'orchestra[learn]'"
        ) from None
    return pd


def _split_files(folder: Path, split: str) -> list[Path]:
    return sorted(folder.glob(f"*_{split}.csv"))


SplitName = Literal["train", "test", "all"]


def _check_split(split: str | None, allowed: Sequence[str], what: str) -> Any:
    """``split`` when it is one of ``allowed`` (typed Any: callers narrow it to their Literal)."""
    if split not in allowed:
        raise UserError(f"split={split!r} for {what}: expected one of {list(allowed)!r}")
    return split


def load_routerbench(
    path_or_dir: str | Path | None = None,
    *,
    split: SplitName = "train",
    missing_score: float | None = 0.0,
    derive_gold: bool = True,
) -> OutcomeTable:
    """Load RouterBench (11 LLMs, real recorded costs) as an outcome table.

    The wide layout, one row per query: ``sample_id``, ``prompt`` (the repr of a list of
    turns, parsed with ``ast.literal_eval``, which never runs code), ``eval_name`` (the task),
    then per model M: ``M`` (score; 0/1 on these tasks), ``M|model_response`` (repr of a list
    of turns) and ``M|total_cost`` (USD), and ``oracle_model_to_route_to`` (ignored: the oracle
    is recomputed). Query id = ``sample_id``; a repeated id (RouterBench records a few ARC
    questions twice, splitting the models between the two rows) gets ``#2``, ``#3``, ... and is
    listed in ``table.meta["repeated_sample_ids"]``.

    Multiple-choice queries (a last paragraph with ``A) ... B) ...`` lines: ARC-Challenge,
    Winogrande) get their options as ``choices`` and, with ``derive_gold``, a gold letter
    derived from the recorded correctness (see ``table.meta["gold"]`` for the counts).

    Args:
        path_or_dir: a folder with ``*_train.csv`` / ``*_test.csv`` files (the RouterDC
            split, as in the shared data) or with the hub's ``routerbench_0shot.pkl``; or one
            wide ``.csv`` / ``.pkl`` / ``.parquet`` file. None: the ``routerbench`` folder of
            the data dirs (:func:`data_dirs`), else the Hugging Face hub.
        split: which split of a folder of split files: "train", "test" or "all" (both,
            with ``QueryRow.split`` set). Ignored for a single file of split files' layout;
            for the hub file see :func:`load_routerbench_hub`.
        missing_score: the score of an empty score cell (a few exist; RouterBench's own
            reference numbers count them as 0). None drops those pairs (NaN in the matrices).
        derive_gold: derive gold letters for multiple-choice queries.

    Raises:
        UserError: no such path, a file not in the wide layout, a bad cell (named by file,
            row and column), or the hub is unreachable.
    """
    _check_split(split, ("train", "test", "all"), "RouterBench")
    if path_or_dir is None:
        folder = find_data_dir("routerbench")
        if folder is None:
            return load_routerbench_hub(
                split=split, missing_score=missing_score, derive_gold=derive_gold
            )
        path_or_dir = folder
    p = Path(path_or_dir)
    meta: dict[str, Any] = {"source": f"routerbench ({p})", "cost_note": "recorded per query (USD)"}
    if p.is_dir():
        if (p / ROUTERBENCH_HUB_FILE).is_file() and not _split_files(p, "train"):
            return _routerbench_hub_file(
                p / ROUTERBENCH_HUB_FILE,
                split=split,
                missing_score=missing_score,
                derive_gold=derive_gold,
            )
        splits = ["train", "test"] if split == "all" else [split]
        files = [(s, f) for s in splits for f in _split_files(p, s)]
        if not files:
            raise UserError(
                f"no RouterBench files for split {split!r} in {str(p)!r}: expected files named "
                f"'*_{splits[0]}.csv' (or {ROUTERBENCH_HUB_FILE!r})"
            )
        merged: dict[str, list[Any]] = {}
        labels: list[str | None] = []
        for s, f in files:
            cols = _read_wide_csv(f)
            n = len(cols.get("sample_id", []))
            if merged and set(cols) != set(merged):
                raise UserError(
                    f"{f.name}: columns differ from {files[0][1].name}; expected every split file "
                    "to have the same models"
                )
            for k, v in cols.items():
                merged.setdefault(k, []).extend(v)
            labels += [s] * n
        meta["files"] = [f.name for _, f in files]
        meta["split"] = split
        return _routerbench_table(
            merged,
            source=p.name if len(files) > 1 else files[0][1].name,
            split_labels=labels,
            missing_score=missing_score,
            derive_gold=derive_gold,
            meta=meta,
        )
    if not p.is_file():
        raise UserError(
            f"RouterBench path {str(p)!r} does not exist; expected a folder of '*_test.csv' "
            "files, a wide .csv/.pkl/.parquet file, or None for the shared data or the hub"
        )
    cols = _read_wide_file(p)
    n = len(cols.get("sample_id", []))
    return _routerbench_table(
        cols,
        source=p.name,
        split_labels=[None] * n,
        missing_score=missing_score,
        derive_gold=derive_gold,
        meta=meta,
    )


def routerbench_from_frame(
    df: Any,
    *,
    split: Literal["train", "test", "all"] | None = None,
    missing_score: float | None = 0.0,
    derive_gold: bool = True,
    source: str = ROUTERBENCH_HUB_FILE,
) -> OutcomeTable:
    """Parse a pandas DataFrame in RouterBench's wide layout (the hub file's content).

    The hub file has no split; ``split="train"``/``"test"`` keeps the queries whose
    ``sha256(sample_id)`` falls in the train (70%) or test (30%) share — a reproducible split
    of orchestra's, *not* the RouterDC split of the shared CSVs. None or "all" keeps every row.
    """
    cols = _frame_columns(df)
    ids = [str(x) for x in cols.get("sample_id", [])]
    meta: dict[str, Any] = {
        "source": f"routerbench ({source})",
        "cost_note": "recorded per query (USD)",
    }
    if split in ("train", "test"):
        keep = [i for i, s in enumerate(ids) if _hash_split(s) == split]
        cols = {k: [v[i] for i in keep] for k, v in cols.items()}
        labels: list[str | None] = [split] * len(keep)
        meta["split"] = split
        meta["split_note"] = (
            f"hash split of the hub file: sha256(sample_id) puts {HUB_TEST_FRACTION:.0%} of "
            "queries in test; not the RouterDC split"
        )
    else:
        _check_split(split or "all", ("train", "test", "all"), "RouterBench")
        labels = [_hash_split(s) for s in ids]
        meta["split"] = "all"
    return _routerbench_table(
        cols,
        source=source,
        split_labels=labels,
        missing_score=missing_score,
        derive_gold=derive_gold,
        meta=meta,
    )


def _routerbench_hub_file(
    path: Path,
    *,
    split: Literal["train", "test", "all"] | None,
    missing_score: float | None,
    derive_gold: bool,
) -> OutcomeTable:
    pd = _pandas()
    df = pd.read_pickle(path)  # the hub's own file; a pickle is only safe from a trusted source
    return routerbench_from_frame(
        df,
        split=split,
        missing_score=missing_score,
        derive_gold=derive_gold,
        source=path.name,
    )


def load_routerbench_hub(
    *,
    split: Literal["train", "test", "all"] | None = None,
    filename: str = ROUTERBENCH_HUB_FILE,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    missing_score: float | None = 0.0,
    derive_gold: bool = True,
) -> OutcomeTable:
    """Download RouterBench from the Hugging Face hub and load it.

    The dataset ``withmartian/routerbench`` holds ``routerbench_0shot.pkl`` (and
    ``routerbench_5shot.pkl``): a pickled pandas DataFrame with the same wide columns as the
    shared CSVs, over all RouterBench tasks (~36k prompts, 11 models). The file is fetched with
    ``huggingface_hub.hf_hub_download`` (cached) and parsed by :func:`routerbench_from_frame`.

    Not exercised by the test suite (no network there): the tests run the same parser on a
    small DataFrame of this layout that they write themselves.

    Args:
        split: None or "all" for every row, or "train"/"test" for orchestra's hash split
            (see :func:`routerbench_from_frame`).
        filename: which file of the dataset.
        revision: a commit of the dataset repository, to pin the data.
        cache_dir: where to cache the download (the hub's default cache otherwise).
        missing_score: score of empty score cells (None drops them).
        derive_gold: derive gold letters for multiple-choice queries.

    Raises:
        UserError: huggingface_hub or pandas is missing, or the download fails (offline, no
            such file or revision).
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise UserError(
            "loading RouterBench from the Hugging Face hub needs huggingface_hub, which is not "
            "installed; expected it installed (pip install huggingface_hub), or pass a local "
            "folder/file to load_routerbench"
        ) from None
    try:
        local = hf_hub_download(
            repo_id=ROUTERBENCH_HUB_REPO,
            filename=filename,
            repo_type="dataset",
            revision=revision,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
        )
    except Exception as e:  # noqa: BLE001 — offline, missing file, auth: "cannot get the data"
        raise UserError(
            f"could not download {filename!r} from the Hugging Face dataset "
            f"{ROUTERBENCH_HUB_REPO!r} ({type(e).__name__}: {e}); expected network access to "
            "huggingface.co — or put the RouterBench files in a folder and pass it (or set "
            "ORCHESTRA_DATA_DIR to a folder holding routerbench/)"
        ) from None
    return _routerbench_hub_file(
        Path(local), split=split, missing_score=missing_score, derive_gold=derive_gold
    )


# ---------------------------------------------------------------------------------- LLMRouter
def _query_id(text: str) -> str:
    return "llmrouter-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _parse_llmrouter_choices(v: Any) -> list[str] | None:
    """LLMRouter choices: a list repr, a dict repr with 'text' (and labels), or None."""
    if _is_missing(v):
        return None
    val: Any = v
    if isinstance(v, str):
        try:
            val = ast.literal_eval(v)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return [v]
    if isinstance(val, dict) and isinstance(val.get("text"), list):
        return [str(t) for t in val["text"]]
    if isinstance(val, list | tuple):
        return [str(t) for t in val]
    return [str(val)]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(
            f"LLMRouter file {str(path)!r} does not exist; expected it in {str(path.parent)!r}"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path.name}: expected JSON ({e.msg} at line {e.lineno})") from None


def load_llmrouter(
    path: str | Path | None = None,
    *,
    split: Literal["train", "test"] = "train",
    drop_overlap: bool | None = None,
    output_tokens: Mapping[str, int] | None = None,
    chars_per_token: float = CHARS_PER_TOKEN,
) -> OutcomeTable:
    """Load LLMRouter's outcomes (9 open models, 14 tasks); costs are **estimated**.

    Files in ``path``: ``outcomes_{split}.json`` (a list of ``{question, scores: {model:
    0..1}, cluster_id}``), ``queries_{split}.jsonl`` (``{task_name, query, ground_truth,
    metric, choices, task_id}``, joined on the text; when a text is listed twice the first
    entry wins) and ``models.json`` (per model ``feature``, ``size``, ``input_price``,
    ``output_price`` in USD per 1M tokens; the numeric fields are used — the prose sometimes
    quotes other prices).

    No per-query cost, response or length is recorded, so the cost of each pair is estimated::

        input_tokens  = ceil(len(query) / chars_per_token)
        output_tokens = output_tokens[metric]            (LLMROUTER_OUTPUT_TOKENS)
        cost_usd      = (input_tokens * input_price + output_tokens * output_price) / 1e6

    Every row and the table carry ``cost_estimated=True``, rows hold the token counts used,
    and ``table.meta["cost_note"]`` says so for reports.

    Query id: ``llmrouter-`` + the first 12 hex digits of the SHA-1 of the text (the same
    question has the same id in both splits). Gold: ``ground_truth``; choices: the option
    texts.

    Args:
        path: the folder; None: the ``llmrouter`` folder of the data dirs (:func:`data_dirs`).
        split: "train" or "test".
        drop_overlap: drop the questions that also appear in the train split (119 of the 500
            test questions). Default: True for "test", False for "train".
        output_tokens: override the assumed output length per metric.
        chars_per_token: characters per input token.

    Raises:
        UserError: no such folder or file, a malformed record, a question with no query
            entry, a score outside [0, 1], a model without prices.
    """
    _check_split(split, ("train", "test"), "LLMRouter")
    if path is None:
        folder = find_data_dir("llmrouter")
        if folder is None:
            raise UserError(
                "LLMRouter data not found: expected a folder 'llmrouter/' in one of "
                f"{[str(d) for d in data_dirs()] or '(no data dir exists)'}; set ORCHESTRA_DATA_DIR "
                "to the folder that holds it, or pass the folder (files from "
                "github.com/ulab-uiuc/LLMRouter: outcomes_*.json, queries_*.jsonl, models.json)"
            )
        path = folder
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"LLMRouter folder {str(folder)!r} does not exist; expected a folder")
    if chars_per_token <= 0:
        raise UserError(f"chars_per_token={chars_per_token!r}: expected a number > 0 (e.g. 4.0)")
    out_tokens = {**LLMROUTER_OUTPUT_TOKENS, **dict(output_tokens or {})}
    drop = (split == "test") if drop_overlap is None else drop_overlap

    outcomes = _read_json(folder / f"outcomes_{split}.json")
    if not isinstance(outcomes, list):
        raise UserError(
            f"outcomes_{split}.json: expected a JSON list (got {type(outcomes).__name__})"
        )
    qfile = folder / f"queries_{split}.jsonl"
    if not qfile.is_file():
        raise UserError(
            f"LLMRouter file {str(qfile)!r} does not exist; expected it beside outcomes"
        )
    by_text: dict[str, dict[str, Any]] = {}
    repeated_texts = 0
    with qfile.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(
                    f"{qfile.name} row {lineno}: expected a JSON object ({e.msg})"
                ) from None
            if not isinstance(rec, dict) or not isinstance(rec.get("query"), str):
                raise UserError(
                    f"{qfile.name} row {lineno}: field 'query': expected a string (got {rec!r:.80})"
                )
            if rec["query"] in by_text:
                repeated_texts += 1
                continue
            by_text[rec["query"]] = rec
    raw_models = _read_json(folder / "models.json")
    if not isinstance(raw_models, dict):
        raise UserError(
            f"models.json: expected a JSON object keyed by model name (got {type(raw_models).__name__})"
        )

    train_texts: set[str] = set()
    if drop and split == "test":
        train = _read_json(folder / "outcomes_train.json")
        train_texts = {str(r.get("question")) for r in train if isinstance(r, dict)}

    models: list[str] = []
    kept: list[dict[str, Any]] = []
    dropped = 0
    for i, rec in enumerate(outcomes, 1):
        if not isinstance(rec, dict) or not isinstance(rec.get("question"), str):
            raise UserError(
                f"outcomes_{split}.json row {i}: field 'question': expected a string (got {rec!r:.80})"
            )
        scores = rec.get("scores")
        if not isinstance(scores, dict):
            raise UserError(
                f"outcomes_{split}.json row {i}: field 'scores': expected an object model → score (got {scores!r:.80})"
            )
        if rec["question"] in train_texts:
            dropped += 1
            continue
        if rec["question"] not in by_text:
            raise UserError(
                f"outcomes_{split}.json row {i}: question {rec['question'][:60]!r} has no entry in "
                f"{qfile.name}; expected every question listed there (joined on the text)"
            )
        for m in scores:
            if m not in models:
                models.append(m)
        kept.append(rec)
    missing_price = [m for m in models if m not in raw_models]
    if missing_price:
        raise UserError(
            f"models.json: no entry for model(s) {missing_price!r}; expected input_price and "
            "output_price for every model scored in the outcomes"
        )
    info: dict[str, ModelInfo] = {}
    for m in models:
        r = raw_models[m]
        try:
            info[m] = ModelInfo(
                name=m,
                description=str(r.get("feature", "")),
                input_price=float(r["input_price"]),
                output_price=float(r["output_price"]),
                size=None if r.get("size") is None else str(r["size"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"models.json: model {m!r}: expected numeric input_price and output_price "
                f"(USD per 1M tokens) ({type(e).__name__}: {e})"
            ) from None
    nq, nm = len(kept), len(models)
    score = np.full((nq, nm), np.nan)
    in_tok = np.zeros((nq, nm))
    out_tok = np.zeros((nq, nm))
    query_rows: list[QueryRow] = []
    metrics: Counter[str] = Counter()
    mindex = {m: j for j, m in enumerate(models)}
    for qi, rec in enumerate(kept):
        q = by_text[rec["question"]]
        metric = str(q.get("metric") or "")
        metrics[metric] += 1
        n_in = math.ceil(len(rec["question"]) / chars_per_token)
        n_out = out_tokens.get(metric, LLMROUTER_DEFAULT_OUTPUT_TOKENS)
        in_tok[qi, :] = n_in
        out_tok[qi, :] = n_out
        for m, s in rec["scores"].items():
            try:
                score[qi, mindex[m]] = float(s)
            except (TypeError, ValueError):
                raise UserError(
                    f"outcomes_{split}.json question {qi + 1}: field 'scores.{m}': expected a "
                    f"number in [0, 1] (got {s!r})"
                ) from None
        gt = q.get("ground_truth")
        query_rows.append(
            QueryRow(
                query_id=_query_id(rec["question"]),
                query=rec["question"],
                task=str(q.get("task_name") or "unknown"),
                gold=None if gt is None else str(gt),
                choices=_parse_llmrouter_choices(q.get("choices")),
                split=split,
            )
        )
    pin = np.array([info[m].input_price or 0.0 for m in models])
    pout = np.array([info[m].output_price or 0.0 for m in models])
    cost = (in_tok * pin + out_tok * pout) / 1e6
    cost[np.isnan(score)] = np.nan
    in_tok[np.isnan(score)] = -1
    out_tok[np.isnan(score)] = -1
    meta = {
        "source": f"llmrouter ({folder})",
        "split": split,
        "cost_note": (
            f"estimated, not recorded: ceil(len(query)/{chars_per_token:g}) input tokens × input "
            "price + an assumed output length per metric × output price"
        ),
        "output_tokens_assumed": {
            m: out_tokens.get(m, LLMROUTER_DEFAULT_OUTPUT_TOKENS) for m in sorted(metrics)
        },
        "dropped_overlap_with_train": dropped,
        "repeated_query_texts": repeated_texts,
    }
    return OutcomeTable.from_columns(
        query_rows=query_rows,
        models=models,
        scores=score,
        costs=cost,
        input_tokens=in_tok,
        output_tokens=out_tok,
        cost_estimated=True,
        models_info=info,
        meta=meta,
        source=f"outcomes_{split}.json",
    )


# ---------------------------------------------------------------------------------- by name
_NAME = re.compile(r"^(routerbench|llmrouter)(?::([A-Za-z]+))?$")


def _is_wide_csv(path: Path) -> bool:
    with path.open(encoding="utf-8", newline="") as f:
        header = f.readline()
    return "sample_id" in header and _COST in header


def load_outcomes(name_or_path: str | Path, *, split: str | None = None) -> OutcomeTable:
    """Load an outcome table by name or from a path.

    Names (:data:`KNOWN_NAMES`): ``routerbench[:train|test|all]`` — the ``routerbench``
    folder of the data dirs, else the Hugging Face hub; ``llmrouter[:train|test]`` — the
    ``llmrouter`` folder of the data dirs. A bare name is its train split.

    Paths: a ``.jsonl`` / ``.csv`` / ``.parquet`` file in the outcome format
    (:meth:`OutcomeTable.read`); a wide RouterBench ``.csv`` / ``.pkl``; a folder holding
    LLMRouter's files or RouterBench's split CSVs.

    Args:
        name_or_path: a known name or a path.
        split: the split, for names without one and for folders; for an outcome file, keeps
            the queries of that split.

    Raises:
        UserError: an unknown name (the known ones are listed), a path that does not exist,
            or a split that the source does not have.
    """
    text = str(name_or_path)
    m = _NAME.match(text) if not isinstance(name_or_path, Path) else None
    if m:
        kind, named_split = m.group(1), m.group(2)
        if named_split and split and named_split != split:
            raise UserError(
                f"{text!r} names split {named_split!r} but split={split!r} was given; expected "
                "one of them, or both equal"
            )
        s = named_split or split or "train"
        if kind == "routerbench":
            return load_routerbench(None, split=_check_split(s, ("train", "test", "all"), text))
        return load_llmrouter(None, split=_check_split(s, ("train", "test"), text))
    p = Path(name_or_path)
    if p.is_dir():
        if list(p.glob("outcomes_*.json")):
            return load_llmrouter(
                p, split=_check_split(split or "train", ("train", "test"), str(p))
            )
        if (
            _split_files(p, "train")
            or _split_files(p, "test")
            or (p / ROUTERBENCH_HUB_FILE).is_file()
        ):
            s = _check_split(split or "train", ("train", "test", "all"), str(p))
            return load_routerbench(p, split=s)
        raise UserError(
            f"folder {text!r} holds no known benchmark files; expected LLMRouter's "
            "outcomes_{train,test}.json or RouterBench's '*_{train,test}.csv'"
        )
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".pkl" or (suffix == ".csv" and _is_wide_csv(p)):
            table = load_routerbench(p)
        elif suffix in SUFFIXES:
            table = OutcomeTable.read(p)
        else:
            raise UserError(
                f"cannot load {text!r}: expected a suffix among {[*SUFFIXES, '.pkl']!r} (got {suffix!r})"
            )
        if split is not None:
            table = table.filter(splits=[split])
        return table
    looks_like_path = p.suffix != "" or os.sep in text or "/" in text
    if looks_like_path:
        raise UserError(
            f"outcome file {text!r} does not exist; expected an existing file or folder"
        )
    raise UserError(
        f"unknown outcome table {text!r}: expected one of {list(KNOWN_NAMES)!r} or a path to a "
        f"{'/'.join(SUFFIXES)} file or a benchmark folder"
    )

"""Loader for LLMRouter's recorded outcomes (9 open models, 14 tasks); costs are estimated.

Files: ``outcomes_{split}.json``, ``queries_{split}.jsonl`` and ``models.json`` (see
:func:`load_llmrouter`); the folder is found by :func:`~orchestra.outcomes.data_dirs` when
none is given.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from orchestra.errors import UserError
from orchestra.outcomes.cells import _is_missing
from orchestra.outcomes.datadirs import _check_split, data_dirs, find_data_dir
from orchestra.outcomes.rows import ModelInfo, QueryRow
from orchestra.outcomes.table import OutcomeTable

__all__ = [
    "CHARS_PER_TOKEN",
    "LLMROUTER_DEFAULT_OUTPUT_TOKENS",
    "LLMROUTER_OUTPUT_TOKENS",
    "load_llmrouter",
]


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

"""RouterBench's wide layout (one row per query, three columns per model) as an outcome table.

Columns: ``sample_id``, ``prompt`` (the repr of a list of turns), ``eval_name`` (the task),
then per model M: ``M`` (score), ``M|model_response`` (repr of a list of turns) and
``M|total_cost`` (USD). :func:`_routerbench_table` parses the columns however they were read
(a CSV, a pandas frame); the readers here get them from a file.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestra.errors import UserError
from orchestra.outcomes.cells import _is_missing, _join_turns
from orchestra.outcomes.choices import parse_choices
from orchestra.outcomes.gold import _derive_gold
from orchestra.outcomes.rows import ModelInfo, QueryRow
from orchestra.outcomes.table import OutcomeTable

__all__ = ["ROUTERBENCH_MODELS"]


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

_COST = "|total_cost"

_RESPONSE = "|model_response"


def _routerbench_models_info(models: Sequence[str]) -> dict[str, ModelInfo]:
    info = {}
    for m in models:
        if m in ROUTERBENCH_MODELS:
            desc, pin, pout, size = ROUTERBENCH_MODELS[m]
            info[m] = ModelInfo(
                name=m, description=desc, input_price=pin, output_price=pout, size=size
            )
    return info


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

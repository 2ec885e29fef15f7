"""Pools whose models replay an outcome table (:func:`pool_from_outcomes`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from orchestra.backends.replay.tables import (
    _data,
    register_replay_table,
    replay_model_id,
    replay_tables,
)
from orchestra.errors import UserError

if TYPE_CHECKING:
    from orchestra.outcomes.table import OutcomeTable
    from orchestra.spec import Budget, Pool

__all__ = ["REPLAY_CONTEXT_WINDOW", "pool_from_outcomes"]

#: Context window given to replay models: the recorded call already happened, so no limit applies.
REPLAY_CONTEXT_WINDOW = 1_000_000
_DEFAULT_MAX_OUTPUT = 512


def _models_file(path: str | Path) -> dict[str, dict[str, Any]]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"models file {str(p)!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: expected JSON ({e.msg})") from None
    if isinstance(data, list):
        data = {str(d.get("name")): d for d in data if isinstance(d, dict)}
    if not isinstance(data, dict):
        raise UserError(
            f"{p}: expected a JSON object keyed by model name, each with input_price, "
            f"output_price (USD per 1M tokens) and a description (got {type(data).__name__})"
        )
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}


def _table_name(table: OutcomeTable, name: str | None) -> str:
    if name is not None:
        return name
    meta = table.meta or {}
    src = str(meta.get("source", "table")).split(" ", 1)[0].split("(", 1)[0] or "table"
    split = meta.get("split")
    base = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in
                   (f"{src}-{split}" if split else src)).strip("-") or "table"
    # Never silently replace another table: the same table object reuses its name.
    tables = replay_tables()
    candidate, i = base, 1
    while candidate in tables and tables[candidate] is not table:
        i += 1
        candidate = f"{base}-{i}"
    return candidate


def pool_from_outcomes(
    table: OutcomeTable,
    *,
    models_file: str | Path | None = None,
    refiner: Literal["vote", "last"] = "vote",
    models: Sequence[str] | None = None,
    name: str | None = None,
    table_name: str | None = None,
    budget: Budget | None = None,
    policy: str = "cheapest",
    quality: Mapping[str, float] | OutcomeTable | None = None,
    max_output_tokens: int | None = None,
) -> Pool:
    """A pool whose models replay the table's recorded outcomes (``Pool.from_outcomes``).

    Registers the table (:func:`register_replay_table`) and builds one model per table model,
    id ``replay/<table_name>/<model>``:

    - prices and description from the models file (``{name: {input_price, output_price,
      description | feature}}``, USD per 1M tokens) or else the table's ``models_info``; a
      model with neither gets a nominal price derived from its recorded costs (mean cost per
      token), used only by policies that compare prices — calls are charged their recorded cost;
    - ``max_output_tokens``: the model's largest recorded (or estimated) output, at least 16,
      so that no recorded answer is cut; no context limit;
    - ``quality``: a prior per model, e.g. mean scores on a *train* table (never the table
      being evaluated: that would leak its answers into ``strongest`` and vote tie-breaks).

    One answer agent ``assistant`` with an empty system prompt (the recorded prompt is the
    query). The refiner is ``vote`` (or ``last``): an LLM refiner's prompt was never recorded,
    so it cannot be replayed.

    Args:
        table: the outcomes.
        models_file: a JSON file of model prices and descriptions.
        refiner: ``vote`` or ``last``.
        models: use only these models (default: all the table's).
        name: the pool's name (default ``replay:<table_name>``).
        table_name: the registry name (default: from the table's source and split, made unique).
        budget: the pool's default budget (default: 4 rounds, no USD limit).
        policy: the pool's default policy.
        quality: quality priors, as ``{model: q}`` or a table whose mean scores are used.
        max_output_tokens: override every model's output cap.

    Raises:
        UserError: an unknown model, an ``llm`` refiner, or a bad models file.
    """
    from orchestra.outcomes.table import OutcomeTable as _OT
    from orchestra.spec import AgentSpec, Budget, ModelSpec, Pool, RefinerSpec

    if refiner not in ("vote", "last"):
        raise UserError(
            f"a replay pool's refiner must be 'vote' or 'last' (got {refiner!r}): an LLM "
            "refiner sends a new prompt (the candidates to merge) whose answer was never "
            "recorded, so replay cannot serve it"
        )
    names = list(models) if models is not None else table.models
    unknown = [m for m in names if m not in table.models]
    if unknown:
        raise UserError(f"unknown model(s) {unknown!r}: expected some of {table.models!r}")
    tname = register_replay_table(_table_name(table, table_name), table)
    data = _data(tname)
    info = table.models_info
    extra = _models_file(models_file) if models_file is not None else {}
    if isinstance(quality, _OT):
        qs = quality.score_matrix()
        priors: dict[str, float] = {
            m: float(np.nanmean(qs[:, j])) for j, m in enumerate(quality.models)
            if not np.all(np.isnan(qs[:, j]))
        }
    else:
        priors = dict(quality or {})
    specs = []
    for m in names:
        j = data.mindex[m]
        f = extra.get(m, {})
        mi = info.get(m)
        pin = f.get("input_price", mi.input_price if mi else None)
        pout = f.get("output_price", mi.output_price if mi else None)
        if pin is None or pout is None:
            ok = ~np.isnan(data.cost[:, j])
            toks = float((data.in_tok[ok, j] + data.out_tok[ok, j]).sum())
            per_m = float(data.cost[ok, j].sum()) / toks * 1e6 if toks > 0 else 0.0
            pin = per_m if pin is None else pin
            pout = per_m if pout is None else pout
        desc = str(f.get("description", f.get("feature", mi.description if mi else "")) or "")
        cap = max_output_tokens or max(16, int(data.max_out[j]) or _DEFAULT_MAX_OUTPUT)
        q = priors.get(m)
        specs.append(ModelSpec(
            name=m, id=replay_model_id(tname, m), input_price=float(pin),
            output_price=float(pout), context_window=REPLAY_CONTEXT_WINDOW + cap,
            max_output_tokens=cap, description=desc or f"{m} (recorded outcomes)",
            tags=("replay",), quality=None if q is None else min(1.0, max(0.0, float(q))),
        ))
    agent = AgentSpec(name="assistant", description="answers with the recorded response",
                      system_prompt="")
    return Pool(
        name=name or f"replay:{tname}",
        description=f"recorded outcomes of {table!r} replayed (table {tname!r})",
        models=tuple(specs), agents=(agent,), refiner=RefinerSpec(kind=refiner),
        budget=budget or Budget(rounds=4), policy=policy,
    )

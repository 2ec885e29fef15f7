"""Replay of recorded outcomes: a model "answers" with what it was recorded answering.

A pool built from an :class:`~orchestra.outcomes.OutcomeTable` (:func:`pool_from_outcomes`, also
``Pool.from_outcomes``) runs the whole runtime — policies, multi-round fan-out, the vote
refiner, hard budgets, trace events — over real recorded responses, tokens and costs, with no
network and no spend. That is how policies are evaluated (``orchestra eval``) and how the
runtime is tested at scale.

Model ids
=========
``replay/<table>/<model>``: ``<table>`` is a name given to :func:`register_replay_table`,
``<model>`` a model name of that table (it may contain ``/``, as in
``replay/rb/meta/llama-2-70b-chat``). ``replay/<model>`` (no registered table name as first
segment) reads the *default* table: the last one registered with ``default=True``. Tables are
registered in-process; a pool of replay models only works in the process that registered them.

Which query
===========
The run's ``meta["query_id"]`` (``orch.arun(query, meta={"query_id": ...})``; the runtime puts
the run's meta on every call, and :class:`~orchestra.backends.litellm_client.LiteLLMBackend`
passes it to litellm as ``metadata``), else the exact text of the last user message. A query or
model the table does not know, or a pair it did not record, is an error
(:class:`~orchestra.errors.BackendError` from either backend, naming the query and the model) —
replay never invents an answer.

What a call returns and costs
=============================
The recorded response (stripped, as the litellm client strips every reply), the recorded input
and output tokens, and the **recorded cost** exactly (``Completion.cost_usd``; through litellm it
travels in ``response._hidden_params["orchestra_cost_usd"]``). The budget ledger reserves that
exact cost before the call (``cost_bound``), so budgets hold to the cent over replay.

- Tokens a table did not record are estimated: ``ceil(len(text) / 4)`` for the query (input)
  and the response (output, at least 1). Costs are never estimated here (the table's costs are
  used as they are; a table whose costs were themselves estimated, like LLMRouter's, says so in
  ``table.meta["cost_note"]``).
- A recording cannot be shortened: when the budget leaves room for fewer output tokens than the
  recorded answer has, the call fails (not billed) instead of returning a truncated answer.
- The prompt does not change the outcome: every call for a query replays the query's recording,
  whatever the system prompt or a later round's prompt says (a second layer of an ensemble
  replays the same answers and is charged again). Prompt tokens are exact when the last user
  message is the query text; otherwise a bound (the larger of the prompt's UTF-8 bytes and the
  model's largest recorded prompt) is reserved and the recorded count is charged.
- A query recorded with no response text (LLMRouter records only scores) replays as the marker
  ``[replay: no recorded response ...]`` so that single calls still flow through the runtime;
  the evaluation harness grades those by the recorded score and refuses to grade a vote over
  them.

Refiner
=======
A replay pool uses the ``vote`` refiner: the vote works on the recorded responses. An ``llm``
refiner would send a new prompt (the candidates to merge), and nothing recorded what a model
answered to that prompt, so a replay pool refuses it.

Two ways to run
===============
- Through litellm (``Orchestra(pool)``, the default backend): the ``replay`` provider is a
  ``litellm.CustomLLM`` registered in ``litellm.custom_provider_map``, with
  :class:`~orchestra.backends.litellm_client.ProviderHooks` giving exact prompt tokens and costs.
- :class:`ReplayBackend` (``Orchestra(pool, backend=ReplayBackend())``): the same replies without
  litellm's per-call overhead (an evaluation through the runtime runs ~2.5× faster: ~390 vs
  ~155 queries per CPU-second for one call per query), what the evaluation harness uses. Both give
  identical results (tests/unit/test_replay.py).
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from orchestra.backends.base import Completion, CompletionRequest, utf8_token_bound
from orchestra.errors import BackendError, UserError

if TYPE_CHECKING:
    from orchestra.outcomes.table import OutcomeTable
    from orchestra.spec import Budget, ModelSpec, Pool

__all__ = [
    "CHARS_PER_TOKEN",
    "COST_KEY",
    "NO_RESPONSE_MARKER",
    "PROVIDER",
    "ReplayBackend",
    "ReplayLookupError",
    "ReplayOutcome",
    "pool_from_outcomes",
    "register_replay_provider",
    "register_replay_table",
    "replay_call",
    "replay_model_id",
    "replay_table",
    "replay_tables",
    "unregister_replay_table",
]

#: The litellm provider prefix of replayed models.
PROVIDER = "replay"
#: Characters per token for the token counts a table did not record.
CHARS_PER_TOKEN = 4.0
#: Start of the text replayed for a pair recorded without a response.
NO_RESPONSE_MARKER = "[replay: no recorded response"
#: Key of the exact recorded cost in a litellm response's ``_hidden_params``.
COST_KEY = "orchestra_cost_usd"
#: Context window given to replay models: the recorded call already happened, so no limit applies.
REPLAY_CONTEXT_WINDOW = 1_000_000


class ReplayLookupError(UserError, KeyError):
    """A replayed call named an unknown table, model or query, or a pair with no recording."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ReplayOutcome:
    """What one replayed call returns.

    Attributes:
        query_id / model: the recorded pair.
        text: the recorded response, stripped (or the no-response marker).
        input_tokens / output_tokens: recorded, or estimated when ``tokens_estimated``.
        cost_usd: the recorded cost.
        score: the recorded score (never shown to the runtime; for graders).
        has_response: whether a response text was recorded.
    """

    query_id: str
    model: str
    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    score: float
    has_response: bool
    tokens_estimated: bool


# ------------------------------------------------------------------------------ the registry
class _Replay:
    """Dense per-table arrays for O(1) replay (built once per registered table)."""

    def __init__(self, table: OutcomeTable) -> None:
        self.table = table
        self.models = table.models
        self.mindex = {m: j for j, m in enumerate(self.models)}
        self.query_ids = table.queries
        nq, nm = table.n_queries, table.n_models
        self.score = table.score_matrix()
        self.cost = table.cost_matrix()
        self.in_tok = np.full((nq, nm), -1, dtype=np.int64)
        self.out_tok = np.full((nq, nm), -1, dtype=np.int64)
        self.text = np.full((nq, nm), None, dtype=object)
        self.has_response = np.zeros((nq, nm), dtype=bool)
        self.estimated = np.zeros((nq, nm), dtype=bool)
        qrow = {q: i for i, q in enumerate(self.query_ids)}
        texts = table.query_texts
        for r in table.rows():
            qi, mi = qrow[r.query_id], self.mindex[r.model]
            est = False
            if r.input_tokens is not None:
                n_in = r.input_tokens
            else:
                n_in, est = _estimate_tokens(texts[qi], 0), True
            resp = r.response
            if r.output_tokens is not None:
                n_out = r.output_tokens
            else:
                n_out, est = _estimate_tokens(resp or "", 1), True
            self.in_tok[qi, mi] = n_in
            self.out_tok[qi, mi] = n_out
            self.estimated[qi, mi] = est
            if resp is not None:
                self.text[qi, mi] = resp.strip()
                self.has_response[qi, mi] = True
            else:
                self.text[qi, mi] = (f"{NO_RESPONSE_MARKER} for model {r.model!r} on query "
                                     f"{r.query_id!r}]")
        recorded_in = np.where(self.in_tok >= 0, self.in_tok, 0)
        self.max_in = recorded_in.max(axis=0) if nq else np.zeros(nm, dtype=np.int64)
        self.max_out = (np.where(self.out_tok >= 0, self.out_tok, 0).max(axis=0) if nq
                        else np.zeros(nm, dtype=np.int64))

    def query_row(self, key: str) -> int:
        from orchestra.outcomes.table import OutcomeLookupError

        try:
            return self.table.query_index(key)
        except OutcomeLookupError as e:
            raise ReplayLookupError(f"replay: {e}") from None

    def model_col(self, model: str, table_name: str) -> int:
        j = self.mindex.get(model)
        if j is None:
            raise ReplayLookupError(
                f"replay: unknown model {model!r} in table {table_name!r}; expected one of "
                f"{self.models!r}"
            )
        return j

    def outcome(self, qi: int, mj: int) -> ReplayOutcome:
        if np.isnan(self.score[qi, mj]):
            raise ReplayLookupError(
                f"replay: no outcome recorded for model {self.models[mj]!r} on query "
                f"{self.query_ids[qi]!r}; replay never invents an answer"
            )
        return ReplayOutcome(
            query_id=self.query_ids[qi], model=self.models[mj], text=self.text[qi, mj],
            input_tokens=int(self.in_tok[qi, mj]), output_tokens=int(self.out_tok[qi, mj]),
            cost_usd=float(self.cost[qi, mj]), score=float(self.score[qi, mj]),
            has_response=bool(self.has_response[qi, mj]),
            tokens_estimated=bool(self.estimated[qi, mj]),
        )


def _estimate_tokens(text: str, minimum: int) -> int:
    return max(minimum, math.ceil(len(text) / CHARS_PER_TOKEN))


_TABLES: dict[str, _Replay] = {}
_DEFAULT: list[str] = []  # the default table's name, when one was set
_LOCK = threading.Lock()


def register_replay_table(name: str, table: OutcomeTable, *, default: bool = False) -> str:
    """Make a table replayable as ``replay/<name>/<model>`` (replacing a table of that name).

    Args:
        name: the table's name in model ids; no ``/``.
        table: the recorded outcomes.
        default: also serve ``replay/<model>`` ids from this table.

    Returns:
        ``name``.

    Raises:
        UserError: a name that is empty or holds ``/``.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise UserError(f"replay table name must be a non-empty string without '/' (got {name!r})")
    known = _TABLES.get(name)
    data = known if known is not None and known.table is table else _Replay(table)
    with _LOCK:
        _TABLES[name] = data
        if default:
            _DEFAULT[:] = [name]
    return name


def unregister_replay_table(name: str) -> None:
    """Forget a registered table (no error when it is not registered)."""
    with _LOCK:
        _TABLES.pop(name, None)
        if _DEFAULT and _DEFAULT[0] == name:
            _DEFAULT.clear()


def replay_tables() -> dict[str, OutcomeTable]:
    """The registered tables by name."""
    return {k: v.table for k, v in _TABLES.items()}


def replay_table(name: str) -> OutcomeTable:
    """The table registered as ``name``.

    Raises:
        ReplayLookupError: no such table.
    """
    return _data(name).table


def _data(name: str) -> _Replay:
    d = _TABLES.get(name)
    if d is None:
        raise ReplayLookupError(
            f"replay: no table registered as {name!r}; registered: {sorted(_TABLES)} "
            "(register one with register_replay_table(name, table) or build the pool with "
            "Pool.from_outcomes(table))"
        )
    return d


def replay_model_id(table_name: str, model: str) -> str:
    """The litellm id of ``model`` of the table registered as ``table_name``."""
    return f"{PROVIDER}/{table_name}/{model}"


def _resolve(model_path: str) -> tuple[str, _Replay, str]:
    """``<table>/<model>`` or ``<model>`` (default table) → (table name, data, model)."""
    head, sep, rest = model_path.partition("/")
    if sep and head in _TABLES:
        return head, _TABLES[head], rest
    if _DEFAULT:
        return _DEFAULT[0], _TABLES[_DEFAULT[0]], model_path
    raise ReplayLookupError(
        f"replay: cannot tell the table of model id 'replay/{model_path}': expected "
        f"'replay/<table>/<model>' with <table> among {sorted(_TABLES)}, or a default table "
        "(register_replay_table(..., default=True))"
    )


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else None
    return None


def _split_model_id(model_id: str) -> str:
    """Drop a leading ``replay/`` when present."""
    return model_id[len(PROVIDER) + 1:] if model_id.startswith(PROVIDER + "/") else model_id


def replay_call(model: str, messages: Sequence[Mapping[str, Any]],
                meta: Mapping[str, Any] | None = None, max_tokens: int | None = None
                ) -> ReplayOutcome:
    """The recorded outcome a replayed call returns.

    Args:
        model: ``[replay/]<table>/<model>`` or ``[replay/]<model>`` (default table).
        messages: the call's chat messages (the last user message names the query when
            ``meta`` has no ``query_id``).
        meta: the run's metadata; ``query_id`` picks the query.
        max_tokens: the output tokens the call may use; a longer recording is refused.

    Raises:
        ReplayLookupError: unknown table, model or query, no recording for the pair, or a
            recording longer than ``max_tokens``.
    """
    name, data, model_name = _resolve(_split_model_id(model))
    mj = data.model_col(model_name, name)
    qid = (meta or {}).get("query_id")
    if qid is not None:
        qi = data.query_row(str(qid))
    else:
        text = _last_user_text(messages)
        if text is None:
            raise ReplayLookupError(
                "replay: the call has no meta['query_id'] and no user message to find the query "
                "by; pass meta={'query_id': ...} to the run"
            )
        qi = data.query_row(text)
    out = data.outcome(qi, mj)
    if max_tokens is not None and out.output_tokens > max_tokens:
        raise ReplayLookupError(
            f"replay: the recorded answer of {model_name!r} on query {out.query_id!r} has "
            f"{out.output_tokens} output tokens but the call may use only max_tokens="
            f"{max_tokens} (the budget left no more room); a recording cannot be shortened"
        )
    return out


def _prompt_tokens(model: str, messages: Sequence[Mapping[str, Any]]) -> int:
    """Exact recorded prompt tokens when the last user message is a query, else a bound."""
    name, data, model_name = _resolve(_split_model_id(model))
    mj = data.model_col(model_name, name)
    text = _last_user_text(messages)
    if text is not None:
        try:
            qi = data.table.query_index(text)
        except KeyError:
            qi = None
        if qi is not None and data.in_tok[qi, mj] >= 0:
            return int(data.in_tok[qi, mj])
    return max(utf8_token_bound([dict(m) for m in messages]), int(data.max_in[mj]))


def _cost_bound(model: str, messages: Sequence[Mapping[str, Any]], max_tokens: int,
                meta: Mapping[str, Any]) -> float | None:
    """The exact recorded cost of the call (None when it cannot be replayed: it then fails)."""
    try:
        return replay_call(model, messages, meta, None).cost_usd
    except ReplayLookupError:
        return None


# ------------------------------------------------------------------------------ fast backend
class ReplayBackend:
    """The :class:`~orchestra.backends.base.Backend` of replayed models, without litellm.

    Serves ``replay/…`` model ids from the registered tables; gives the same completions,
    exact prompt tokens and exact costs as the litellm ``replay`` provider at a fraction of the
    overhead.

    Args:
        tables: tables to register on construction (``{name: table}``).
        latency_s: seconds each call waits (``asyncio.sleep``), 0 for none: simulates a
            provider's latency in throughput tests.
    """

    def __init__(self, tables: Mapping[str, OutcomeTable] | None = None, *,
                 latency_s: float = 0.0) -> None:
        for name, table in (tables or {}).items():
            register_replay_table(name, table)
        self.latency_s = latency_s

    @staticmethod
    def _check(model: ModelSpec) -> None:
        if model.provider != PROVIDER:
            raise BackendError(
                f"{model.name} ({model.id}) failed: ReplayBackend only serves '{PROVIDER}/…' "
                "models; use the litellm backend for other providers",
                model=model.id,
            )

    def prompt_tokens_bound(self, model: ModelSpec, messages: list[dict[str, Any]]) -> int:
        if model.provider != PROVIDER:
            return utf8_token_bound(messages)
        try:
            return _prompt_tokens(model.id, messages)
        except ReplayLookupError:
            return utf8_token_bound(messages)

    def cost_bound(self, model: ModelSpec, messages: list[dict[str, Any]], max_tokens: int,
                   meta: dict[str, Any]) -> float | None:
        if model.provider != PROVIDER:
            return None
        return _cost_bound(model.id, messages, max_tokens, meta)

    async def complete(self, request: CompletionRequest) -> Completion:
        model = request.model
        self._check(model)
        if self.latency_s:
            import asyncio

            await asyncio.sleep(self.latency_s)
        try:
            out = replay_call(model.id, request.messages, request.meta, request.max_tokens)
        except ReplayLookupError as e:
            raise BackendError(f"{model.name} ({model.id}) failed: {e}", model=model.id) from e
        return Completion(text=out.text, input_tokens=out.input_tokens,
                          output_tokens=out.output_tokens, cost_usd=out.cost_usd,
                          finish_reason="stop")


# ------------------------------------------------------------------------------ litellm provider
_PROVIDER_CLASS: type | None = None


def _provider_class() -> type:
    """Build the ``CustomLLM`` subclass on first use, so importing this module stays light."""
    global _PROVIDER_CLASS
    if _PROVIDER_CLASS is not None:
        return _PROVIDER_CLASS
    from orchestra.backends.pricing import import_litellm, reply_provider_class

    litellm = import_litellm()
    from litellm.types.utils import Usage

    def reply(model: str, messages: list, optional_params: dict, kwargs: dict,
              model_response: Any) -> Any:
        lp = kwargs.get("litellm_params") or {}
        meta = lp.get("metadata") or {}
        p = optional_params or {}
        max_tokens = p.get("max_tokens", p.get("max_completion_tokens"))
        if p.get("tools") or p.get("functions"):
            raise litellm.BadRequestError(
                message="replay: recorded outcomes hold no tool calls; remove the agent's tools",
                model=f"{PROVIDER}/{model}", llm_provider=PROVIDER)
        try:
            out = replay_call(model, messages, meta,
                              int(max_tokens) if max_tokens is not None else None)
        except ReplayLookupError as e:
            raise litellm.BadRequestError(message=str(e), model=f"{PROVIDER}/{model}",
                                          llm_provider=PROVIDER) from e
        model_response.id = f"chatcmpl-replay-{uuid.uuid4().hex}"
        model_response.created = int(time.time())
        model_response.model = f"{PROVIDER}/{model}"
        choice = model_response.choices[0]
        choice.message.content = out.text
        choice.finish_reason = "stop"
        model_response.usage = Usage(prompt_tokens=out.input_tokens,
                                     completion_tokens=out.output_tokens,
                                     total_tokens=out.input_tokens + out.output_tokens)
        # The exact recorded cost; LiteLLMBackend reads it instead of tokens × price.
        model_response._hidden_params[COST_KEY] = out.cost_usd
        return model_response

    _PROVIDER_CLASS = reply_provider_class(
        "ReplayProvider", "litellm provider ``replay``: recorded outcomes of registered tables.",
        reply)
    return _PROVIDER_CLASS


def register_replay_provider() -> Any:
    """Register the ``replay`` provider with litellm (idempotent, thread-safe).

    Returns:
        The registered handler (a ``litellm.CustomLLM``).
    """
    from orchestra.backends.pricing import register_custom_provider

    handler, _ = register_custom_provider(PROVIDER, _provider_class(), "orchestra's replay")
    return handler


def _hooks() -> Any:
    from orchestra.backends.litellm_client import ProviderHooks

    def prompt_tokens(model: str, messages: list[dict[str, Any]]) -> int:
        try:
            return _prompt_tokens(model, messages)
        except ReplayLookupError:
            return utf8_token_bound(messages)

    return ProviderHooks(setup=register_replay_provider, prompt_tokens=prompt_tokens,
                         cost_bound=_cost_bound)


def _register_hooks() -> None:
    from orchestra.backends.litellm_client import register_provider_hooks

    register_provider_hooks(PROVIDER, _hooks)


_register_hooks()


# ------------------------------------------------------------------------------ pools
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
    candidate, i = base, 1
    while candidate in _TABLES and _TABLES[candidate].table is not table:
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
    data = _TABLES[tname]
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

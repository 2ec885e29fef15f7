"""The registered outcome tables and what a replayed call returns from them.

A table registered under a name (:func:`register_replay_table`) serves the model ids
``replay/<name>/<model>``; :func:`replay_call` finds a call's query (its ``meta["query_id"]``,
else its last user message) and returns the recorded outcome, never an invented one.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestra.backends.base import utf8_token_bound
from orchestra.errors import UserError

if TYPE_CHECKING:
    from orchestra.outcomes.table import OutcomeTable

__all__ = [
    "CHARS_PER_TOKEN",
    "COST_KEY",
    "NO_RESPONSE_MARKER",
    "PROVIDER",
    "ReplayLookupError",
    "ReplayOutcome",
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


def _prompt_tokens_bound(model: str, messages: Sequence[Mapping[str, Any]]) -> int:
    """:func:`_prompt_tokens`, or the UTF-8 bound when the call cannot be replayed."""
    try:
        return _prompt_tokens(model, messages)
    except ReplayLookupError:
        return utf8_token_bound([dict(m) for m in messages])


def _cost_bound(model: str, messages: Sequence[Mapping[str, Any]], max_tokens: int,
                meta: Mapping[str, Any]) -> float | None:
    """The exact recorded cost of the call (None when it cannot be replayed: it then fails)."""
    try:
        return replay_call(model, messages, meta, None).cost_usd
    except ReplayLookupError:
        return None

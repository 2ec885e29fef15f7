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

The package, one job a module:

- :mod:`~orchestra.backends.replay.tables`: the registered tables and :func:`replay_call`;
- :mod:`~orchestra.backends.replay.backend`: :class:`ReplayBackend`;
- :mod:`~orchestra.backends.replay.provider`: the litellm provider ``replay`` (imports litellm);
- :mod:`~orchestra.backends.replay.pools`: :func:`pool_from_outcomes`.

Importing this package registers the provider's hooks with
:mod:`~orchestra.backends.litellm_client`; it does not import litellm.
"""

from __future__ import annotations

from typing import Any

from orchestra.backends.replay.backend import ReplayBackend
from orchestra.backends.replay.pools import REPLAY_CONTEXT_WINDOW, pool_from_outcomes
from orchestra.backends.replay.tables import (
    CHARS_PER_TOKEN,
    COST_KEY,
    NO_RESPONSE_MARKER,
    PROVIDER,
    ReplayLookupError,
    ReplayOutcome,
    _cost_bound,
    _prompt_tokens_bound,
    register_replay_table,
    replay_call,
    replay_model_id,
    replay_table,
    replay_tables,
    unregister_replay_table,
)

__all__ = [
    "CHARS_PER_TOKEN",
    "COST_KEY",
    "NO_RESPONSE_MARKER",
    "PROVIDER",
    "REPLAY_CONTEXT_WINDOW",
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


def register_replay_provider() -> Any:
    """Register the ``replay`` provider with litellm (idempotent, thread-safe).

    Returns:
        The registered handler (a ``litellm.CustomLLM``).
    """
    from orchestra.backends.replay.provider import register

    return register()


def _hooks() -> Any:
    from orchestra.backends.litellm_client import ProviderHooks

    return ProviderHooks(setup=register_replay_provider, prompt_tokens=_prompt_tokens_bound,
                         cost_bound=_cost_bound)


def _register_hooks() -> None:
    from orchestra.backends.litellm_client import register_provider_hooks

    register_provider_hooks(PROVIDER, _hooks)


_register_hooks()

"""The fast replay backend: replayed calls without litellm."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestra.backends.base import Completion, CompletionRequest, utf8_token_bound
from orchestra.backends.replay.tables import (
    PROVIDER,
    ReplayLookupError,
    _cost_bound,
    _prompt_tokens_bound,
    register_replay_table,
    replay_call,
)
from orchestra.errors import BackendError

if TYPE_CHECKING:
    from orchestra.outcomes.table import OutcomeTable
    from orchestra.spec import ModelSpec

__all__ = ["ReplayBackend"]


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
        return _prompt_tokens_bound(model.id, messages)

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

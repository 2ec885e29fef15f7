"""The litellm provider ``replay``: recorded outcomes behind ``replay/…`` model ids.

Importing this module imports litellm (:mod:`orchestra.backends.replay` imports it on first
use).
"""

from __future__ import annotations

from typing import Any

from orchestra.backends._provider import Call, InProcessProvider, Reply, litellm
from orchestra.backends.replay.tables import COST_KEY, PROVIDER, ReplayLookupError, replay_call

__all__ = ["ReplayProvider", "register"]


class ReplayProvider(InProcessProvider):
    """litellm provider ``replay``: recorded outcomes of registered tables."""

    provider = PROVIDER
    purpose = "orchestra's replay"
    no_tools = "replay: recorded outcomes hold no tool calls; remove the agent's tools"

    def answer(self, call: Call) -> Reply:
        try:
            out = replay_call(call.model, call.messages, call.metadata, call.max_tokens)
        except ReplayLookupError as e:
            raise self.error(litellm.BadRequestError, call, str(e)) from e
        # The exact recorded cost; LiteLLMBackend reads it instead of tokens × price.
        return Reply(text=out.text, prompt_tokens=out.input_tokens,
                     completion_tokens=out.output_tokens, hidden={COST_KEY: out.cost_usd})


def register() -> Any:
    """Register the ``replay`` provider with litellm; see
    :func:`orchestra.backends.replay.register_replay_provider`."""
    return ReplayProvider.register()[0]

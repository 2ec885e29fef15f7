"""The whitespace-word tokenizer of the test doubles (:mod:`orchestra.testing`'s backends and
the faulty provider, :mod:`orchestra.backends.faulty`): a token is a word, so tests can predict
counts exactly. Re-exported by :mod:`orchestra.testing`."""

from __future__ import annotations

from typing import Any

__all__ = ["count_tokens", "prompt_tokens"]


def count_tokens(text: str) -> int:
    """The test tokenizer: whitespace-separated words (at least one per non-empty text)."""
    return len(text.split())


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The test tokenizer's count of a prompt: each message's words plus one."""
    return sum(count_tokens(str(m.get("content") or "")) + 1 for m in messages)

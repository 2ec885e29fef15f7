"""A run's token transcript: what the policy wrote and what it was shown, append-only.

Training needs the exact tokens the policy generated at each decision and a mask that keeps
the observation tokens (the prompt, the ``<information>`` blocks) out of the loss. Re-tokenising
a transcript's text can merge tokens across a boundary and change them; so the transcript keeps
token ids, appending each segment as it happens: the prompt of decision *t+1* is always the
prompt of decision *t* followed by what the policy generated and the new observation, token for
token (:meth:`Transcript.check_extends` says so, and the tests hold it to that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Segment", "Tokenizer", "Transcript"]


class Tokenizer(Protocol):
    """What the transcript needs of a tokenizer (a Hugging Face one fits)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class Segment:
    """Tokens of one kind: ``trainable`` for what the policy generated, else shown to it."""

    ids: tuple[int, ...]
    trainable: bool
    text: str


@dataclass
class Transcript:
    """The segments of one run, oldest first."""

    segments: list[Segment] = field(default_factory=list)

    def add_shown(self, tokenizer: Tokenizer, text: str) -> Segment:
        """Append text the policy is shown (prompt, observation): masked out of the loss."""
        seg = Segment(tuple(tokenizer.encode(text, add_special_tokens=False)), False, text)
        self.segments.append(seg)
        return seg

    def add_generated(self, tokenizer: Tokenizer, ids: Sequence[int]) -> Segment:
        """Append what the policy generated, as the very tokens it generated."""
        seg = Segment(tuple(ids), True, tokenizer.decode(ids, skip_special_tokens=True))
        self.segments.append(seg)
        return seg

    def ids(self) -> list[int]:
        """Every token so far: the prompt of the next decision."""
        return [t for s in self.segments for t in s.ids]

    def mask(self) -> list[int]:
        """1 for each token the policy generated, 0 for each it was shown (same length as
        :meth:`ids`)."""
        return [int(s.trainable) for s in self.segments for _ in s.ids]

    def generated_text(self) -> list[str]:
        """The text of each decision, oldest first."""
        return [s.text for s in self.segments if s.trainable]

    @staticmethod
    def check_extends(before: Sequence[int], after: Sequence[int]) -> None:
        """Raise AssertionError unless ``after`` starts with ``before`` (append-only)."""
        if list(after[: len(before)]) != list(before):
            raise AssertionError("the transcript was rewritten: a later prompt does not start "
                                 "with the earlier one")

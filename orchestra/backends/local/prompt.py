"""What an embedded model reads: chat messages rendered as its prompt, and the prompt's tokens.

- Chat models (``mode="chat"``) render messages with the chat template stored in their GGUF.
- Completion models (base models) render them as a few-shot ``Question:``/``Answer:`` text
  prompt (:func:`render_completion_prompt`) and stop at :data:`COMPLETION_STOP`.

Content is text (a string or OpenAI text parts); the ``developer`` role is read as ``system``,
and ``tool``/``function`` results as ``user`` messages. :func:`count_prompt_tokens` tokenizes
the exact prompt a call will evaluate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestra.backends.local.engine import LoadedModel, load_model

__all__ = [
    "COMPLETION_STOP",
    "count_prompt_tokens",
    "prompt_token_ids",
    "render_completion_prompt",
    "render_prompt",
]

COMPLETION_STOP: tuple[str, ...] = ("\nQuestion:", "\n\n")
"""Stop sequences always added for completion-mode models: the end of one answer."""

_ROLE_ALIASES = {"developer": "system", "tool": "user", "function": "user"}


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI multi-part content
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") == "text":
                parts.append(str(part.get("text", "")))
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ValueError(f"local models take text only (got a {kind!r} content part)")
        return "\n".join(parts)
    return str(content)


def _normalize(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Messages as plain ``{"role", "content"}`` strings, roles in system/user/assistant."""
    if not messages:
        raise ValueError("expected at least one message (got none)")
    out = []
    for m in messages:
        role = str(m.get("role", ""))
        role = _ROLE_ALIASES.get(role, role)
        if role not in ("system", "user", "assistant"):
            raise ValueError(
                f"expected a message role of system, user or assistant (got {m.get('role')!r})"
            )
        out.append({"role": role, "content": _text(m.get("content"))})
    return out


def render_completion_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Render chat messages as a few-shot text prompt for a base (completion-mode) model.

    - System messages, joined, become a preamble paragraph.
    - Each user message becomes ``Question: <text>``; the assistant reply that follows it
      becomes ``Answer: <text>`` on the next line. Question/answer pairs are separated by a
      blank line, so earlier turns act as few-shot examples. Consecutive messages of the same
      role are joined with a newline.
    - The prompt ends with ``Question: <last user message>\\nAnswer:``; the model writes the
      answer, and generation stops at a blank line or a new ``Question:``
      (:data:`COMPLETION_STOP`). If the last message is from the assistant, the prompt ends
      with ``Answer: <its text>`` and the model continues it (a prefill).

    Example:
        ``[system "Answer with one word.", user "Capital of Italy?", assistant "Rome",
        user "Capital of France?"]`` renders as::

            Answer with one word.

            Question: Capital of Italy?
            Answer: Rome

            Question: Capital of France?
            Answer:

    Args:
        messages: OpenAI-style chat messages (``role``/``content``).

    Raises:
        ValueError: no messages, no user or assistant message, or an unsupported role/content.
    """
    msgs = _normalize(messages)
    preamble = "\n".join(m["content"].strip() for m in msgs if m["role"] == "system").strip()
    turns: list[dict[str, str]] = []
    for m in msgs:
        if m["role"] == "system":
            continue
        if turns and turns[-1]["role"] == m["role"]:
            turns[-1]["content"] += "\n" + m["content"].strip()
        else:
            turns.append({"role": m["role"], "content": m["content"].strip()})
    if not turns:
        raise ValueError("expected at least one user or assistant message (got only system)")
    blocks: list[str] = []
    answered = True  # whether the last block already has its answer
    for t in turns:
        if t["role"] == "user":
            blocks.append(f"Question: {t['content']}")
            answered = False
        elif answered:  # an assistant turn with no question before it
            blocks.append(f"Answer: {t['content']}")
        else:
            blocks[-1] += f"\nAnswer: {t['content']}"
            answered = True
    if turns[-1]["role"] == "user":
        blocks[-1] += "\nAnswer:"
    return "\n\n".join(([preamble] if preamble else []) + blocks)


def _render(model: LoadedModel, messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """The prompt text and the stop sequences its format needs."""
    if model.chat_formatter is None:
        return render_completion_prompt(messages), list(COMPLETION_STOP)
    result = model.chat_formatter(messages=_normalize(messages))  # type: ignore[arg-type]
    stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
    return result.prompt, [s for s in stops if s]


def _tokenize(model: LoadedModel, prompt: str) -> list[int]:
    # Tokenizing only reads the vocabulary, so it is safe beside a generation in another thread
    # (llama-server tokenizes in its HTTP threads likewise) and does not take the model lock.
    if model.chat_formatter is not None:
        # As llama.cpp's chat handler does: the template writes its own special tokens.
        return model.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    # Plain text: BOS if the vocabulary asks for it; text that looks like a special token stays
    # text.
    return model.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)


def render_prompt(model_name: str, messages: Sequence[Mapping[str, Any]]) -> str:
    """The exact prompt text the model will see for ``messages`` (loads the model if needed).

    Chat models use the GGUF's chat template; completion models use
    :func:`render_completion_prompt`.
    """
    return _render(load_model(model_name), messages)[0]


def prompt_token_ids(model_name: str, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """The exact prompt tokens the model will evaluate for ``messages``."""
    model = load_model(model_name)
    return _tokenize(model, _render(model, messages)[0])


def count_prompt_tokens(model_name: str, messages: Sequence[Mapping[str, Any]]) -> int:
    """The exact number of prompt tokens a call with ``messages`` will use.

    Equal to the ``usage.prompt_tokens`` the completion reports, so the budget ledger can
    reserve the true worst case before the call. Loads the model (tokenizer) if needed.

    Args:
        model_name: a model name or ``local/<name>`` id.
        messages: OpenAI-style chat messages.
    """
    return len(prompt_token_ids(model_name, messages))

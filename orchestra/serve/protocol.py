"""The wire format of ``orchestra serve``: OpenAI chat-completion requests, validated with our own
pydantic models so that every rejection is an OpenAI-shaped error, and the model names a client
may ask for.

Model names (:func:`parse_model`):

- ``auto``: the server's policy;
- ``orchestra/<policy or recipe>``: that policy (``orchestra/cascade``, ``orchestra/mf``);
- ``router-<policy>-<λ>``: RouteLLM's alias, the policy with ``lam=λ``
  (``router-mf-0.11593``);
- a model of the pool (``gpt-4o-mini``): that model alone, no routing (``single:<model>``).

Per-request knobs come in the body's ``orchestra`` object (the OpenAI client's
``extra_body={"orchestra": {...}}``) or in ``x-orchestra-*`` headers; the body wins. A request's
``metadata`` (OpenAI's: at most 16 string pairs) becomes the run's ``meta`` (``task``,
``query_id``, ``gold``...), under the keys the server sets itself.

``POST /v1/feedback`` (:class:`FeedbackRequest`) grades a served run: its ``trace_id``, a
``score`` in [0, 1] and/or a ``reward``, and an optional ``meta`` object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "SCHEMA_VERSION",
    "ApiError",
    "ChatRequest",
    "FeedbackRequest",
    "Knobs",
    "Message",
    "Target",
    "conversation",
    "feedback_error",
    "knobs_from_headers",
    "parse_model",
    "validation_error",
]

#: Version of the ``orchestra`` object in responses and of the ``x-orchestra-*`` headers.
SCHEMA_VERSION = "1"
#: OpenAI's limits on a request's ``metadata``.
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
#: The prefix of a chat completion's ``id``; ``chatcmpl-<trace id>`` names the run too.
COMPLETION_ID_PREFIX = "chatcmpl-"


class ApiError(Exception):
    """An error answered as OpenAI does: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def validation_error(e: ValidationError, prefix: str = "") -> ApiError:
    """The first problem pydantic found, as a 400 naming the field and what it got."""
    err = e.errors(include_url=False)[0]
    # Union members label the path ("content.str"): keep the field names and indexes only.
    parts = [p for p in (prefix, *err["loc"])
             if p != "" and not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p))]
    where = ".".join(str(p) for p in parts)
    got = "" if err["type"] == "missing" else f" (got {_short(err.get('input'))})"
    return ApiError(400, f"{where or 'body'}: {err['msg']}{got}", param=where or None,
                    code="invalid_value" if err["type"] != "missing" else "missing_field")


class _Model(BaseModel):
    # strict: "1" is not a number and 1 is not a string, as in OpenAI's API.
    model_config = ConfigDict(strict=True, frozen=True)


class TextPart(_Model):
    """A content part; only text parts are understood."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")
    type: Literal["text"]
    text: str


class Message(_Model):
    """One chat message. ``developer`` is OpenAI's newer name for ``system``."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class Knobs(_Model):
    """Per-request routing knobs (``extra_body={"orchestra": {...}}``).

    Attributes:
        budget_usd: the most this request may spend (capped by the key's limits).
        lam: the cost weight λ of a learned policy (its ``lam`` parameter).
        max_rounds: the most route → dispatch → refine rounds.
        policy: a policy or recipe name, when the model is ``auto``.
        params: parameters for the policy (as ``--param`` gives them).
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    budget_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    lam: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_rounds: int | None = Field(default=None, ge=1, le=64)
    policy: str | None = Field(default=None, min_length=1, max_length=200)
    params: dict[str, Any] | None = None

    @field_validator("budget_usd", "lam", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        # JSON has one number type: accept 1 as 1.0, refuse true and "1".
        if isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        return v


class StreamOptions(_Model):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")
    include_usage: bool = False


class ChatRequest(_Model):
    """``POST /v1/chat/completions``. Sampling parameters (temperature, top_p...) are accepted
    and not used: the pool's model settings apply."""

    model_config = ConfigDict(strict=True, frozen=True, extra="allow")
    model: str = Field(min_length=1, max_length=300)
    messages: list[Message] = Field(min_length=1, max_length=2000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    tools: list[Any] | None = None
    orchestra: Knobs | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        # OpenAI's limits: 16 pairs, keys up to 64 characters, values up to 512.
        if v is None:
            return v
        if len(v) > METADATA_PAIRS:
            raise ValueError(f"at most {METADATA_PAIRS} key-value pairs (got {len(v)}); keep "
                             "the ones the run needs (task, query_id, gold...)")
        for k, value in v.items():
            if not 0 < len(k) <= METADATA_KEY_CHARS:
                raise ValueError(f"key {_short(k)} must be 1 to {METADATA_KEY_CHARS} characters")
            if len(value) > METADATA_VALUE_CHARS:
                raise ValueError(f"the value of {k!r} is {len(value)} characters; at most "
                                 f"{METADATA_VALUE_CHARS}")
        return v

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("orchestra answers with one choice; send n=1 (or leave it out)")
        return v

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, v: list[Any] | None) -> list[Any] | None:
        if v:
            raise ValueError("client-side tools are not supported: the pool's agents carry "
                             "their own tools (agents/<pool>.yaml); leave 'tools' out")
        return v


class FeedbackRequest(_Model):
    """``POST /v1/feedback``: how a served run went.

    Attributes:
        trace_id: the run (a response's ``x-orchestra-trace-id`` header or ``orchestra.trace_id``
            field; its ``id``, ``chatcmpl-<trace id>``, works too).
        score: the answer's quality in [0, 1] (graded against gold, or a user's rating).
        reward: any finite number the client's setting defines (e.g. ``score - λ·cost``).
        meta: anything to keep with the feedback (who rated it, the gold answer...).
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    trace_id: str = Field(min_length=1, max_length=200)
    score: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    reward: float | None = Field(default=None, allow_inf_nan=False)
    meta: dict[str, Any] | None = None

    @property
    def run_id(self) -> str:
        tid = self.trace_id.strip()
        return tid.removeprefix(COMPLETION_ID_PREFIX)


#: What a feedback body looks like, for the fix of a 400.
FEEDBACK_SHAPE = ('{"trace_id": "<x-orchestra-trace-id>", "score": <0..1> and/or "reward": '
                  '<number>, "meta": {...} (optional)}')


def feedback_error(e: ValidationError) -> ApiError:
    """A bad feedback body as a 400 naming the field, what it got and the body's shape."""
    err = validation_error(e)
    if e.errors(include_url=False)[0]["type"] == "extra_forbidden":
        err.message = (f"{err.param}: not a feedback field (got {err.param!r}); send "
                       f"{FEEDBACK_SHAPE}")
        err.code = "unknown_field"
    else:
        err.message = f"{err.message}; send {FEEDBACK_SHAPE}"
    return err


def conversation(messages: list[Message]) -> tuple[str, list[dict[str, str]]]:
    """The query (the last message, a user's) and the earlier turns as ``history``.

    System (and developer) messages stay in the history as ``system`` turns, where they were:
    the agent's own system prompt comes first, then these turns, so a client's instructions
    add to the agent's role instead of replacing it.
    """
    last = messages[-1]
    if last.role != "user":
        raise ApiError(400, f"the last message must be the user's (got role {last.role!r}): "
                            "orchestra answers the last user message", param="messages")
    query = last.text()
    if not query.strip():
        raise ApiError(400, "the last user message is empty; send the question as its content",
                       param=f"messages.{len(messages) - 1}.content")
    history: list[dict[str, str]] = []
    for i, m in enumerate(messages[:-1]):
        if m.role in ("tool", "function"):
            raise ApiError(400, f"messages.{i}: {m.role!r} messages are not supported: the "
                                "pool's agents run their own tools", param=f"messages.{i}.role")
        role = "system" if m.role == "developer" else m.role
        history.append({"role": role, "content": m.text()})
    return query, history


@dataclass(frozen=True)
class Target:
    """What a model name asks for: a policy spec and its parameters."""

    policy: str | None  # None: the server's policy
    params: dict[str, Any] = field(default_factory=dict)
    bypass: str | None = None  # a pool model asked for by name


def parse_model(name: str, pool_models: Mapping[str, Any]) -> Target:
    """Turn a requested model name into a :class:`Target`.

    Raises:
        ApiError: 404 ``model_not_found`` for a name of none of the four forms.
    """
    if name == "auto":
        return Target(None)
    if name in pool_models:
        return Target(f"single:{name}", bypass=name)
    if name.startswith("orchestra/") and len(name) > len("orchestra/"):
        return Target(name[len("orchestra/"):])
    if name.startswith("router-"):
        policy, _, lam = name[len("router-"):].rpartition("-")
        try:
            value = float(lam)
        except ValueError:
            value = math.nan
        if policy and math.isfinite(value) and value >= 0:
            return Target(policy, {"lam": value})
        raise ApiError(404, f"model {name!r}: a router alias is 'router-<policy>-<λ>' with λ a "
                            "number >= 0, e.g. 'router-mf-0.11593'", param="model",
                       code="model_not_found")
    raise ApiError(404, f"the model {name!r} does not exist here: ask for 'auto', "
                        f"'orchestra/<policy>', 'router-<policy>-<λ>' or a pool model "
                        f"({sorted(pool_models)}); GET /v1/models lists them",
                   param="model", code="model_not_found")


_HEADER_KNOBS = {"x-orchestra-budget-usd": "budget_usd", "x-orchestra-lam": "lam",
                 "x-orchestra-max-rounds": "max_rounds", "x-orchestra-policy": "policy",
                 "x-orchestra-params": "params"}


def knobs_from_headers(headers: Mapping[str, str]) -> dict[str, Any]:
    """The knobs given as ``x-orchestra-*`` headers (``x-orchestra-params`` holds a JSON
    object), as raw values for :class:`Knobs`."""
    out: dict[str, Any] = {}
    for header, key in _HEADER_KNOBS.items():
        raw = headers.get(header)
        if raw is None:
            continue
        if key == "policy":
            out[key] = raw
            continue
        try:
            out[key] = json.loads(raw)
        except ValueError:
            raise ApiError(400, f"header {header}: expected a JSON "
                                f"{'object' if key == 'params' else 'number'} (got {_short(raw)})",
                           param=header) from None
    return out

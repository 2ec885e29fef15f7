"""The text protocol of the RL-trained routing policy: its prompt, its observations, its actions.

The policy is a causal LM that writes, per decision, an optional ``<think>…</think>`` and then
exactly one action::

    <route>m1; m2</route>              call these pool models on the query, in parallel
    <route>m1: a sub-question</route>  call m1 on a question of its own (live pools)
    <answer>#2</answer>                adopt output [2] of the observations as the answer
    <answer>the answer text</answer>   answer in its own words
    <note>a note</note>                a note for later calls (Think)

After each round the runtime's outputs come back as an observation block the policy did not
write (masked out of the training loss)::

    <information>
    round 1 · spent $0.0012 · left $0.0088
    [1] mixtral: ...the output, truncated...
    [2] yi-34b: ...
    </information>

Outputs are numbered across the whole run, so ``#k`` names one call. Model output is data: an
observation never carries a closing ``</information>`` (or any other protocol tag) from a model,
so a reply cannot forge the policy's protocol. Everything here is pure text; tokens live in
:mod:`orchestra.policies.rl.transcript`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestra.budget import BudgetLeft
    from orchestra.policies.base import CallView
    from orchestra.spec import Pool

__all__ = [
    "ACTION_TAGS",
    "STOP_STRINGS",
    "FormatError",
    "Parsed",
    "parse_action",
    "render_observation",
    "render_system",
]

#: The tags an action may use; generation stops after the closing tag of one of them.
ACTION_TAGS = ("route", "answer", "note")
STOP_STRINGS = tuple(f"</{t}>" for t in ACTION_TAGS)
_PROTOCOL = re.compile(r"</?\s*(think|route|answer|note|information)\s*>", re.IGNORECASE)
_THINK = re.compile(r"\A\s*<think>(.*?)</think>", re.DOTALL)
_ACTION = re.compile(r"\A\s*<(route|answer|note)>(.*?)</\1>\s*\Z", re.DOTALL)
_ADOPT = re.compile(r"\A#\s*(\d+)\Z")
_NAME = re.compile(r"\A[\w./:@+-]+\Z")


class FormatError(ValueError):
    """The policy's text is not one well-formed action; the message says what is wrong."""


@dataclass(frozen=True)
class Parsed:
    """One parsed action.

    Attributes:
        kind: ``route``, ``answer`` or ``note``.
        think: the thinking before it ('' when none).
        routes: for ``route``: (model name, sub-question or None) pairs, in order.
        adopt: for ``answer #k``: k (1-based), else None.
        text: for ``answer`` in its own words and ``note``: the text.
    """

    kind: str
    think: str = ""
    routes: tuple[tuple[str, str | None], ...] = ()
    adopt: int | None = None
    text: str = ""


def parse_action(text: str, model_names: Sequence[str] = ()) -> Parsed:
    """Read one decision's text.

    Args:
        text: what the policy generated for this decision.
        model_names: the pool's model names; when given, a route to another name is a format
            error (Router-R1 counts an unknown model as one).

    Raises:
        FormatError: unbalanced, nested or repeated tags, text outside the tags, an empty
            action, an unknown model, a bad ``#k``.
    """
    rest = text
    think = ""
    m = _THINK.match(rest)
    if m is not None:
        think = m.group(1).strip()
        if not think:
            raise FormatError("empty <think></think>")
        if _PROTOCOL.search(think):
            raise FormatError("a tag inside <think>")
        rest = rest[m.end():]
    a = _ACTION.match(rest)
    if a is None:
        if not rest.strip():
            raise FormatError("no action: expected <route>, <answer> or <note>")
        raise FormatError(f"expected exactly one <route>, <answer> or <note> and nothing else "
                          f"(got {rest.strip()[:80]!r})")
    kind, body = a.group(1), a.group(2).strip()
    if _PROTOCOL.search(body):
        raise FormatError(f"a tag inside <{kind}>")
    if not body:
        raise FormatError(f"empty <{kind}></{kind}>")
    if kind == "note":
        return Parsed(kind="note", think=think, text=body)
    if kind == "answer":
        adopt = _ADOPT.match(body)
        if adopt is not None:
            k = int(adopt.group(1))
            if k < 1:
                raise FormatError(f"<answer>#{k}</answer>: outputs are numbered from 1")
            return Parsed(kind="answer", think=think, adopt=k)
        return Parsed(kind="answer", think=think, text=body)
    routes: list[tuple[str, str | None]] = []
    for entry in (e.strip() for e in body.split(";")):
        if not entry:
            continue
        if entry in model_names:  # a bare name (even one that holds a ':')
            routes.append((entry, None))
            continue
        name, sep, question = (x.strip() for x in entry.partition(":"))
        known = name in model_names if model_names else bool(_NAME.match(name))
        if not known:
            hint = f"; known: {list(model_names)}" if model_names else ""
            raise FormatError(f"<route>: unknown model {name!r}{hint}")
        if sep and not question:
            raise FormatError(f"<route>{entry}</route>: an empty sub-question")
        routes.append((name, question if sep else None))
    if not routes:
        raise FormatError("<route></route> names no model")
    return Parsed(kind="route", think=think, routes=tuple(routes))


def _money(x: float | None) -> str:
    return "unlimited" if x is None else f"${x:.6g}"


def render_system(pool: Pool, lam: float, max_turns: int, budget_left: BudgetLeft | None = None,
                  *, sub_questions: bool = True, estimates: bool = False) -> str:
    """The system prompt: the task, the models (name, prices, description), λ, the turn limit,
    the budget, and the action grammar.

    With ``estimates`` (a policy shown a scorer's estimates, :mod:`~orchestra.policies.rl.hints`)
    the models' descriptions are left out (the estimates say more, in far fewer tokens) and the
    prompt says what the estimates mean."""
    lines = [
        "You route a question to language models and give the final answer.",
        f"Cost weight lambda = {lam:g}: a higher lambda means spend less.",
        (f"You have at most {max_turns} turns. Each turn: optionally <think>...</think>, "
         "then exactly one action."),
        "Models (price in USD per 1M input / output tokens):",
    ]
    for m in pool.models_for(pool.answer_agent):
        desc = "" if estimates else " " + " ".join((m.description or "").split())[:160]
        lines.append(f"- {m.name}: ${m.input_price or 0:g} / ${m.output_price or 0:g}.{desc}")
    if budget_left is not None:
        lines.append(f"Budget left: {_money(budget_left.usd)}.")
    lines += [
        "Actions:",
        "<route>model-a; model-b</route> asks those models the question.",
    ]
    if sub_questions:
        lines.append("<route>model-a: a sub-question</route> asks model-a a question of yours.")
    lines += [
        "<answer>#k</answer> takes output [k] as the final answer.",
        "<answer>text</answer> answers in your own words.",
        "Outputs come back inside <information>...</information>.",
    ]
    if estimates:
        lines.append("Estimates from a trained scorer come inside <information> too: P(right) of "
                     "each output, and per model the net value of calling it (the gain in "
                     "P(right) minus lambda times its cost).")
    return "\n".join(lines)


def _clean(text: str, max_chars: int) -> str:
    """A model's output as observation data: no protocol tags, one paragraph, bounded."""
    t = _PROTOCOL.sub(lambda m: m.group(0).replace("<", "(").replace(">", ")"), text)
    t = " ".join(t.split())
    return t if len(t) <= max_chars else t[: max_chars - 1] + "…"


def render_observation(round_index: int, calls: Sequence[CallView], first_number: int,
                       spent_usd: float, left_usd: float | None, *,
                       max_chars: int = 600) -> str:
    """The observation block of one finished round; its outputs are numbered from
    ``first_number`` (the outputs of earlier rounds keep theirs)."""
    lines = ["<information>",
             f"round {round_index + 1} · spent {_money(spent_usd)} · left {_money(left_usd)}"]
    for i, c in enumerate(calls):
        body = f"error: {_clean(c.error, 120)}" if c.error else _clean(c.output, max_chars)
        lines.append(f"[{first_number + i}] {c.model}: {body}")
    lines.append("</information>")
    return "\n".join(lines) + "\n"

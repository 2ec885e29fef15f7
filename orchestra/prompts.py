"""How a call's chat messages are built from an agent, a model and the run so far."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

from orchestra.spec import AgentSpec, ModelSpec

__all__ = ["build_messages", "parse_refined", "refiner_prompt"]


def build_messages(
    agent: AgentSpec,
    model: ModelSpec,
    prompt: str,
    *,
    query: str,
    notes: Sequence[str] = (),
    context: str = "",
    history: Sequence[Mapping[str, str]] = (),
    system: str | None = None,
) -> list[dict[str, Any]]:
    """System prompt (the agent's template, filled), few-shot examples, chat history, then the
    user message. Notes from Think actions go where the template asks for ``{notes}``, or, when it
    does not, before the user message. ``system``: a system prompt to use as given instead of the
    agent's (a role a policy chose; a policy's text is data, never a template)."""
    notes_text = "\n".join(f"- {n}" for n in notes)
    templated = system is None
    if system is None:
        system = agent.render_system(
            query=query, notes=notes_text, context=context, agent=agent.name, model=model.name,
            date=_dt.date.today().isoformat(),
        )
    msgs: list[dict[str, Any]] = []
    if system.strip():
        msgs.append({"role": "system", "content": system})
    for ex in agent.examples:
        msgs.append({"role": "user", "content": ex.input})
        msgs.append({"role": "assistant", "content": ex.output})
    for turn in history:
        msgs.append({"role": turn["role"], "content": turn["content"]})
    user = prompt
    if notes and (not templated or "{notes}" not in agent.system_prompt):
        user = f"Notes:\n{notes_text}\n\n{prompt}"
    msgs.append({"role": "user", "content": user})
    return msgs


def refiner_prompt(query: str, outputs: Sequence[tuple[str, str]]) -> str:
    """The user message the LLM refiner gets: the question and the numbered candidates."""
    lines = [f"Question: {query}", "", "Candidate answers:"]
    for i, (who, text) in enumerate(outputs, 1):
        lines.append(f"[{i}] ({who}) {text.strip()}")
    lines += [
        "",
        ("Write the single best answer to the question, using the candidates critically. "
         "Then, on a last line starting with 'Conflicts:', say where the candidates disagree "
         "(or 'Conflicts: none')."),
    ]
    return "\n".join(lines)


def parse_refined(text: str) -> tuple[str, str | None]:
    """Split a refiner reply into (answer, conflicts)."""
    answer_lines, conflicts = [], None
    for line in text.strip().splitlines():
        low = line.strip().lower()
        if low.startswith(("conflicts:", "**conflicts")):
            conflicts = line.split(":", 1)[1].strip().strip("*").strip() or None
            continue
        answer_lines.append(line)
    answer = "\n".join(answer_lines).strip()
    if conflicts and conflicts.lower().rstrip(".") == "none":
        conflicts = None
    return answer or text.strip(), conflicts

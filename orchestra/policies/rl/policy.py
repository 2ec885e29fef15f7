"""The ``rl`` policy: a causal LM that routes, reads the outputs, and answers (Router-R1 style).

Per run (:meth:`RLPolicy.start`) a decider keeps the run's token transcript
(:class:`~orchestra.policies.rl.transcript.Transcript`): the system prompt (the pool's models
with prices and descriptions, λ, the turn limit, the budget) and the question, then per
decision what the LM generated and, after each round, the observation block of the outputs.
Each decision generates until the closing tag of one action
(:data:`~orchestra.policies.rl.format.STOP_STRINGS`), parses it
(:func:`~orchestra.policies.rl.format.parse_action`) and returns the matching
:class:`~orchestra.policies.base.Action`: ``<route>`` → ``Route``, ``<answer>#k`` →
``Answer(from_call=…)``, ``<answer>text`` → ``Answer(text=…)``, ``<note>`` → ``Think``.

The generated text, the turn and whether it parsed go into the action's ``scores`` (key
``rl``), so the trace shows the policy's own words. A malformed decision is a format error:
serving falls back (``fallback``: the best answer so far, else the pool's cheapest model, then
that answer) and records it; training (``on_format_error="answer"``) ends the episode so the
reward can punish it. After ``max_turns`` decisions the run answers with the best answer so far.

Resuming a run in a new process rebuilds the transcript from the decisions' ``scores``
(the generated text is re-tokenised: the tokens may differ at boundaries, which only matters
for training, never for serving).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from orchestra.errors import UserError
from orchestra.policies.base import (
    Action,
    Answer,
    Call,
    PolicyContext,
    Route,
    RunView,
    Think,
)
from orchestra.policies.rl.format import (
    STOP_STRINGS,
    FormatError,
    Parsed,
    parse_action,
    render_observation,
    render_system,
)
from orchestra.policies.rl.transcript import Tokenizer, Transcript
from orchestra.spec import Pool

if TYPE_CHECKING:
    from orchestra.policies.rl.hints import ScorerHints

__all__ = ["Generator", "RLDecider", "RLPolicy"]


class Generator(Protocol):
    """Generates a decision's tokens from the transcript so far (batched across runs by the
    implementation). ``stop``: strings after which generation ends (the closing action tags)."""

    @property
    def tokenizer(self) -> Tokenizer: ...

    async def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int,
                       stop: Sequence[str]) -> list[int]: ...


class RLPolicy:
    """Route with a generating LM.

    Args:
        pool: the pool.
        generator: what generates (an :class:`~orchestra.policies.rl.hf.HFGenerator`, or a
            scripted one in tests).
        lam: the cost weight written into the prompt (one model serves the whole curve).
        max_turns: decisions per run (Router-R1: 4).
        max_new_tokens: tokens per decision.
        max_chars: characters of each output shown in an observation.
        on_format_error: ``fallback`` (serving) or ``answer`` (training: end the episode).
        sub_questions: allow ``<route>model: question</route>`` (live pools; a replay pool has
            recorded answers to the original question only).
        hints: a scorer whose estimates the policy is shown before each decision
            (:class:`~orchestra.policies.rl.hints.ScorerHints`); ``None``: none.
        max_query_chars: characters of the question shown (``None``: all of it).
        lams: the λ values it was trained on: an evaluation sweeps them
            (:meth:`default_lambdas`); default ``[lam]``.
    """

    name = "rl"

    def __init__(self, pool: Pool, generator: Generator, *, lam: float = 0.0, max_turns: int = 4,
                 max_new_tokens: int = 96, max_chars: int = 600,
                 on_format_error: Literal["fallback", "answer"] = "fallback",
                 sub_questions: bool = True, hints: ScorerHints | None = None,
                 max_query_chars: int | None = None,
                 lams: Sequence[float] | None = None) -> None:
        if not (lam >= 0.0):
            raise UserError(f"rl: lam must be >= 0 (got {lam!r})")
        if max_turns < 1:
            raise UserError(f"rl: max_turns must be >= 1 (got {max_turns!r})")
        if on_format_error not in ("fallback", "answer"):
            raise UserError(f"rl: on_format_error must be 'fallback' or 'answer' "
                            f"(got {on_format_error!r})")
        self.pool = pool
        self.generator = generator
        self.lam = float(lam)
        self.max_turns = max_turns
        self.max_new_tokens = max_new_tokens
        self.max_chars = max_chars
        self.on_format_error = on_format_error
        self.sub_questions = sub_questions
        if max_query_chars is not None and max_query_chars < 16:
            raise UserError(f"rl: max_query_chars must be >= 16 (got {max_query_chars!r})")
        self.hints = hints
        self.max_query_chars = max_query_chars
        self.lams = [float(x) for x in lams] if lams else [self.lam]
        self.models = [m.name for m in pool.models_for(pool.answer_agent)]
        by_price = sorted(pool.models_for(pool.answer_agent),
                          key=lambda m: (m.input_price or 0.0) + (m.output_price or 0.0))
        self.cheapest = by_price[0].name

    def start(self, ctx: PolicyContext) -> RLDecider:
        return RLDecider(self)

    def default_lambdas(self) -> list[float]:
        """λ values for a sweep: the ones the model was trained on (one model, the whole
        curve)."""
        return list(self.lams)


@dataclass
class RLDecider:
    """One run's decider: its transcript and where it stands."""

    policy: RLPolicy
    transcript: Transcript = field(default_factory=Transcript)
    shown_rounds: int = 0
    numbered: list[str] = field(default_factory=list)  # call ids, in [k] order
    turns: int = 0
    prompts: list[list[int]] = field(default_factory=list)  # each decision's prompt ids
    #: The scorer's own action at the latest decision (with ``hints``; the SFT teacher).
    suggestion: str | None = None

    async def adecide(self, view: RunView) -> Action:
        p = self.policy
        tok = p.generator.tokenizer
        if not self.transcript.segments:
            self._begin(view)
        self._observe(view)
        if self.turns >= p.max_turns:
            return Answer(reason=f"rl: {p.max_turns} turns used", scores={"rl": {"turn": self.turns}})
        if p.hints is not None:
            est = p.hints.estimate(view, p.lam, self.numbered)
            self.transcript.add_shown(tok, est.text)
            self.suggestion = est.suggestion
        prompt = self.transcript.ids()
        self.prompts.append(prompt)
        ids = await p.generator.generate(prompt, max_new_tokens=p.max_new_tokens,
                                         stop=STOP_STRINGS)
        seg = self.transcript.add_generated(tok, ids)
        self.turns += 1
        info: dict[str, Any] = {"turn": self.turns, "text": seg.text, "tokens": len(ids),
                                "lam": p.lam}
        try:
            parsed = parse_action(seg.text, p.models)
            action = self._action(parsed, view, info)
        except FormatError as e:
            info["format_error"] = str(e)
            return self._on_format_error(view, info)
        return action

    def _begin(self, view: RunView) -> None:
        p = self.policy
        tok = p.generator.tokenizer
        system = render_system(p.pool, p.lam, p.max_turns, view.budget_left,
                               sub_questions=p.sub_questions, estimates=p.hints is not None)
        query = view.query
        if p.max_query_chars is not None and len(query) > p.max_query_chars:
            query = query[: p.max_query_chars - 1] + "…"
        self.transcript.add_shown(tok, f"{system}\n\nQuestion: {query}\n")
        # A resumed run: what the policy wrote before comes back from its decisions' scores.
        for d in view.decisions:
            text = (d.scores.get("rl") or {}).get("text") if isinstance(d.scores, dict) else None
            if text:
                self.transcript.add_generated(tok, tok.encode(text, add_special_tokens=False))
                self.turns += 1

    def _observe(self, view: RunView) -> None:
        tok = self.policy.generator.tokenizer
        for r in view.rounds[self.shown_rounds:]:
            spent = sum(c.cost_usd for c in r.calls)
            block = render_observation(r.index, r.calls, len(self.numbered) + 1, spent,
                                       view.budget_left.usd, max_chars=self.policy.max_chars)
            self.transcript.add_shown(tok, block)
            self.numbered.extend(c.call_id for c in r.calls)
        self.shown_rounds = len(view.rounds)

    def _action(self, parsed: Parsed, view: RunView, info: dict[str, Any]) -> Action:
        scores = {"rl": info}
        if parsed.kind == "note":
            return Think(note=parsed.text, reason="rl: note", scores=scores)
        if parsed.kind == "answer":
            if parsed.adopt is not None:
                if parsed.adopt > len(self.numbered):
                    raise FormatError(f"<answer>#{parsed.adopt}</answer>: only "
                                      f"{len(self.numbered)} outputs so far")
                return Answer(from_call=self.numbered[parsed.adopt - 1],
                              reason=f"rl: adopt output {parsed.adopt}", scores=scores)
            return Answer(text=parsed.text, reason="rl: own answer", scores=scores)
        calls = []
        for model, question in parsed.routes:
            if question is not None and not self.policy.sub_questions:
                raise FormatError("<route>model: question</route> is off for this pool "
                                  "(recorded answers are to the original question)")
            calls.append(Call(model=model, prompt=question))
        return Route(calls, reason=f"rl: route {', '.join(m for m, _ in parsed.routes)}",
                     scores=scores)

    def _on_format_error(self, view: RunView, info: dict[str, Any]) -> Action:
        scores = {"rl": info}
        if self.policy.on_format_error == "answer" or view.best_answer is not None:
            return Answer(reason=f"rl: format error ({info['format_error']})", scores=scores)
        return Route([Call(model=self.policy.cheapest)], scores=scores,
                     reason=f"rl: format error ({info['format_error']}); fallback to the "
                            f"cheapest model")

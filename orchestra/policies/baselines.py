"""Baseline policies, registered by name.

``single:<model>``  one call to that model, then answer.
``cheapest``        one call to the model with the lowest nominal cost.
``strongest``       one call to the model with the highest quality prior (else the priciest).
``random``          one call to a uniformly random model (``seed`` parameter).
``cascade``         FrugalGPT-style: cheapest model first; a verifier agent judges the answer;
                    escalate to the next stronger model while it says UNSURE.
``ensemble``        Mixture-of-Agents-style: top-k models in parallel, the refiner merges them;
                    ``layers`` > 1 sends the previous layer's answers back to the proposers.

"Nominal cost" is the price of a typical call (400 input + 200 output tokens), so that models
with different input/output price ratios compare sensibly.
"""

from __future__ import annotations

import random as _random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from orchestra.errors import UserError
from orchestra.policies.base import Action, Answer, Call, Route, RunView
from orchestra.policies.registry import register_policy

if TYPE_CHECKING:  # annotations only: listing policies stays free of pydantic
    from orchestra.spec import ModelSpec, Pool

__all__ = [
    "CascadePolicy",
    "CheapestPolicy",
    "EnsemblePolicy",
    "RandomPolicy",
    "SinglePolicy",
    "StrongestPolicy",
    "nominal_cost",
    "strength_order",
]


def nominal_cost(m: ModelSpec) -> float:
    """USD of a typical call: 400 input + 200 output tokens."""
    return ((m.input_price or 0.0) * 400 + (m.output_price or 0.0) * 200) / 1e6


def strength_order(models: Sequence[ModelSpec]) -> list[ModelSpec]:
    """Strongest first: by quality prior when set, then by nominal cost (pricier = stronger)."""
    return sorted(models, key=lambda m: (m.quality if m.quality is not None else -1.0,
                                         nominal_cost(m)), reverse=True)


def _scores(models: Sequence[ModelSpec]) -> dict[str, Any]:
    return {m.name: {"nominal_cost": nominal_cost(m), "quality": m.quality} for m in models}


class _OneShot:
    """Route one call in the first round, then answer with it."""

    name = "one-shot"

    def __init__(self, pool: Pool, agent: str | None = None) -> None:
        self.agent = pool.agent(agent).name if agent else pool.answer_agent.name
        self.models = pool.models_for(self.agent)

    def choose(self, view: RunView) -> tuple[ModelSpec, str]:
        raise NotImplementedError

    def decide(self, view: RunView) -> Action:
        if view.rounds:
            return Answer(reason="one call made")
        model, reason = self.choose(view)
        return Route([Call(agent=self.agent, model=model.name)], reason=reason,
                     scores=_scores(self.models))


class SinglePolicy(_OneShot):
    def __init__(self, pool: Pool, arg: str, agent: str | None = None) -> None:
        super().__init__(pool, agent)
        self.model = pool.model(arg)
        if self.model not in self.models:
            raise UserError(f"agent {self.agent!r} may not run on model {arg!r}; allowed: "
                            f"{[m.name for m in self.models]}")
        self.name = f"single:{self.model.name}"

    def choose(self, view: RunView) -> tuple[ModelSpec, str]:
        return self.model, "fixed model"


class CheapestPolicy(_OneShot):
    name = "cheapest"

    def choose(self, view: RunView) -> tuple[ModelSpec, str]:
        return min(self.models, key=nominal_cost), "lowest nominal cost"


class StrongestPolicy(_OneShot):
    name = "strongest"

    def choose(self, view: RunView) -> tuple[ModelSpec, str]:
        return strength_order(self.models)[0], "highest quality prior / price"


class RandomPolicy(_OneShot):
    name = "random"

    def __init__(self, pool: Pool, seed: int | None = None, agent: str | None = None) -> None:
        super().__init__(pool, agent)
        self.rng = _random.Random(seed)

    def choose(self, view: RunView) -> tuple[ModelSpec, str]:
        return self.rng.choice(self.models), "uniform random"


_VERIFY_PROMPT = (
    "Question: {query}\nProposed answer: {answer}\n\n"
    "Is the proposed answer correct and complete? Reply with one word: SURE or UNSURE."
)


_NEGATIONS = ("not sure", "not correct", "not right", "isn't correct", "is not", "no,")


def parse_verdict(text: str) -> bool:
    """True when a verifier's reply says the answer is right.

    Whole words only: SURE / YES / CORRECT / TRUE / RIGHT as the first word, or "sure"/"correct"
    as a word without a negation (UNSURE, INCORRECT, WRONG, NO, "not sure"). Anything else,
    empty replies included, counts as unsure, so the cascade escalates when in doubt.
    """
    t = text.strip().lower()
    words = re.findall(r"[a-z]+", t)
    if not words:
        return False
    if any(w in ("unsure", "incorrect", "wrong", "false", "uncertain") for w in words):
        return False
    if words[0] in ("no", "not") or any(n in t for n in _NEGATIONS):
        return False
    if words[0] in ("sure", "yes", "correct", "true", "right"):
        return True
    return "sure" in words or "correct" in words


class CascadePolicy:
    """Cheapest first; escalate while a verifier judges the answer unsure (FrugalGPT-style).

    Args:
        verifier: the verify-role agent (default: the pool's first).
        verifier_model: ``"same"`` (judge with the model that answered), ``"cheapest"``, or a name.
        max_models: try at most this many models (cheapest first).
    """

    name = "cascade"

    def __init__(self, pool: Pool, verifier: str | None = None,
                 verifier_model: str = "cheapest", max_models: int | None = None,
                 agent: str | None = None) -> None:
        self.agent = pool.agent(agent).name if agent else pool.answer_agent.name
        verifiers = [pool.agent(verifier)] if verifier else pool.agents_with_role("verify")
        if not verifiers:
            raise UserError(f"policy 'cascade' needs an agent with role 'verify' in pool "
                            f"{pool.name!r} (or name one with verifier=...)")
        self.verifier = verifiers[0].name
        self.ladder = sorted(pool.models_for(self.agent), key=nominal_cost)[: max_models or None]
        vmodels = pool.models_for(self.verifier)
        self.verifier_models = vmodels
        if verifier_model not in ("same", "cheapest"):
            pool.model(verifier_model)
        self.verifier_model = verifier_model

    def _verifier_model_for(self, answered_with: str) -> str:
        names = [m.name for m in self.verifier_models]
        if self.verifier_model == "same" and answered_with in names:
            return answered_with
        if self.verifier_model not in ("same", "cheapest"):
            return self.verifier_model
        return min(self.verifier_models, key=nominal_cost).name

    def decide(self, view: RunView) -> Action:
        answer_rounds = [r for r in view.rounds if any(c.agent == self.agent for c in r.calls)]
        if not view.rounds:
            m = self.ladder[0]
            return Route([Call(agent=self.agent, model=m.name)],
                         reason=f"start with the cheapest model {m.name}", scores=_scores(self.ladder))
        last = view.rounds[-1]
        last_answer = answer_rounds[-1] if answer_rounds else None
        if last_answer is None or not last_answer.answer:
            # The call failed: escalate directly.
            return self._escalate(view, len(answer_rounds), "previous call produced no answer")
        if last is last_answer:
            model = last.calls[0].model
            if len(answer_rounds) >= len(self.ladder):
                # Nothing stronger to escalate to: verifying would only spend.
                return Answer(text=last.answer, reason=f"{model} is the strongest model tried")
            prompt = _VERIFY_PROMPT.format(query=view.query, answer=last.answer)
            return Route([Call(agent=self.verifier, model=self._verifier_model_for(model),
                               prompt=prompt, max_tokens=8)],
                         reason=f"verify {model}'s answer")
        verdict_text = last.calls[0].output if last.calls else ""
        if parse_verdict(verdict_text):
            return Answer(text=last_answer.answer, reason=f"verifier: {verdict_text.strip()[:40]!r}")
        return self._escalate(view, len(answer_rounds),
                              f"verifier unsure ({verdict_text.strip()[:40]!r})")

    def _escalate(self, view: RunView, tried: int, why: str) -> Any:
        if tried >= len(self.ladder):
            return Answer(reason=f"{why}; no stronger model left")
        m = self.ladder[tried]
        return Route([Call(agent=self.agent, model=m.name)], reason=f"{why}; escalate to {m.name}",
                     scores=_scores(self.ladder))


_LAYER_PROMPT = (
    "{query}\n\nHere are responses from other assistants to this question. Critically evaluate "
    "them (some may be wrong) and write your own best answer.\n{responses}"
)


class EnsemblePolicy:
    """Top-k models in parallel, merged by the refiner; ``layers`` rounds (Mixture-of-Agents).

    Args:
        k: how many models per layer (default: all the agent's models, at most 3).
        layers: rounds of proposals; layer i > 0 sees layer i-1's answers.
        select: ``strongest`` or ``cheapest`` k.
    """

    name = "ensemble"

    def __init__(self, pool: Pool, k: int | None = None, layers: int = 1,
                 select: Literal["strongest", "cheapest"] = "strongest",
                 agent: str | None = None) -> None:
        self.agent = pool.agent(agent).name if agent else pool.answer_agent.name
        models = pool.models_for(self.agent)
        if k is not None and k < 1:
            raise UserError(f"ensemble k must be >= 1 (got {k!r})")
        if layers < 1:
            raise UserError(f"ensemble layers must be >= 1 (got {layers!r})")
        if select not in ("strongest", "cheapest"):
            raise UserError(f"ensemble select must be 'strongest' or 'cheapest' (got {select!r})")
        order = strength_order(models) if select == "strongest" else sorted(models, key=nominal_cost)
        self.chosen = order[: (k or min(3, len(models)))]
        self.layers = layers
        self.name = f"ensemble(k={len(self.chosen)},layers={layers})"

    def decide(self, view: RunView) -> Action:
        if view.round >= self.layers:
            return Answer(reason=f"{self.layers} layer(s) done")
        prompt = None
        if view.rounds:
            prev = view.rounds[-1].calls
            responses = "\n".join(f"[{i}] {c.output.strip()}" for i, c in
                                  enumerate((c for c in prev if c.error is None), 1))
            prompt = _LAYER_PROMPT.format(query=view.query, responses=responses)
        return Route([Call(agent=self.agent, model=m.name, prompt=prompt) for m in self.chosen],
                     reason=f"layer {view.round + 1}/{self.layers}: {[m.name for m in self.chosen]}",
                     scores=_scores(self.chosen))


register_policy("single", SinglePolicy, doc="single:<model> — one call to that model")
register_policy("cheapest", CheapestPolicy, doc="one call to the cheapest model")
register_policy("strongest", StrongestPolicy, doc="one call to the strongest model (quality prior, else price)")
register_policy("random", RandomPolicy, doc="one call to a random model (seed=...)")
register_policy("cascade", CascadePolicy, doc="cheapest first, escalate when a verifier is unsure (FrugalGPT)")
register_policy("ensemble", EnsemblePolicy, doc="top-k models in parallel + refiner, k/layers/select (MoA)")

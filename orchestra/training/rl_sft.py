"""The supervised warm start of the ``rl`` policy: trajectories written by a script through the
serving runtime, and the loss on their generated tokens.

Each trajectory is an episode of :class:`~orchestra.training.rl_episodes.EpisodeRunner` whose
generator is a :class:`ScriptGenerator`: it emits a planned decision text per turn as the base
tokenizer's ids, so the prompt, the observations, the token ids and the mask are exactly what
serving builds. The plan (:func:`plan_decisions`) is read off the training split's recorded
outcomes, by price order (the pool's prices):

- **cheapest-correct**: route the cheapest model that was right, adopt its output;
- **escalate**: when the cheapest model was wrong and a pricier one right, route the cheapest,
  then the cheapest right one, adopt the second output;
- **adopt-an-output**: route a right model beside another, adopt the right one (``#k``);
- no model right: route the cheapest and adopt it (the cheapest way to be wrong).

:func:`sft_loss` is the mean negative log-likelihood of the generated tokens only.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orchestra.training.rl_grpo import zero_touch
from orchestra.training.rl_tokens import generated_logprobs, generated_positions

if TYPE_CHECKING:
    from orchestra.eval.grading import EvalQuery
    from orchestra.policies.rl.policy import RLDecider
    from orchestra.policies.rl.transcript import Tokenizer
    from orchestra.training.rl_episodes import Episode, EpisodeRunner

__all__ = [
    "PLAN_KINDS", "ScriptGenerator", "TeacherGenerator", "plan_decisions", "sft_loss",
    "sft_trajectories",
]

PLAN_KINDS = ("cheapest-correct", "escalate", "adopt-an-output", "none-correct")


class ScriptGenerator:
    """Emits one planned decision text per call (as the tokenizer's ids); past the plan, the
    last decision again."""

    def __init__(self, tokenizer: Tokenizer, decisions: Sequence[str]) -> None:
        if not decisions:
            raise ValueError("a script needs at least one decision")
        self.tokenizer = tokenizer
        self.decisions = list(decisions)
        self.turn = 0

    async def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int,
                       stop: Sequence[str]) -> list[int]:
        text = self.decisions[min(self.turn, len(self.decisions) - 1)]
        self.turn += 1
        return self.tokenizer.encode(text, add_special_tokens=False)[:max_new_tokens]


class TeacherGenerator:
    """Writes, at each decision, what the run's scorer suggests
    (:attr:`~orchestra.policies.rl.policy.RLDecider.suggestion`: the ``escalate`` cascade's own
    decision on the same view); :class:`~orchestra.training.rl_episodes.CapturingPolicy` binds
    the run's decider."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.decider: RLDecider | None = None

    def bind_decider(self, decider: RLDecider) -> None:
        self.decider = decider

    async def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int,
                       stop: Sequence[str]) -> list[int]:
        if self.decider is None or self.decider.suggestion is None:
            raise RuntimeError("the teacher has no suggestion: the policy was built without "
                               "hints (sft_plan 'teacher' needs them)")
        return self.tokenizer.encode(self.decider.suggestion,
                                     add_special_tokens=False)[:max_new_tokens]


def plan_decisions(scores: Sequence[float], models_by_price: Sequence[str],
                   model_index: dict[str, int], rng: random.Random) -> tuple[str, list[str]]:
    """(plan kind, decision texts) for one query from its recorded scores (>= 0.5 is right)."""
    right = [m for m in models_by_price if scores[model_index[m]] >= 0.5]
    cheap = models_by_price[0]
    if not right:
        return "none-correct", [f"<route>{cheap}</route>", "<answer>#1</answer>"]
    best = right[0]
    if best != cheap and rng.random() < 0.5:
        return "escalate", [f"<route>{cheap}</route>", f"<route>{best}</route>",
                            "<answer>#2</answer>"]
    if rng.random() < 0.25:
        other = rng.choice([m for m in models_by_price if m != best])
        pair = [other, best] if rng.random() < 0.5 else [best, other]
        return "adopt-an-output", [f"<route>{pair[0]}; {pair[1]}</route>",
                                   f"<answer>#{pair.index(best) + 1}</answer>"]
    return "cheapest-correct", [f"<route>{best}</route>", "<answer>#1</answer>"]


async def sft_trajectories(runner: EpisodeRunner, queries: Sequence[EvalQuery],
                           tokenizer: Tokenizer, lams: Sequence[float], rng: random.Random,
                           plan: str = "oracle") -> list[tuple[str, Episode]]:
    """A scripted episode per query (λ drawn from ``lams``), through ``runner``'s runtime:
    (plan kind, episode) pairs. ``plan``: ``oracle`` (:func:`plan_decisions`) or ``teacher``
    (:class:`TeacherGenerator`; the runner must show hints)."""
    import asyncio

    import numpy as np

    models = [m.name for m in runner.pool.models_for(runner.pool.answer_agent)]
    by_price = sorted(models, key=lambda n: _price(runner, n))
    index = {m: runner.table.models.index(m) for m in models}
    scores = np.nan_to_num(runner.table.score_matrix(), nan=0.0)
    if plan == "teacher":
        eps = await asyncio.gather(*(runner.episode(q, float(rng.choice(list(lams))),
                                                    TeacherGenerator(tokenizer))
                                     for q in queries))
        return [("teacher", e) for e in eps]
    jobs = []
    kinds = []
    for q in queries:
        kind, decisions = plan_decisions(scores[q.qi].tolist(), by_price, index, rng)
        kinds.append(kind)
        jobs.append(runner.episode(q, float(rng.choice(list(lams))),
                                   ScriptGenerator(tokenizer, decisions)))
    episodes = await asyncio.gather(*jobs)
    return list(zip(kinds, episodes, strict=True))


def _price(runner: EpisodeRunner, name: str) -> float:
    m = next(x for x in runner.pool.models if x.name == name)
    return (m.input_price or 0.0) + (m.output_price or 0.0)


def sft_loss(model: Any, episodes: Sequence[Episode], device: Any) -> tuple[float, int]:
    """Accumulate the gradient of the mean NLL of the episodes' generated tokens (one transcript
    at a time); (loss, tokens)."""
    n = sum(len(generated_positions(e.mask)) for e in episodes)
    total = 0.0
    for e in episodes:
        if not any(e.mask[1:]):  # nothing generated: a zero pass keeps DDP workers in step
            zero_touch(model, device).backward()
            continue
        logp = generated_logprobs(model, e.ids, e.mask, device)
        loss = -logp.sum() / max(1, n)
        loss.backward()
        total += float(loss.detach())
    return total, n

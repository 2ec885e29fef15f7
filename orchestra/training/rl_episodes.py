"""Episodes of the ``rl`` policy: each one a real :meth:`Orchestra.arun
<orchestra.runtime.Orchestra.arun>` on the replay pool.

:class:`EpisodeRunner` runs a query through the serving runtime (same ledger, events, refiner
and grader as ``orchestra eval``) with an :class:`~orchestra.policies.rl.policy.RLPolicy` in
training mode (``on_format_error="answer"``: a malformed decision ends the episode, and costs
it the format penalty; ``sub_questions=False``: recorded answers are to the original question).
A thin wrapper policy (:class:`CapturingPolicy`) keeps each run's
:class:`~orchestra.policies.rl.policy.RLDecider`, whose transcript holds the exact token ids the
policy saw and generated and the loss mask over them. :meth:`EpisodeRunner.group` runs the
``G`` episodes of a GRPO group concurrently, so a batched generator
(:class:`~orchestra.policies.rl.hf.HFGenerator`) generates each decision of the group in one
batch. Every generate call is timed (:attr:`EpisodeRunner.latencies_s`): the policy's decision
latency.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestra.eval.grading import EvalQuery, Grader
from orchestra.policies.rl.policy import Generator, RLDecider, RLPolicy
from orchestra.training.rl_reward import Reward, reference_costs, reward_of_run

if TYPE_CHECKING:
    from orchestra.backends.base import Backend
    from orchestra.outcomes.table import OutcomeTable
    from orchestra.policies.base import PolicyContext
    from orchestra.policies.rl.transcript import Tokenizer
    from orchestra.spec import Pool

__all__ = ["CapturingPolicy", "Episode", "EpisodeRunner", "TimedGenerator"]


@dataclass
class Episode:
    """One finished episode: its tokens, loss mask and reward.

    Attributes:
        ids: every token of the run's transcript (prompt, decisions, observations).
        mask: 1 on the tokens the policy generated, 0 on those it was shown.
        texts: each decision's text.
    """

    query_id: str
    lam: float
    ids: list[int]
    mask: list[int]
    reward: Reward
    texts: list[str]
    answer: str | None
    models: list[str] = field(default_factory=list)


class TimedGenerator:
    """A generator that times each call of the one it wraps (seconds, in call order)."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.latencies_s: list[float] = []

    @property
    def tokenizer(self) -> Tokenizer:
        return self.inner.tokenizer

    async def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int,
                       stop: Sequence[str]) -> list[int]:
        t0 = time.perf_counter()
        try:
            return await self.inner.generate(prompt_ids, max_new_tokens=max_new_tokens, stop=stop)
        finally:
            self.latencies_s.append(time.perf_counter() - t0)


class CapturingPolicy:
    """Builds each run's :class:`RLPolicy` (``make(ctx)``) and keeps the run's decider by run id."""

    name = "rl"

    def __init__(self, make: Callable[[PolicyContext], RLPolicy]) -> None:
        self.make = make
        self.deciders: dict[str, RLDecider] = {}

    def start(self, ctx: PolicyContext) -> RLDecider:
        policy = self.make(ctx)
        d = policy.start(ctx)
        self.deciders[ctx.run_id] = d
        gen = getattr(policy.generator, "inner", policy.generator)
        bind = getattr(gen, "bind_decider", None)
        if bind is not None:  # a teacher reads the decider's suggestion
            bind(d)
        return d


class EpisodeRunner:
    """Runs episodes of the ``rl`` policy on a replay pool of ``table``.

    Args:
        table: the outcomes (the training split); registered as a replay table.
        generator: what generates (a sampling :class:`HFGenerator`, or a scripted one).
        max_turns / max_new_tokens / max_chars: the policy's settings.
        models: pool models (default: all the table's).
        backend: the replay backend (default :class:`~orchestra.backends.replay.ReplayBackend`).
        hints: an ``escalate`` artifact whose estimates the policy is shown (``None``: none).
        query_chars: characters of a question shown to the policy (``None``: all).
    """

    def __init__(self, table: OutcomeTable, generator: Generator, *, max_turns: int = 4,
                 max_new_tokens: int = 32, max_chars: int = 200,
                 models: Sequence[str] | None = None, backend: Backend | None = None,
                 hints: str | None = None, query_chars: int | None = None) -> None:
        from orchestra.backends.replay import ReplayBackend, pool_from_outcomes
        from orchestra.runtime import Orchestra

        self.table = table
        self.pool: Pool = pool_from_outcomes(table, models=models, refiner="vote")
        self.grader = Grader(table)
        self.c_ref = reference_costs(table)
        self.generator = TimedGenerator(generator)
        self.settings: dict[str, Any] = {"max_turns": max_turns, "max_new_tokens": max_new_tokens,
                                         "max_chars": max_chars, "max_query_chars": query_chars}
        if hints is not None:
            from orchestra.policies.rl.hints import ScorerHints

            self.settings["hints"] = ScorerHints(self.pool, hints, max_calls=max(1, max_turns - 1))
        self._runs: dict[str, tuple[float, Generator]] = {}
        self.capture = CapturingPolicy(self._policy_for)
        self.orch = Orchestra(self.pool, policy=self.capture,
                              backend=backend if backend is not None else ReplayBackend(),
                              store=False)

    @property
    def latencies_s(self) -> list[float]:
        return self.generator.latencies_s

    @property
    def queries(self) -> list[EvalQuery]:
        return self.grader.queries

    def _policy_for(self, ctx: PolicyContext) -> RLPolicy:
        lam, gen = self._runs.pop(ctx.run_id)
        return RLPolicy(self.pool, gen, lam=lam, on_format_error="answer", sub_questions=False,
                        **self.settings)

    async def episode(self, q: EvalQuery, lam: float, generator: Generator | None = None
                      ) -> Episode:
        """Run ``q`` once at cost weight ``lam`` (with ``generator`` instead of the runner's)."""
        rid = uuid.uuid4().hex
        gen = self.generator if generator is None else TimedGenerator(generator)
        self._runs[rid] = (lam, gen)
        try:
            res = await self.orch.arun(q.text, run_id=rid,
                                       meta={"query_id": q.query_id, "task": q.task})
        finally:
            self._runs.pop(rid, None)
            decider = self.capture.deciders.pop(rid, None)
        if decider is None:  # pragma: no cover - the runtime always starts the policy
            raise RuntimeError(f"run {rid}: the rl policy was never started")
        reward = reward_of_run(self.grader, q, res, lam, float(self.c_ref[q.qi]))
        called = [c["model"] for s in res.steps for c in s.get("calls", [])]
        return Episode(query_id=q.query_id, lam=lam, ids=decider.transcript.ids(),
                       mask=decider.transcript.mask(), reward=reward,
                       texts=decider.transcript.generated_text(), answer=res.answer,
                       models=called)

    async def group(self, q: EvalQuery, lam: float, size: int) -> list[Episode]:
        """``size`` episodes of ``q`` at one λ, run concurrently (one GRPO group)."""
        return list(await asyncio.gather(*(self.episode(q, lam) for _ in range(size))))

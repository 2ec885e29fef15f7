"""What defines an ``rl`` routing-policy training run (:class:`RLTrainConfig`); saved with every
checkpoint and, in part, in the artifact's ``rl.json``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestra.training.rl_reward import LAM_GRID

__all__ = ["RLTrainConfig"]


class RLTrainConfig(BaseModel):
    """Everything that defines an ``rl`` training run.

    Args:
        data: outcome table (``routerbench`` or a path); training reads its ``train`` split.
        base: the base model: a directory written by ``save_pretrained``, a ``.gguf`` file, a hub
            id, or ``None`` for the embedded SmolLM2-135M-Instruct (converted once and cached).
        models: pool models (default: all the table's).
        sft_steps: supervised warm-start steps before RL.
        sft_batch: trajectories per SFT step and worker.
        sft_lr: AdamW learning rate of the warm start.
        steps: GRPO steps.
        group: episodes per query (the GRPO group; all share one λ).
        queries_per_step: groups per step and worker.
        lr: AdamW learning rate of GRPO.
        beta: weight of the k3 KL estimate to the frozen reference (≤ 1e-3).
        clip_norm: gradient clipping.
        temperature / top_p: sampling of rollouts.
        max_turns / max_new_tokens / max_chars: the policy (see :class:`RLPolicy`).
        lams: the λ grid sampled per group.
        checkpoint_every: GRPO steps between checkpoints (SFT is checkpointed when it ends).
        train_layers: train only the last N transformer blocks and the final norm (the rest,
            embeddings included, frozen: a CPU run's backward pass is then a fraction of the
            forward); ``None`` trains every weight.
        max_query_chars: train on queries of at most this many characters (``None``: all).
        hints: an ``escalate`` artifact whose estimates the policy is shown before each decision
            (:mod:`~orchestra.policies.rl.hints`; the driver resolves it to an absolute path);
            ``None``: no estimates.
        sft_plan: the warm start's trajectories: ``oracle`` (read off the recorded outcomes:
            cheapest-correct, escalate, adopt-an-output) or ``teacher`` (the decisions of the
            ``hints`` cascade itself, at each episode's λ; needs ``hints``).
        query_chars: characters of a question shown to the policy (``None``: all of it).
        seed: everything random derives from it.
    """

    model_config = ConfigDict(extra="forbid")

    data: str = "routerbench"
    base: str | None = None
    models: list[str] | None = None
    sft_steps: int = Field(default=20, ge=0)
    sft_batch: int = Field(default=8, ge=1)
    sft_lr: float = Field(default=5e-5, gt=0)
    steps: int = Field(default=50, ge=0)
    group: int = Field(default=8, ge=2)
    queries_per_step: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-6, gt=0)
    beta: float = Field(default=1e-3, ge=0, le=1e-3)
    clip_norm: float = Field(default=1.0, gt=0)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_turns: int = Field(default=4, ge=1)
    max_new_tokens: int = Field(default=48, ge=4)
    max_chars: int = Field(default=200, ge=16)
    lams: list[float] = Field(default_factory=lambda: list(LAM_GRID), min_length=1)
    checkpoint_every: int = Field(default=5, ge=1)
    train_layers: int | None = Field(default=None, ge=1)
    max_query_chars: int | None = Field(default=None, ge=1)
    hints: str | None = None
    sft_plan: Literal["oracle", "teacher"] = "oracle"
    query_chars: int | None = Field(default=None, ge=16)
    seed: int = 0

    @model_validator(mode="after")
    def _teacher_needs_hints(self) -> RLTrainConfig:
        if self.sft_plan == "teacher" and not self.hints:
            raise ValueError("sft_plan 'teacher' imitates the hints' cascade: give hints (an "
                             "escalate artifact, or 'auto')")
        return self

"""GRPO for the ``rl`` policy, in plain torch: advantages, the token-level loss, one update.

- **Advantages** (:func:`group_advantages`): per group of episodes of one query (one λ),
  ``(r − mean) / (std + ε)``; a group whose rewards are all equal carries no signal and is
  dropped (``None``).
- **Loss** (:func:`grpo_token_loss`), per generated token ``t`` of an episode with advantage
  ``A``: ``−A · ρ_t + β · k3_t``, where ``ρ_t = exp(logp_t − sg(logp_t))`` (1 in value: one
  update per rollout batch, so the policy that sampled is the one updated; its gradient is
  ``∇logp_t``) and ``k3_t = exp(ref_t − logp_t) − (ref_t − logp_t) − 1`` estimates
  KL(policy ‖ reference) without bias. Summed over every generated token of the batch and
  divided by their number (token-level, so a long episode weighs by its tokens). Observation and
  prompt tokens are never in it (the transcript's mask).
- **Update** (:func:`grpo_update`): one transcript at a time (gradients accumulate), then
  clipping and an AdamW step. Every worker of a data-parallel run does the same number of
  forward / backward passes (an episode of a dropped group still does one, weighted 0), so
  DDP's all-reduce never waits on a worker that skipped one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestra.training.rl_tokens import generated_logprobs, generated_positions

if TYPE_CHECKING:
    from orchestra.training.rl_episodes import Episode

__all__ = ["UpdateStats", "group_advantages", "grpo_token_loss", "grpo_update", "zero_touch"]


def group_advantages(rewards: Sequence[float], eps: float = 1e-4) -> list[float] | None:
    """Group-normalised advantages, or None when the group's rewards have no variance.

    Raises:
        ValueError: fewer than 2 rewards, or one that is not finite.
    """
    if len(rewards) < 2:
        raise ValueError(f"a GRPO group needs >= 2 episodes (got {len(rewards)})")
    if not all(math.isfinite(r) for r in rewards):
        raise ValueError(f"rewards must be finite (got {list(rewards)!r})")
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
    if std < 1e-8:
        return None
    return [(r - mean) / (std + eps) for r in rewards]


def grpo_token_loss(logp: Any, ref_logp: Any, advantage: float, beta: float,
                    n_tokens: int) -> tuple[Any, Any]:
    """One episode's share of the batch loss, and the sum of its k3 KL terms (detached).

    Args:
        logp: log-probabilities of the episode's generated tokens under the policy (grad).
        ref_logp: the same under the frozen reference.
        advantage: the episode's advantage.
        beta: KL weight.
        n_tokens: generated tokens in the whole batch (the loss is their mean).
    """
    import torch

    ratio = torch.exp(logp - logp.detach())
    d = ref_logp.detach() - logp
    k3 = torch.exp(d) - d - 1.0
    loss = (-advantage * ratio + beta * k3).sum() / max(1, n_tokens)
    return loss, k3.detach().sum()


def zero_touch(model: Any, device: Any) -> Any:
    """A zero loss through the model (a forward on one token): keeps a data-parallel worker's
    passes in step with the others when it has nothing to learn from."""
    import torch

    return model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device)).logits.sum() * 0.0


@dataclass(frozen=True)
class UpdateStats:
    """What one update did: groups kept / dropped, tokens trained on, mean k3 KL, the loss,
    and the gradient norm before clipping."""

    kept_groups: int
    dropped_groups: int
    tokens: int
    kl: float
    loss: float
    grad_norm: float


def grpo_update(model: Any, ref_model: Any, optimizer: Any, groups: Sequence[Sequence[Episode]],
                *, beta: float, clip_norm: float, device: Any) -> UpdateStats:
    """One GRPO update from ``groups`` of episodes (see the module docstring)."""
    import torch

    advs = [group_advantages([e.reward.reward for e in g]) for g in groups]
    work = [(e, a[i] if a is not None else None)
            for g, a in zip(groups, advs, strict=True) for i, e in enumerate(g)]
    n_tokens = sum(len(generated_positions(e.mask)) for e, a in work if a is not None)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total_loss = 0.0
    total_kl = torch.zeros((), device=device)
    for e, adv in work:
        if adv is None or not any(e.mask[1:]):
            zero_touch(model, device).backward()
            continue
        logp = generated_logprobs(model, e.ids, e.mask, device)
        with torch.no_grad():
            ref = generated_logprobs(ref_model, e.ids, e.mask, device)
        loss, kl = grpo_token_loss(logp, ref, adv, beta, n_tokens)
        loss.backward()
        total_loss += float(loss.detach())
        total_kl += kl
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    kept = sum(a is not None for a in advs)
    # Every worker steps: DDP averaged the gradients, so the steps agree (a worker whose groups
    # were all dropped still applies the others' gradients).
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return UpdateStats(kept_groups=kept, dropped_groups=len(advs) - kept, tokens=n_tokens,
                       kl=float(total_kl) / max(1, n_tokens), loss=total_loss,
                       grad_norm=float(norm))

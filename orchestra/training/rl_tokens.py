"""Log-probabilities of the tokens a policy generated, from a transcript and its loss mask.

A transcript's mask is 1 on each token the policy generated and 0 on each it was shown (the
prompt, the ``<information>`` blocks). Token ``t`` is predicted at position ``t − 1``, so only
the positions before a generated token need logits: :func:`generated_logprobs` asks the model for
those alone (``logits_to_keep``), never a full ``(length, vocabulary)`` matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["generated_logprobs", "generated_positions"]


def generated_positions(mask: Sequence[int]) -> list[int]:
    """Positions whose next token was generated (``mask[p + 1] == 1``); the first token of a
    transcript has no position before it and is never trained on.

    Raises:
        ValueError: a mask value other than 0 or 1.
    """
    bad = [m for m in mask if m not in (0, 1)]
    if bad:
        raise ValueError(f"a loss mask holds 0 and 1 only (got {bad[0]!r})")
    return [p for p in range(len(mask) - 1) if mask[p + 1]]


def generated_logprobs(model: Any, ids: Sequence[int], mask: Sequence[int], device: Any) -> Any:
    """``log p(token)`` of every generated token of one transcript, as a 1-D tensor (with grad
    when the model has it); empty when nothing was generated.

    Raises:
        ValueError: ``ids`` and ``mask`` differ in length.
    """
    import torch

    if len(ids) != len(mask):
        raise ValueError(f"ids and mask differ in length ({len(ids)} vs {len(mask)})")
    pos = generated_positions(mask)
    if not pos:
        return torch.zeros(0, device=device)
    x = torch.tensor([list(ids)], dtype=torch.long, device=device)
    keep = torch.tensor(pos, dtype=torch.long, device=device)
    logits = model(input_ids=x, logits_to_keep=keep).logits[0].float()
    targets = x[0, keep + 1]
    return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]

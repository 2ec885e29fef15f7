"""The RL-trained LLM routing policy (``rl``): a causal LM that thinks, routes, reads the
outputs and answers, Router-R1 style, on the policy interface v2.

- :mod:`~orchestra.policies.rl.format`: the prompt, the observation blocks, the action parser;
- :mod:`~orchestra.policies.rl.transcript`: the append-only token transcript and loss mask;
- :mod:`~orchestra.policies.rl.policy`: :class:`RLPolicy` and its per-run decider;
- :mod:`~orchestra.policies.rl.hf`: the batched Hugging Face generator (torch, transformers).

Importing this package registers ``rl`` without importing torch. ``--policy rl --param
path=DIR`` serves a model written by ``orchestra train rl`` (default ``routerbench-rl`` in the
artifacts folder); ``path=smollm2`` runs the untrained embedded SmolLM2-135M-Instruct (a
baseline, and the base model training starts from).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from orchestra.errors import UserError
from orchestra.policies.registry import register_policy

if TYPE_CHECKING:
    from orchestra.policies.rl.policy import RLPolicy
    from orchestra.spec import Pool

__all__ = ["make_rl_policy"]


def make_rl_policy(pool: Pool, path: str | None = None, lam: float | None = None,
                   max_turns: int | None = None, temperature: float = 0.0,
                   max_new_tokens: int | None = None, sub_questions: bool | None = None,
                   hints: str | None = None, cache: bool = True) -> RLPolicy:
    """LLM router trained with RL: think, route, read outputs, answer (path=, lam=,
    max_turns=, temperature=, hints=, cache=)."""
    try:
        from orchestra.policies.rl.hf import HFGenerator, smollm2_gguf
        from orchestra.policies.rl.policy import RLPolicy
    except ImportError as e:  # pragma: no cover - torch / transformers missing
        raise UserError(f"the rl policy needs torch and transformers (got {e.msg!r}); "
                        "pip install 'orchestra[learn]'") from e
    settings: dict[str, object] = {}
    if path == "smollm2":
        source = smollm2_gguf()
    else:
        from orchestra.policies.learned.locations import resolve_artifact

        source = resolve_artifact(path, "rl")
        meta = source / "rl.json"
        if meta.is_file():
            try:
                settings = json.loads(meta.read_text())
            except ValueError as e:
                raise UserError(f"{meta}: not valid JSON ({e}); retrain with "
                                "`orchestra train rl`") from e
    if sub_questions is None:
        # Recorded answers are to the original question: no sub-questions on a replay pool.
        sub_questions = not all(m.provider == "replay" for m in pool.models)
    from orchestra.policies.rl.hints import ScorerHints

    turns = max_turns if max_turns is not None else settings.get("max_turns", 4)

    # The estimates the artifact was trained with (hints=none: without them; a path: others).
    hint_source = hints if hints is not None else settings.get("hints")
    scorer = None
    if hint_source and hint_source != "none":
        try:
            # The cascade plans the calls the turns allow (the last turn answers), as in training.
            scorer = ScorerHints(pool, str(hint_source),
                                 max_calls=max(1, int(turns) - 1))  # type: ignore[call-overload]
        except UserError as e:
            raise UserError(f"the rl policy shows the estimates of the escalate artifact "
                            f"{hint_source!r}, which cannot be loaded ({e}); give hints=PATH, or "
                            "retrain with `orchestra train rl --hints auto`") from e
    if cache and temperature == 0:
        from orchestra.policies.rl.cached import CachedHFGenerator

        gen: Any = CachedHFGenerator.load(source)
    else:
        gen = HFGenerator.load(source, temperature=temperature)
    lam_value = lam if lam is not None else settings.get("default_lam", 0.0)
    # The artifact's own decision length (what it was trained with), unless told otherwise.
    new_tokens = max_new_tokens if max_new_tokens is not None else settings.get(
        "max_new_tokens", 96)
    chars = settings.get("max_chars", 600)
    query_chars = settings.get("query_chars")
    return RLPolicy(pool, gen, lam=float(lam_value),  # type: ignore[arg-type]
                    max_turns=int(turns),  # type: ignore[call-overload]
                    max_new_tokens=int(new_tokens),  # type: ignore[call-overload]
                    max_chars=int(chars),  # type: ignore[call-overload]
                    max_query_chars=None if query_chars is None else int(query_chars),  # type: ignore[call-overload]
                    sub_questions=sub_questions, hints=scorer,
                    lams=settings.get("lams"))  # type: ignore[arg-type]


register_policy("rl", make_rl_policy)

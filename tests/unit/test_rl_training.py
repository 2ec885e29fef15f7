"""Training the ``rl`` policy: rewards, episodes through the runtime, SFT trajectories and the
GRPO loss, on a small synthetic table (CPU, no model download).

Three models by price a < b < c; cost per call a=1, b=4, c=10 (c is the priciest: c_ref=10):

    query   gold  a      b      c
    easy    —     right  right  right
    hard    —     wrong  right  right
    none    —     wrong  wrong  wrong
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest
from test_rl_policy import CharTokenizer  # one token per character (same folder)

from orchestra.errors import UserError
from orchestra.outcomes import ModelInfo, OutcomeTable, QueryRow
from orchestra.training.rl_episodes import EpisodeRunner
from orchestra.training.rl_grpo import group_advantages, grpo_token_loss
from orchestra.training.rl_reward import (
    FORMAT_PENALTY,
    episode_reward,
    format_error_of,
    reference_costs,
    sample_lam,
)
from orchestra.training.rl_sft import ScriptGenerator, plan_decisions, sft_trajectories
from orchestra.training.rl_tokens import generated_positions

PRICE = {"a": 1.0, "b": 4.0, "c": 10.0}
RIGHT = {"easy": {"a", "b", "c"}, "hard": {"b", "c"}, "none": set()}


def make_table() -> OutcomeTable:
    queries = [QueryRow(query_id=q, query=f"question {q}?", task="t") for q in RIGHT]
    rows = [{"query_id": q, "query": f"question {q}?", "task": "t", "model": m,
             "score": float(m in RIGHT[q]), "cost_usd": PRICE[m], "input_tokens": 5,
             "output_tokens": 2, "response": f"{m} says {q}"}
            for q in RIGHT for m in PRICE]
    info = {m: ModelInfo(name=m, input_price=p, output_price=p, description=f"model {m}")
            for m, p in PRICE.items()}
    return OutcomeTable(rows, queries=queries, models_info=info)


class ByPrompt:
    """Decides from the prompt text: the script maps a substring of the prompt to a decision
    (first match in order), so concurrent runs each get their own."""

    def __init__(self, rules: Sequence[tuple[str, str]]) -> None:
        self.tokenizer = CharTokenizer()
        self.rules = list(rules)

    async def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int,
                       stop: Sequence[str]) -> list[int]:
        prompt = self.tokenizer.decode(prompt_ids)
        text = next(d for key, d in self.rules if key in prompt)
        return self.tokenizer.encode(text)[:max_new_tokens]


def query(runner: EpisodeRunner, qid: str) -> Any:
    return next(q for q in runner.queries if q.query_id == qid)


# ----------------------------------------------------------------------------------- reward
def test_reward_is_grade_less_weighted_relative_cost_or_the_format_penalty() -> None:
    assert episode_reward(1.0, 4.0, 0.5, 10.0) == pytest.approx(0.8)
    assert episode_reward(0.0, 1.0, 0.0, 10.0) == 0.0
    assert episode_reward(1.0, 0.0, 1.0, 10.0, "no action") == FORMAT_PENALTY == -1.0
    with pytest.raises(UserError, match="reference cost > 0"):
        episode_reward(1.0, 1.0, 0.1, 0.0)
    with pytest.raises(UserError, match="lam >= 0"):
        episode_reward(1.0, 1.0, -0.1, 1.0)
    steps = [{"scores": {"rl": {"text": "x"}}}, {"scores": {"rl": {"format_error": "bad"}}}]
    assert format_error_of(steps) == "bad" and format_error_of(steps[:1]) is None
    assert reference_costs(make_table()).tolist() == [10.0, 10.0, 10.0]  # c, the priciest
    rng = random.Random(0)
    assert {sample_lam(rng, (0.0, 1.0)) for _ in range(50)} == {0.0, 1.0}
    with pytest.raises(UserError, match="λ grid"):
        sample_lam(rng, ())


# --------------------------------------------------------------------------------- episodes
def test_an_episode_is_a_real_run_with_reward_tokens_and_mask() -> None:
    gen = ByPrompt([("[2] c:", "<answer>#2</answer>"), ("[1] a:", "<route>c</route>"),
                    ("question easy", "<route>a</route>"),
                    ("question hard", "<route>a</route>"),
                    ("question none", "I will not use tags")])
    runner = EpisodeRunner(make_table(), gen, max_turns=4)
    easy, hard, none = (query(runner, q) for q in ("easy", "hard", "none"))

    async def go() -> list[Any]:
        return await asyncio.gather(runner.group(easy, 0.5, 2), runner.episode(hard, 1.0),
                                    runner.episode(none, 0.0))

    group, ep_hard, ep_none = asyncio.run(go())
    # easy: a (right, cost 1), then the rule for "[1] a:" escalates to c, adopts #2 (right).
    for ep in group:
        assert ep.models == ["a", "c"] and ep.answer == "c says easy"
        assert ep.reward.grade == 1.0 and ep.reward.cost_usd == pytest.approx(11.0)
        assert ep.reward.reward == pytest.approx(1.0 - 0.5 * 11.0 / 10.0)
    assert ep_hard.reward.reward == pytest.approx(1.0 - 1.0 * 11.0 / 10.0)
    assert ep_none.reward.reward == -1.0 and ep_none.reward.format_error
    assert ep_none.models == [] and ep_none.answer is None
    # The mask covers exactly what the policy generated; the prompt carries λ.
    ep = group[0]
    tok = CharTokenizer()
    generated = "".join(chr(t) for t, m in zip(ep.ids, ep.mask, strict=True) if m)
    assert generated == "".join(ep.texts) == \
        "<route>a</route><route>c</route><answer>#2</answer>"
    assert "lambda = 0.5" in tok.decode(ep.ids) and "<information>" in tok.decode(ep.ids)
    assert len(runner.latencies_s) == 3 * 3 + 1  # one per generate call
    assert not runner.capture.deciders  # nothing kept after the runs


# ------------------------------------------------------------------------------------- SFT
def test_plans_follow_the_recorded_outcomes() -> None:
    index = {"a": 0, "b": 1, "c": 2}
    kinds: set[str] = set()
    rng = random.Random(1)
    for _ in range(40):
        kind, plan = plan_decisions([0.0, 1.0, 1.0], ["a", "b", "c"], index, rng)
        kinds.add(kind)
        if kind == "escalate":
            assert plan == ["<route>a</route>", "<route>b</route>", "<answer>#2</answer>"]
        elif kind == "cheapest-correct":
            assert plan == ["<route>b</route>", "<answer>#1</answer>"]
        else:
            assert kind == "adopt-an-output" and "b" in plan[0]
            k = int(plan[1][len("<answer>#")])
            assert plan[0][len("<route>"):-len("</route>")].split("; ")[k - 1] == "b"
    assert kinds == {"escalate", "cheapest-correct", "adopt-an-output"}
    assert plan_decisions([0.0, 0.0, 0.0], ["a", "b", "c"], index, rng) == (
        "none-correct", ["<route>a</route>", "<answer>#1</answer>"])


def test_sft_trajectories_go_through_the_runtime_with_exact_masks() -> None:
    tok = CharTokenizer()
    runner = EpisodeRunner(make_table(), ScriptGenerator(tok, ["<answer>x</answer>"]))
    pairs = asyncio.run(sft_trajectories(runner, runner.queries * 4, tok, (0.0, 0.3),
                                         random.Random(0)))
    assert len(pairs) == 12
    for kind, ep in pairs:
        generated = "".join(chr(t) for t, m in zip(ep.ids, ep.mask, strict=True) if m)
        assert generated == "".join(ep.texts) and ep.texts[-1].startswith("<answer>#")
        assert ep.reward.format_error is None
        if kind != "none-correct":
            assert ep.reward.grade == 1.0  # the plan's adopted output was right
        shown = tok.decode([t for t, m in zip(ep.ids, ep.mask, strict=True) if not m])
        assert "Question: question" in shown and shown.endswith("</information>\n")
        assert ep.texts[0] not in shown and ep.texts[-1] not in shown


# ------------------------------------------------------------------------------------ GRPO
def test_group_advantages_drop_groups_without_variance() -> None:
    assert group_advantages([0.5, 0.5, 0.5]) is None
    adv = group_advantages([1.0, 0.0, 0.0, 1.0])
    assert adv is not None and adv == pytest.approx([1.0, -1.0, -1.0, 1.0], abs=1e-3)
    with pytest.raises(ValueError, match=">= 2 episodes"):
        group_advantages([1.0])
    with pytest.raises(ValueError, match="0 and 1"):
        generated_positions([0, 2, 1])
    assert generated_positions([0, 0, 1, 1, 0, 1]) == [1, 2, 4]


def test_token_loss_is_the_policy_gradient_plus_k3_kl() -> None:
    torch = pytest.importorskip("torch")
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    ref = torch.tensor([-1.0, -1.0])
    loss, kl = grpo_token_loss(logp, ref, advantage=2.0, beta=1e-3, n_tokens=4)
    d = torch.tensor([0.0, 1.0])
    k3 = torch.exp(d) - d - 1
    assert float(kl) == pytest.approx(float(k3.sum()))
    assert float(loss.detach()) == pytest.approx(float((-2.0 + 1e-3 * k3).sum() / 4))
    loss.backward()
    # ∂/∂logp: −A/n from the ratio, β·(1 − exp(ref − logp))/n from k3.
    expect = (-2.0 + 1e-3 * (1 - torch.exp(d))) / 4
    assert torch.allclose(logp.grad, expect)


def test_grpo_update_trains_only_on_generated_tokens_of_kept_groups() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from orchestra.training.rl_base import tiny_random_model
    from orchestra.training.rl_episodes import Episode
    from orchestra.training.rl_grpo import grpo_update
    from orchestra.training.rl_reward import Reward
    from orchestra.training.rl_tokens import generated_logprobs

    model = tiny_random_model(64, seed=0)
    ref = tiny_random_model(64, seed=0).eval()

    def ep(ids: list[int], mask: list[int], r: float) -> Episode:
        return Episode("q", 0.0, ids, mask, Reward(r, r, 0.0, 1.0, 0.0, None), [], None)

    ids = [5, 6, 7, 8, 9, 10]
    mask = [0, 0, 1, 1, 0, 1]
    # Masked-out tokens are never scored: the log-probs are those of positions 2, 3, 5 only.
    full = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    want = torch.stack([full[p, ids[p + 1]] for p in (1, 2, 4)])
    assert torch.allclose(generated_logprobs(model, ids, mask, "cpu"), want, atol=1e-5)
    flat = [ep(ids, mask, 0.3), ep([5, 9, 9, 1], [0, 1, 1, 1], 0.3)]  # no variance: dropped
    live = [ep(ids, mask, 1.0), ep([5, 6, 7, 2, 3, 4], [0, 0, 1, 1, 0, 1], 0.0)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    stats = grpo_update(model, ref, opt, [flat, live], beta=1e-3, clip_norm=1.0, device="cpu")
    assert (stats.kept_groups, stats.dropped_groups, stats.tokens) == (1, 1, 6)
    assert stats.grad_norm > 0 and stats.kl == pytest.approx(0.0, abs=1e-6)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    # A batch of dropped groups only: no gradient at all.
    stats = grpo_update(model, ref, opt, [flat], beta=1e-3, clip_norm=1.0, device="cpu")
    assert (stats.kept_groups, stats.tokens, stats.grad_norm) == (0, 0, 0.0)
